"""Parts of qmailpy/dkim the end-to-end tests in tests/test_dkim.py do not reach: dkimpy never
asks DNS itself, its header parser on an mbox From_ line and a message of header alone, the
properties of a signature without d=/s=/b=, and qmail-smtpd's Received-SPF read for the
Authentication-Results field (null sender, unknown word, a single field)."""
import pytest

from conftest import ROOT
from qmailpy.dkim import lib, verify

CHECKED = (lambda received: True)
RECEIVED = b"Received: from c (HELO c.example) (192.0.2.9)\n  by mx with SMTP; 1 Jan 2026 00:00:00 -0000\n"


def test_dkimpy_never_looks_a_key_up_itself():
    """qmail-queue passes every key record it got from qmailpy's resolver; a lookup by dkimpy
    would ask the machine's resolver (another server, another time limit): it is an error.
    (A fresh interpreter: the stub goes in before dkimpy is first imported.)"""
    import subprocess
    import sys
    code = ("import sys\nfrom qmailpy.dkim import lib\nlib.dkimpy()\n"
            "try:\n    sys.modules['dkim.dnsplug'].get_txt(b'sel._domainkey.example.com')\n"
            "except RuntimeError as e:\n    print(e)\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (got.returncode, got.stdout, got.stderr) == (
        0, "DKIM key b'sel._domainkey.example.com': qmailpy looks keys up with its own resolver\n", "")


def test_rfc822_parse_skips_an_mbox_from_line_and_takes_a_message_of_header_alone():
    lib.dkimpy()
    assert lib.rfc822_parse(b"From alice Mon Jan  1 00:00:00 2026\nSubject: x\n\tmore\n") == (
        [[b"Subject", b" x\r\n\tmore\r\n"]], b"")


def test_a_signature_without_d_s_or_b_has_no_properties():
    assert verify._props({}) == []
    assert verify._props({b"d": b"example.com"}) == [("header.d", "example.com")]


@pytest.mark.parametrize("spf,sender,want", [
    (b"Received-SPF: pass (mx: domain of c.example designates 192.0.2.9 as permitted sender) "
     b"receiver=mx; client-ip=192.0.2.9; helo=c.example;\n", b"", [("smtp.helo", "c.example")]),
    (b"Received-SPF: pass (mx: local policy)\n", b"", []),
    (b"Received-SPF: maybe (nonsense)\n", b"a@c.example", None),
], ids=["null-sender-helo", "null-sender-no-helo", "unknown-word"])
def test_spf_result_of_qmail_smtpds_field(spf, sender, want):
    got = verify.spf_result(RECEIVED + spf + b"Subject: x\n\nbody\n", sender, CHECKED)
    assert (got if got is None else got.props) == want


def test_spf_result_needs_both_of_qmail_smtpds_fields():
    assert verify.spf_result(RECEIVED, b"a@c.example", CHECKED) is None


def test_dkimsignheaders_that_names_from_keeps_its_order():
    from qmailpy.dkim import sign

    class Controls:
        def __init__(self, names):
            self.names = names

        def value(self, name):
            return self.names
    assert sign._include(Controls(("Subject", " FROM ", ""))) == [b"subject", b"from"]
    assert sign._include(Controls(("Subject",))) == [b"from", b"subject"]
    assert sign._include(Controls(())) is None
