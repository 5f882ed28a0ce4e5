"""Does an address reach a mailbox? qmail's route for one recipient, without delivering.

qmail-showctl --check asks this for postmaster@me, postmaster@ of each
hosted domain and the double-bounce address (RFC 5321 wants postmaster to
work; a double bounce that reaches nobody is lost). The route is the one the
programs take, through their own code: qmail-todo's rewrite (locals,
virtualdomains: qmailpy.send.rewrite), qmail-lspawn's choice of user
(qmailpy.spawn.mailbox: users/cdb, the users database, passwd, the alias
user) and qmail-local's .qmail search and line grammar
(qmailpy.local.dotqmail). A Maildir must exist with its new/; an mbox or its
directory must exist; a program (`|...`) and a remote address count as
reached (what they do is theirs); forwards are followed, up to HOPS deep.
"""
import os

from qmailpy.local import dotqmail, errors
from qmailpy.addr.rewrite import LOCAL, Rewriter
from qmailpy.spawn import mailbox

HOPS = 10
DEFAULT_DELIVERY = "./Maildir/"          # qmail-send's argument in our run scripts and the demo


class Route:
    """One home's routing, opened once for several questions (close() when done)."""

    def __init__(self, home, controls, single_user=None, aliasempty=DEFAULT_DELIVERY):
        self.home, self.controls, self.aliasempty = home, controls, aliasempty
        self.rewriter = Rewriter.from_controls(controls)
        # as qmail-lspawn decides it: started as root it uses passwd's alias user only
        single = os.getuid() != 0 if single_user is None else single_user
        self.resolver = mailbox.Resolver(home, controls, single)

    def close(self):
        self.resolver.close()

    def reaches(self, address, hops=HOPS):
        """(True, where it ends) or (False, why not), both short texts for a finding."""
        if "\0" in address:            # the queue's records end at NUL: no delivery could carry it
            return False, "a NUL in the address, which no queue entry can hold"
        channel, addr = self.rewriter.rewrite(os.fsencode(address))
        if channel != LOCAL:
            return True, "remote %s" % os.fsdecode(addr)
        at = addr.rfind(b"@")
        who = self.resolver.resolve(addr[:at], addr[at + 1:])
        if isinstance(who, bytes):                      # qmail-lspawn's own report: Z... or D...
            text = who[1:].decode("utf-8", "replace").strip()
            if who == mailbox.NOALIAS:
                text += " (qmail's users are made by tools/install.py --production)"
            return False, text
        return self._dotqmail(who, hops)

    def _dotqmail(self, who, hops):
        home, dash, ext = os.fsdecode(who.home), os.fsdecode(who.dash), os.fsdecode(who.ext)
        try:
            found = dotqmail.search(home, dash, ext)
            if found is None and dash:
                return False, errors.NO_MAILBOX
            content = found[0] if found is not None and found[0] else os.fsencode(self.aliasempty)
            targets = list(dotqmail.commands(content))
        except errors.Die as e:
            return False, e.text
        problems = []
        for kind, arg in targets:
            ok, text = self._target(home, kind, arg, hops)
            if ok:
                return True, text
            problems.append(text)
        return False, "; ".join(problems) or "its .qmail delivers nowhere"

    def _target(self, home, kind, arg, hops):
        path = os.path.join(home, arg) if kind in ("maildir", "mbox") else None
        if kind == "maildir":
            if os.path.isdir(os.path.join(path, "new")):
                return True, "Maildir %s" % os.path.normpath(path)
            return False, "Maildir %s does not exist" % os.path.normpath(path)
        if kind == "mbox":
            if os.path.exists(path) or os.path.isdir(os.path.dirname(path)):
                return True, "mbox %s" % os.path.normpath(path)
            return False, "mbox %s: no such directory" % os.path.normpath(path)
        if kind == "program":
            return True, "program %s" % arg
        if kind == "forward":
            if hops <= 0:
                return False, "forwarded more than %d times" % HOPS
            ok, text = self.reaches(arg, hops - 1)
            if text.startswith("forwarded to "):       # say the last hop only
                return ok, text
            return ok, "forwarded to %s: %s" % (arg, text)
        return False, "a mailing-list line (+list) only"


def postmaster_addresses(controls, hosted=()):
    """[(finding path, address, subject of the finding)] to check: postmaster@me, of each virtual domain
    (virtualdomains lines `domain:prefix`) and of `hosted` (users-database domains),
    and the double-bounce recipient."""
    me = controls.value("me")
    out = [("control/me", "postmaster@%s" % me, "postmaster@%s reaches" % me)]
    seen = {me.lower()}
    domains = []
    for line in controls.value("virtualdomains"):
        key, colon, prefix = line.partition(":")
        if colon and key and prefix and "@" not in key and not key.startswith("."):
            domains.append(("control/virtualdomains", key))
    domains += [("users database", d) for d in hosted]
    for where, domain in domains:
        if domain.lower() not in seen:
            seen.add(domain.lower())
            out.append((where, "postmaster@%s" % domain, "postmaster@%s reaches" % domain))
    dbl = "%s@%s" % (controls.value("doublebounceto"), controls.value("doublebouncehost"))
    out.append(("control/doublebounceto", dbl, "double bounces to %s reach" % dbl))
    return out


def findings(home, controls):
    """Finding objects for each of postmaster_addresses() that reaches no mailbox, the users
    database's domains included (a database that cannot answer is a finding of its own)."""
    from qmailpy.ctl.options import Finding
    from qmailpy.ctl.reader import ControlError
    out = []
    hosted, trouble = _hosted(home, controls)
    if trouble:
        out.append(Finding("users database", 0, "cannot list the hosted domains: %s" % trouble))
    try:
        route = Route(home, controls)
    except (ControlError, OSError) as e:
        return out + [Finding("control", 0, "cannot follow postmaster's route: %s" % e)]
    try:
        refused = route.resolver.cdb_refused()
        if refused:
            out.append(Finding("users/cdb", 0, refused))
        for where, address, what in postmaster_addresses(controls, hosted):
            ok, text = route.reaches(address)
            if not ok:
                out.append(Finding(where, 0, "%s no mailbox: %s" % (what, text)))
            elif where in ("control/me", "users database") and text.startswith("remote "):
                out.append(Finding(where, 0, "%s goes to another server: its domain is not in control/locals "
                                             "or control/virtualdomains" % address))
    finally:
        route.close()
    return out


def _hosted(home, controls):
    """(the users database's real domains, None) or ([], why it cannot answer)."""
    if not _has_users_db(home, controls):
        return [], None
    from qmailpy.users.base import UsersUnavailable, open_users
    try:
        users = open_users(home, controls)
        try:
            names, _ = users.domains()
        finally:
            users.close()
    except UsersUnavailable as e:
        return [], str(e)
    return list(names), None


def _has_users_db(home, controls):
    from qmailpy.users.base import SQLITE_FILE
    return bool((controls.value("usersdb") or "").strip()) or os.path.exists(os.path.join(home, SQLITE_FILE))
