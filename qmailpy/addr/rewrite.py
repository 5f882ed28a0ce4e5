"""qmail-send.c's address rewriting: which channel a recipient goes to and what
is written into local/ or remote/.

Lookups follow qmail's constmap: keys compare case-insensitively and, for a
key listed twice, the last line wins. Addresses are bytes (qmail is 8-bit
clean). qmail-todo (rewrite), qmail-send (strip_prefix for bounces),
qmail-lspawn (vdom_prefix) and the recipient keys (qmailpy.addr.keys, route)
all use this one Rewriter.
"""
from qmailpy.proto.grammar import lower_ascii

LOCAL, REMOTE = 0, 1


def _lower(b):
    return bytes(b).lower()


def _encode(entry):
    return entry.encode("utf-8", "surrogateescape") if isinstance(entry, str) else bytes(entry)


def vdom_entry(line):
    """(lowercased key, prefix) of a virtualdomains line `key:prefix` (bytes, or str for the admin
    tools that edit the file: users.domaincontrols), None without a colon."""
    key, colon, prefix = line.partition(":" if isinstance(line, str) else b":")
    return (lower_ascii(key), prefix) if colon else None


def vdom_map(lines):
    """{lowercased key: prefix} from virtualdomains lines (vdom_entry)."""
    out = {}
    for line in lines:
        entry = vdom_entry(_encode(line))
        if entry is not None:
            out[entry[0]] = entry[1]
    return out


class Rewriter:
    """locals, virtualdomains, percenthack and envnoathost, ready for lookups.

    srs is qmail-todo's SRS reverser (qmailpy.send.srsmap), or None; the
    rewriting itself never uses it.
    """
    __slots__ = ("locals", "local_names", "vdoms", "percenthack", "envnoathost", "srs")

    def __init__(self, locals_, virtualdomains, percenthack, envnoathost, srs=None):
        names = []
        for d in locals_:
            d = _lower(_encode(d))
            if d not in names:
                names.append(d)
        self.local_names = tuple(names)          # file order, for recipient keys
        self.locals = frozenset(names)
        self.vdoms = vdom_map(virtualdomains)
        self.percenthack = frozenset(_lower(_encode(d)) for d in percenthack)
        self.envnoathost = _encode(envnoathost)
        self.srs = srs          # send.srsmap.SrsReverser, or None when SRS is off

    @classmethod
    def from_controls(cls, controls, srs=None):
        return cls(controls.value("locals"), controls.value("virtualdomains"),
                   controls.value("percenthack"), controls.value("envnoathost"), srs)

    def rewrite(self, recip):
        """(LOCAL or REMOTE, address to deliver to) for an envelope recipient."""
        channel, addr, prefix = self.route(recip)
        return channel, (prefix + b"-" + addr if prefix else addr)

    def route(self, recip):
        """(LOCAL or REMOTE, the address after envnoathost and percenthack, the virtualdomains
        prefix or None): rewrite() before it writes `prefix-` in front."""
        addr = bytes(recip)
        i = addr.rfind(b"@")
        if i < 0:
            i = len(addr)
            addr += b"@" + self.envnoathost
        while _lower(addr[i + 1:]) in self.percenthack:
            j = addr.rfind(b"%", 0, i)
            if j < 0:
                break
            addr = addr[:j] + b"@" + addr[j + 1:i]
            i = j
        at = addr.rfind(b"@")
        if _lower(addr[at + 1:]) in self.locals:
            return LOCAL, addr, None
        prefix = self.vdom_prefix(addr, at)
        if prefix:
            return LOCAL, addr, prefix
        return REMOTE, addr, None

    def vdom_prefix(self, addr, at=None):
        """The virtualdomains prefix for addr: the whole address, then the domain,
        then each parent `.domain`, then the catch-all empty key. None or b""
        (an empty prefix means "not virtual")."""
        if at is None:
            at = addr.rfind(b"@")
        low = _lower(addr)
        for i in range(len(addr) + 1):
            if i == 0 or i == at + 1 or i == len(addr) or (i > at and addr[i:i + 1] == b"."):
                prefix = self.vdoms.get(low[i:])
                if prefix is not None:
                    return prefix
        return None

    def strip_prefix(self, recip):
        """stripvdomprepend(): the address a bounce names, without `prefix-`."""
        recip = bytes(recip)
        at = recip.rfind(b"@")
        if at < 0:
            return recip
        domain = _lower(recip[at + 1:])
        for i in range(len(domain) + 1):
            if i == 0 or i == len(domain) or domain[i:i + 1] == b".":
                prefix = self.vdoms.get(domain[i:])
                if prefix is not None:
                    if prefix and recip.startswith(prefix) and recip[len(prefix):len(prefix) + 1] == b"-":
                        return recip[len(prefix) + 1:]
                    return recip
        return recip


