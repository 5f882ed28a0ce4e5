"""qmail's dns_mxip() and dns_ip(): a mail host -> the ordered (preference, ip) list to try.

An IP literal (`1.2.3.4`, `[1.2.3.4]`, `[IPv6:...]`) is used as is with
preference 0. Otherwise the MX records are read; no MX at all (NXDOMAIN,
NODATA, or a CNAME-only answer) means the host's own addresses at
preference 0 (the implicit MX). MX hosts are taken lowest preference first;
among equal preferences qmail's linear congruential generator picks
(random = random*69069+1, kept to 32 bits as on the i386 builds H-Sphere
shipped; on 64-bit builds stock qmail's comparison almost never fires and
the order is simply the DNS answer order), seeded by the caller (qmail:
now() + (pid << 16)). Each MX host expands to its A then AAAA records.
With named=True each value also carries the host name the address came from
(the MX exchange, the host itself, or the literal as written): qmail-remote
checks a TLS certificate against it.
"""
from qmailpy.dns.literal import ip_literal
from qmailpy.dns.resolver import HARD, OK, SOFT, Answer

MASK32 = 0xFFFFFFFF


def order(mxs, seed):
    """(preference, name) pairs in qmail's trial order, exactly as dns_mxip() picks them."""
    mxs = list(mxs)
    random = seed & MASK32
    out = []
    while mxs:
        i, numsame = 0, 1
        for j in range(1, len(mxs)):
            if mxs[j][0] < mxs[i][0]:
                i, numsame = j, 1
            elif mxs[j][0] == mxs[i][0]:
                numsame += 1
                random = (random * 69069 + 1) & MASK32
                if random // 2 < 2147483647 // numsame:
                    i = j
        out.append(mxs[i])
        mxs[i] = mxs[-1]          # qmail: mx[i] = mx[--nummx]
        mxs.pop()
    return out


def _name(host):
    return host.decode("latin-1") if isinstance(host, bytes) else host


def host_ips(resolver, host, families=("A", "AAAA"), pref=0, named=False):
    """dns_ip(): (pref, ip) pairs of one host (named: (pref, ip, host)); hard/soft as its lookups."""
    literal = ip_literal(host)
    if literal is not None:                  # qmail gives a literal preference 0, even as an MX
        return Answer(OK, [(0, literal, literal) if named else (0, literal)])
    got = resolver.addresses(host, families)
    if named:
        return Answer(got.status, [(pref, ip, _name(host)) for ip in got.values], got.reason)
    return Answer(got.status, [(pref, ip) for ip in got.values], got.reason)


def mx_ips(resolver, host, seed, families=("A", "AAAA"), named=False):
    """dns_mxip(): (pref, ip) pairs to try, in order.

    hard: the host does not exist; soft with no values: try later; ok with
    no values: no mail exchanger has an address. soft with values: some MX
    host failed softly, the others may be tried (qmail does).
    """
    if ip_literal(host) is not None:
        return host_ips(resolver, host, families, named=named)
    mx = resolver.mx(host)
    if mx.status == SOFT:
        return mx
    if mx.status == HARD or not mx.values:
        return host_ips(resolver, host, families, named=named)
    out, soft = [], None
    for pref, name in order(mx.values, seed):
        got = host_ips(resolver, name, families, pref, named)
        if got.status == SOFT:
            soft = got
        out.extend(got.values)
    if soft is not None:
        return Answer(SOFT, out, soft.reason)
    return Answer(OK, out)
