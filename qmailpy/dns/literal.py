"""IP-literal hosts, as qmail's ip_scan / ip_scanbracket read them: no DNS for these. Its own
module so that what only needs to tell a literal from a name (control/smtproutes checks,
qmail-rspawn's guess whether a delivery will ask DNS) does not load the resolver."""


def ip_literal(host):
    """The address of an IP-literal host, else None (qmail's ip_scan / ip_scanbracket)."""
    import ipaddress
    text = host.decode("latin-1") if isinstance(host, bytes) else host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            try:
                return str(ipaddress.IPv6Address(text[5:]))
            except ValueError:
                return None
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts):
        return None
    return ".".join(str(int(p)) for p in parts)
