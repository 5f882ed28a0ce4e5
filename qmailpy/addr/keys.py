"""The keys of an envelope recipient: the one answer for every per-recipient decision.

clamavclients/spamdclients (qmail-queue), spamd's `User:` and badrcptto
(qmail-smtpd) all ask RecipientKeys.keys(recipient). The answer is the
address as qmail-send will deliver it, worked out by qmail-send's own
rewriting (qmailpy.addr.rewrite.Rewriter.route), tried as well as the address
as written:

1. no '@': completed with envnoathost; then percenthack, as qmail-send does;
2. a domain in `locals`: one local mailbox whatever the name, so the local
   part is tried at every `locals` name (envnoathost's first), and, as
   qmail-getpw delivers `bob-foo` to bob, with its extension cut at each '-';
3. a domain in virtualdomains (alias domains too): the mailbox the users
   database has for it, the extension stripped the way qmail-lspawn strips
   it (the longest `user` of `user-ext` that exists: mailbox_names()), at its
   real domain; without such a mailbox (or without the database), every
   such name at the domain and at the virtualdomains prefix when that names
   a domain (`alias.example:example.com`, as vpopmail and H-Sphere write it);
4. otherwise (remote) the rewritten address itself;
5. an `[IP]` literal is also tried as localiphost (what qmail-smtpd writes
   for its own addresses).

Keys are lower-cased (ASCII only) bytes; the first is **the** key (the
mailbox, spamd's User:), then the other forms, then `@domain` of each.
Selection lists match when any key is listed, so a recipient is never
filtered less than the mailbox it reaches.
"""
from qmailpy.addr.rewrite import REMOTE, Rewriter

BREAK = b"-"                   # conf-break


def lower(b):
    return bytes(b).lower()     # bytes.lower() folds A-Z only


def mailbox_names(local):
    """(name, ext) for each mailbox name `local` may be, longest first: local itself (ext None),
    then each shorter name before a '-' (qmail-lspawn's user-ext, qmail-getpw's rule)."""
    yield local, None
    for end in range(len(local) - 1, 0, -1):
        if local[end:end + 1] == BREAK:
            yield local[:end], local[end + 1:]


def longest_mailbox(local, find):
    """(found, name, ext) for the first name of mailbox_names(local) that find(name) knows;
    (None, None, None) if none. find's exceptions pass through."""
    for name, ext in mailbox_names(local):
        got = find(name)
        if got is not None:
            return got, name, ext
    return None, None, None


def _is_literal(domain):
    return domain[:1] == b"[" and domain[-1:] == b"]"


class Keys:
    """One recipient's keys: `key` (the mailbox), `addresses` (every form, the key first)."""
    __slots__ = ("key", "addresses")

    def __init__(self, addresses):
        self.addresses = tuple(addresses)
        self.key = self.addresses[0]

    def domains(self):
        """`@domain` of each address, in order."""
        out = []
        for a in self.addresses:
            at = a.rfind(b"@")
            if at >= 0 and a[at:] not in out:
                out.append(a[at:])
        return out

    def all(self):
        """The addresses, then their @domains: what a list (cdb) is asked for."""
        return list(self.addresses) + self.domains()

    def __repr__(self):
        return "Keys(%r)" % (self.addresses,)


class RecipientKeys:
    """Keys for recipients from the rewriting controls and, optionally, the users database.

    find_mailbox(name, domain) -> b"mailbox@realdomain" or None looks a
    virtual-domain name up (qmailpy.users.base.AddressFinder); without it
    the keys come from the controls alone.
    """

    def __init__(self, rewriter, localiphost=None, find_mailbox=None):
        self.rewriter = rewriter
        self.localiphost = lower(localiphost.encode() if isinstance(localiphost, str) else localiphost or b"")
        self.find_mailbox = find_mailbox

    @classmethod
    def from_controls(cls, controls, find_mailbox=None):
        return cls(Rewriter.from_controls(controls), controls.value("localiphost"), find_mailbox)

    def keys(self, recip):
        """Keys of an envelope recipient (bytes)."""
        written = lower(recip)
        out = []
        self._delivered(written, out)
        _add(out, written)
        at = written.rfind(b"@")
        if self.localiphost and at >= 0 and _is_literal(written[at + 1:]):
            self._delivered(written[:at + 1] + self.localiphost, out)
        return Keys(out)

    def _local_domains(self):
        rw = self.rewriter
        env = lower(rw.envnoathost)
        return ((env,) if env in rw.locals else ()) + rw.local_names

    def _delivered(self, addr, out):
        """Add the forms of addr as qmail-send delivers it, the mailbox first."""
        channel, addr, prefix = self.rewriter.route(addr)
        addr = lower(addr)
        if channel == REMOTE:
            _add(out, addr)
            return
        at = addr.rfind(b"@")
        local, domain = addr[:at], addr[at + 1:]
        if prefix is None:                      # locals: a local user, whichever locals name
            for name, _ in mailbox_names(local):
                for d in self._local_domains():
                    _add(out, name + b"@" + d)
            return
        real = lower(prefix)
        domains = (real, domain) if b"." in real and real != domain else (domain,)
        box = None
        if self.find_mailbox is not None:
            box, _, _ = longest_mailbox(local, lambda name: self.find_mailbox(name, domain))
        if box is not None:
            _add(out, lower(box))
            for d in domains:
                _add(out, local + b"@" + d)
            return
        for name, _ in mailbox_names(local):
            for d in domains:
                _add(out, name + b"@" + d)


def _add(out, key):
    if key not in out:
        out.append(key)
