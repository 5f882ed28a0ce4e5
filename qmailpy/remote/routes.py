"""control/smtproutes lookups and qmail's address quoting, as qmail-remote.c does them.

Each route line is `domain:relay[:port]`; the key is everything before the
first ':', compared without regard to case (constmap), and a later line with
the same key wins (constmap's chains put later entries first). Lines without
a ':' are ignored. The lookup tries the whole host, then every suffix that
starts with '.', then the empty key (a `:relay` default route); the first key
found decides, so `example.com:` sends example.com to its MX even under a
default route. Port: scan_ulong of what follows the relay's first ':'.
"""
PORT_SMTP = 25


def parse_routes(lines):
    """{lower-case key: relay spec} from the entries of control/smtproutes (bytes or str)."""
    table = {}
    for line in lines:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        key, colon, relay = line.partition(b":")
        if colon:
            table[key.lower()] = relay
    return table


def route(table, host):
    """(relay host or None, port) for host; None means "look up the MX records of host"."""
    low = host.lower()
    for i in range(len(low) + 1):
        if i == 0 or i == len(low) or low[i:i + 1] == b".":
            spec = table.get(low[i:])
            if spec is not None:
                break
    else:
        spec = None
    if not spec:
        return None, PORT_SMTP
    relay, colon, port = spec.partition(b":")
    if not colon:
        return relay, PORT_SMTP
    digits = b""
    for c in port:
        if not 48 <= c <= 57:
            break
        digits += bytes((c,))
    return relay, int(digits or b"0") & 0xFFFF


# quote.c's table: which bytes may stand unquoted in a local part (RFC 821 atoms and dots).
_OK = frozenset(b"!#$%&'*+-/0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~.")


def quote_needed(box):
    if not box or box[:1] == b"." or box[-1:] == b"." or b".." in box:
        return True
    return any(c not in _OK for c in box)


def quote(box):
    """quote(): the local part as is when it is a dot-atom, else "..." with \\ before CR LF " \\."""
    if not quote_needed(box):
        return box
    out = bytearray(b'"')
    for c in box:
        if c in b'\r\n"\\':
            out.append(92)
        out.append(c)
    out.append(34)
    return bytes(out)


def mangle(address):
    """addrmangle() without notqmail's removed CNAME step: quote the box before the last '@'."""
    at = address.rfind(b"@")
    if at < 0:
        return address
    return quote(address[:at]) + address[at:]
