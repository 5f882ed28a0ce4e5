"""Address rewriting shared by qmail-todo, qmail-send and qmail-lspawn.

rewrite() is qmail-send.c's: which channel a recipient goes to and what
is written into local/ or remote/. Lookups follow qmail's constmap: keys
compare case-insensitively and, for a key listed twice, the last line wins.
Addresses are bytes (qmail is 8-bit clean).
"""
LOCAL, REMOTE = 0, 1


def _lower(b):
    return bytes(b).lower()


def _encode(entry):
    return entry.encode("utf-8", "surrogateescape") if isinstance(entry, str) else bytes(entry)


def vdom_map(lines):
    """{lowercased key: prefix} from virtualdomains lines `key:prefix` (no colon: ignored)."""
    out = {}
    for line in lines:
        line = _encode(line)
        key, colon, prefix = line.partition(b":")
        if colon:
            out[_lower(key)] = prefix
    return out


class Rewriter:
    """locals, virtualdomains, percenthack and envnoathost, ready for lookups."""
    __slots__ = ("locals", "vdoms", "percenthack", "envnoathost", "srs")

    def __init__(self, locals_, virtualdomains, percenthack, envnoathost, srs=None):
        self.locals = frozenset(_lower(_encode(d)) for d in locals_)
        self.vdoms = vdom_map(virtualdomains)
        self.percenthack = frozenset(_lower(_encode(d)) for d in percenthack)
        self.envnoathost = _encode(envnoathost)
        self.srs = srs          # send.srsmap.SrsReverser, or None when SRS is off

    @classmethod
    def from_controls(cls, controls):
        from qmailpy.send import srsmap
        return cls(controls.value("locals"), controls.value("virtualdomains"),
                   controls.value("percenthack"), controls.value("envnoathost"), srsmap.from_controls(controls))

    def rewrite(self, recip):
        """(LOCAL or REMOTE, address to deliver to) for an envelope recipient."""
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
            return LOCAL, addr
        prefix = self.vdom_prefix(addr, at)
        if prefix:
            return LOCAL, prefix + b"-" + addr
        return REMOTE, addr

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


def verp_sender(sender, recip):
    """senderadd(): a VERP sender `owner-@host-@[]` becomes `owner-box=host@host` per recipient."""
    sender, recip = bytes(sender), bytes(recip)
    if sender.endswith(b"-@[]"):
        i = len(sender)
        j = sender.rfind(b"@", 0, i - 4)
        k = recip.rfind(b"@")
        if k >= 0 and j >= 0 and j + 5 <= i:
            return sender[:j] + recip[:k] + b"=" + recip[k + 1:] + b"@" + sender[j + 1:i - 4]
    return sender


def bounce_sender(sender):
    """injectbounce(): a VERP sender `owner-@host-@[]` is bounced to `owner-@host`."""
    sender = bytes(sender)
    if sender.endswith(b"-@[]"):
        return sender[:-4]
    return sender
