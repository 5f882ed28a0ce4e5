"""qmail-smtpd and SRS bounces: forged addresses are refused at RCPT, valid and expired ones accepted."""
import time

import pytest

from qmailpy.srs import codec
from test_smtpd import qhome, smtpd  # noqa: F401  (fixture)

SECRETS = ["newest-key", "older-key"]


@pytest.fixture(params=["direct", "usersd"])
def srshome(qhome, request):  # noqa: F811
    """qmail-smtpd reading the keys itself, and asking the users service (which holds them in
    production)."""
    qhome.control("rcpthosts", "example.org\nsrs.example.org\n")
    qhome.control("srs/srs_domain", "srs.example.org\n")
    qhome.control("srs/revers_srs_secrets", "".join(s + "\n" for s in SECRETS))
    if request.param == "direct":
        yield qhome
        return
    from usersd import UsersService
    with UsersService(qhome.root, qhome.env()):
        yield qhome


def rcpt(home, address, **env):
    data = b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nQUIT\r\n" % address.encode()
    lines, err, _ = smtpd(home, data, **env)
    return lines[2], err


def srs0(sender, secret, when):
    return codec.forward(sender, "srs.example.org", [secret], when)


def test_valid_address_made_with_an_older_key_is_accepted(srshome):
    address = srs0("alice@remote.example", "older-key", time.time())
    assert address.startswith("SRS0=") and address.endswith("@srs.example.org")
    reply, err = rcpt(srshome, address)
    assert reply == "250 ok"
    assert "srs status=ok" in err


def test_forged_hash_is_refused(srshome):
    address = srs0("alice@remote.example", "someone-elses-key", time.time())
    reply, err = rcpt(srshome, address)
    assert reply == "550 sorry, this SRS bounce address is invalid or forged (#5.1.1)"
    assert "srs status=bad-hash" in err


def test_expired_address_is_accepted_for_a_silent_drop(srshome):
    address = srs0("alice@remote.example", "newest-key", time.time() - 40 * 86400)
    reply, err = rcpt(srshome, address)
    assert reply == "250 ok"
    assert "srs status=expired" in err


def test_srs_lookalike_at_another_domain_is_not_judged(srshome):
    reply, _ = rcpt(srshome, "SRS0=xxxx=AA=remote.example=alice@example.org")
    assert reply == "250 ok"


def test_no_secrets_means_no_srs_checks(qhome):  # noqa: F811
    qhome.control("rcpthosts", "srs.example.org\n")
    qhome.control("srs/srs_domain", "srs.example.org\n")
    reply, _ = rcpt(qhome, "SRS0=xxxx=AA=remote.example=alice@srs.example.org")
    assert reply == "250 ok"
