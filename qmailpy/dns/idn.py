"""Internationalized domain names: a name's A-labels (IDNA 2008, RFC 5890/5891).

DNS knows only A-labels (xn--bcher-kva.example); mail may carry U-labels
(bücher.example, RFC 6531). to_ascii() turns each non-ASCII label into its
A-label: UTS #46 mapping first (non-transitional, as RFC 5891 5.2 allows: case
and width do not matter, ß stays ß), then the IDNA 2008 rules and Punycode of the
`idna` package (Python's own "idna" codec is IDNA 2003, which maps ß to ss: another
domain). ASCII labels are kept as they are, and an all-ASCII name is returned
unchanged without importing anything: qmail's bytes, no IDNA. address_to_ascii()
is RFC 6531 3.2's downgrade of one address: its domain may go as A-labels, a
non-ASCII local part cannot.
"""


def to_ascii(name):
    """bytes -> bytes: name with every non-ASCII label as its A-label; ValueError when a
    label is not a valid IDN (not UTF-8, a disallowed code point, a bad hyphen, ...)."""
    if name.isascii():
        return name
    import idna
    try:
        text = idna.uts46_remap(name.decode("utf-8"), std3_rules=False, transitional=False)
        return b".".join(label.encode("ascii") if label.isascii() else idna.alabel(label)
                         for label in text.split("."))
    except UnicodeError as e:           # UnicodeDecodeError, idna.IDNAError
        raise ValueError(str(e)) from None


def address_to_ascii(address):
    """The address with its domain as A-labels, or None where that cannot make it ASCII
    (a non-ASCII local part, or a domain that is not a valid IDN)."""
    if address.isascii():
        return address
    at = address.rfind(b"@")
    if at < 0 or not address[:at].isascii():
        return None
    try:
        return address[:at + 1] + to_ascii(address[at + 1:])
    except ValueError:
        return None
