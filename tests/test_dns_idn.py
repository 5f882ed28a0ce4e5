"""qmailpy.dns.idn: a name's A-labels (IDNA 2008 with UTS #46 mapping) and RFC 6531 3.2's
downgrade of an address (its domain only); ASCII untouched, invalid names a ValueError."""
import pytest

from qmailpy.dns.idn import address_to_ascii, to_ascii


def test_ascii_names_pass_through_untouched():
    name = b"Mail.Example.COM"
    assert to_ascii(name) is name                    # not even lower-cased: qmail's bytes
    assert to_ascii(b"xn--bcher-kva.example") == b"xn--bcher-kva.example"


@pytest.mark.parametrize("given, alabel", [
    ("bücher.example", b"xn--bcher-kva.example"),
    ("Bücher.EXAMPLE", b"xn--bcher-kva.example"),    # UTS #46 mapping: case does not matter
    ("mail.bücher.example", b"mail.xn--bcher-kva.example"),
    ("faß.de", b"xn--fa-hia.de"),                    # IDNA 2008: not IDNA 2003's fass.de
    (".bücher.example", b".xn--bcher-kva.example"),  # a '.'-suffix key (smtproutes, tlsdestinations)
    ("bücher.example.", b"xn--bcher-kva.example."),
])
def test_non_ascii_labels_become_alabels(given, alabel):
    assert to_ascii(given.encode()) == alabel


@pytest.mark.parametrize("bad", [
    "bü-.example".encode(),                          # a hyphen at the end of a label
    "a\u200db.example".encode(),                     # a joiner outside its context (CONTEXTJ)
    "\u0301bücher.example".encode(),                 # begins with a combining mark
    "b\xfccher.example".encode("latin-1"),           # not UTF-8
])
def test_invalid_names_raise_value_error(bad):
    with pytest.raises(ValueError):
        to_ascii(bad)


def test_addresses_convert_only_their_domain():
    assert address_to_ascii(b"user@b\xc3\xbccher.example") == b"user@xn--bcher-kva.example"
    assert address_to_ascii(b"user@example.com") == b"user@example.com"
    assert address_to_ascii("jürgen@bücher.example".encode()) is None      # the local part cannot be
    assert address_to_ascii("jürgen@example.com".encode()) is None
    assert address_to_ascii("user@bü-.example".encode()) is None
    assert address_to_ascii(b"") == b""
