"""SMTP MAIL/RCPT argument parsing: qmail-smtpd's addrparse() plus ESMTP parameters.

parse_path() follows addrparse() (reference 1.3) step by step, quirks
included, because clients that work with qmail must keep working:

1. the address starts after the first "<" anywhere in the argument and ends at
   ">"; without "<" it starts after the first ":" (and spaces) and ends at a
   space (no ":" at all gives the empty address);
2. a leading "@" source route is skipped through the first ":";
3. "\\" escapes the next character, '"' toggles quoting and both are dropped;
   a missing terminator is not an error;
4. optional localiphost rewrite (apply_localiphost, also callable alone);
5. the result must be shorter than 900 characters: qmail's limit
   `addr.len > 900` counts the trailing NUL, so 899 passes and 900 fails.

As in C, the argument ends at its first NUL. Pass text decoded as latin-1 (or
utf-8 with surrogateescape) so that characters are bytes and limits are exact.

ESMTP parameters are what follows the terminator, split on spaces:
KEYWORD[=value] per RFC 5321 (keyword: letter/digit then letters, digits, "-";
value: one or more of "!".."~" except "="). Keys are upper-cased; a keyword
without "=" maps to "". Malformed or repeated tokens never raise: they are
joined with spaces under the key "" (the first occurrence of a key wins), so
the caller can reject them (501/555) or ignore them as stock qmail does.
"""

ADDR_MAX = 899          # longest address accepted (qmail: addr.len incl. NUL <= 900)

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEYCHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_VALCHARS = frozenset(chr(c) for c in range(33, 127) if c != 61)
_DIGITS = frozenset("0123456789")


def lower_ascii(s):
    """Lower-case A-Z only, as qmail's case_lowerb(); str or bytes."""
    if isinstance(s, str):
        return s.translate(_LOWER)
    return bytes(s).lower()         # bytes.lower() is ASCII-only


def split_address(addr):
    """(local, domain) split at the last "@"; domain is "" without "@"."""
    local, at, domain = addr.rpartition("@")
    return (local, domain) if at else (addr, "")


def ipv6_text(text):
    """RFC 5952 text of an IPv6 address (a.b.c.d when IPv4-mapped), or None; ipaddress is
    imported only once an IPv6 address shows up."""
    import ipaddress
    try:
        a = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a)


def _bracket_ip(domain):
    """Dotted quad of an "[a.b.c.d]" literal, or None; like ip_scanbracket().

    Each number is taken modulo 256, as ip_scan() stores it in a char. An
    "[IPv6:...]" literal (RFC 5321 4.1.3) gives the address's RFC 5952 text.
    """
    if domain[:6].lower() == "[ipv6:" and domain[-1:] == "]":
        return ipv6_text(domain[6:-1])
    if len(domain) < 9 or domain[0] != "[" or domain[-1] != "]":
        return None
    parts = domain[1:-1].split(".")
    if len(parts) != 4:
        return None
    for p in parts:
        if not p or not _DIGITS.issuperset(p):
            return None
    # 10**8 is a multiple of 256, so the last 8 digits decide the value mod 256.
    return ".".join(str(int(p[-8:]) % 256) for p in parts)


def apply_localiphost(addr, my_ips, localiphost):
    """Step 4: u@[ip] or u@[IPv6:ip] with ip one of my_ips (dotted quads, RFC 5952 IPv6
    text) -> u@localiphost.

    localiphost None means control/localiphost is absent: no rewrite.
    """
    if localiphost is None:
        return addr
    at = addr.rfind("@")
    if at < 0:
        return addr
    ip = _bracket_ip(addr[at + 1:])
    if ip is not None and ip in my_ips:
        return addr[:at + 1] + localiphost
    return addr


def _params(rest):
    params = {}
    bad = []
    for tok in rest.split(" "):
        if not tok:
            continue
        key, eq, value = tok.partition("=")
        if (key and key[0] != "-" and _KEYCHARS.issuperset(key)
                and (not eq or (value and _VALCHARS.issuperset(value)))):
            key = key.upper()
            if key not in params:
                params[key] = value
                continue
        bad.append(tok)
    if bad:
        params[""] = " ".join(bad)
    return params


def parse_path(arg, my_ips=(), localiphost=None):
    """Parse "FROM:<a@b> SIZE=1"-style text after the verb.

    Returns (address, params) or None when the address is too long (555).
    my_ips/localiphost apply step 4 before the length check, as qmail does.
    """
    nul = arg.find("\0")
    if nul >= 0:
        arg = arg[:nul]
    n = len(arg)
    pos = arg.find("<")
    if pos >= 0:
        pos += 1
        term = ">"
    else:
        term = " "
        pos = arg.find(":") + 1 or n
        while pos < n and arg[pos] == " ":
            pos += 1
    if pos < n and arg[pos] == "@":
        pos = arg.find(":", pos) + 1 or n
    t = arg.find(term, pos)
    seg = arg[pos:n if t < 0 else t]
    if "\\" not in seg and '"' not in seg:
        addr = seg
        rest = "" if t < 0 else arg[t + 1:]
    else:
        buf = []
        esc = quoted = False
        rest = ""
        for j in range(pos, n):
            ch = arg[j]
            if esc:
                buf.append(ch)
                esc = False
            elif ch == term and not quoted:
                rest = arg[j + 1:]
                break
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = not quoted
            else:
                buf.append(ch)
        addr = "".join(buf)
    if localiphost is not None:
        addr = apply_localiphost(addr, my_ips, localiphost)
    if len(addr) > ADDR_MAX:
        return None
    return addr, (_params(rest) if rest else {})
