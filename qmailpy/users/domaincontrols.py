"""control/rcpthosts and control/virtualdomains follow the hosted domains, as vadddomain does.

vadddomain adds the domain to rcpthosts (qmail-smtpd takes its mail) and to
virtualdomains as `domain:domain` (qmail-send delivers it locally, to
`domain-user@domain`, which qmail-lspawn finds in the users database); vdeldomain
takes both out. vadddomain also makes a postmaster account; here postmaster@
of the domain gets what postmaster@me gets, through the virtualdomains line
`postmaster@domain:alias` (qmail's own mechanism: the address becomes
alias-postmaster@domain, i.e. ~alias/.qmail-postmaster), unless the domain has
a postmaster mailbox of its own: adduser postmaster@domain takes the line
out, deluser puts it back.

Only an existing control/rcpthosts is edited: creating one would turn "accept
every domain" into "accept only this one". A control set in control/options
is left alone (a new file would shadow it). Each function returns
(changes, notes): lines saying what changed, and what the admin must do.
qmail-send (and qmail-todo) read virtualdomains at start and on SIGHUP; the
caller tells the running one (qmailpy.install.running).
"""
from qmailpy.addr.rewrite import vdom_entry
from qmailpy.ctl import edit
from qmailpy.ctl.parse import strip_line
from qmailpy.ctl.patterns import HostList

ALIAS_USER = "alias"           # qmail's alias user (conf-users; qmailpy.spawn.mailbox falls back to it)
RCPTHOSTS, VIRTUALDOMAINS = "rcpthosts", "virtualdomains"
POSTMASTER = "postmaster"


def _entry(line):
    """(key, prefix) of a virtualdomains line as qmail-send reads it (addr.rewrite), or None."""
    return vdom_entry(strip_line(line))


def _key(line):
    entry = _entry(line)
    return entry and entry[0]


def _host(line):
    """The domain an rcpthosts line lists as qmail-smtpd reads it (ctl.patterns.HostList)."""
    return HostList.key(strip_line(line))


def postmaster_line(domain):
    return "%s@%s:%s" % (POSTMASTER, domain, ALIAS_USER)


def add_rcpthost(home, domain):
    if edit.set_elsewhere(home, RCPTHOSTS):
        return [], ["control/rcpthosts is set in control/options: add %s there yourself" % domain]
    if edit.read_lines(home, RCPTHOSTS) is None:
        return [], ["control/rcpthosts is not a file here (qmail-smtpd takes mail for any domain): "
                    "%s was not added; qmail-config writes one" % domain]
    if edit.add_line(home, RCPTHOSTS, domain, lambda line: _host(line) == domain):
        return ["control/rcpthosts: added %s" % domain], []
    return [], []


def remove_rcpthost(home, domain):
    gone = edit.remove_lines(home, RCPTHOSTS, lambda line: _host(line) == domain)
    return ["control/rcpthosts: removed %s" % line.strip() for line in gone], []


def add_virtual(home, domain, own_postmaster=False):
    """`domain:domain`, and the postmaster line unless the domain has its own postmaster."""
    if edit.set_elsewhere(home, VIRTUALDOMAINS):
        return [], ["control/virtualdomains is set in control/options: add %s:%s there yourself" % (domain, domain)]
    changes, notes = [], []
    lines = edit.read_lines(home, VIRTUALDOMAINS) or []
    mine = [line for line in lines if _key(line) == domain]
    if not mine:
        edit.add_line(home, VIRTUALDOMAINS, "%s:%s" % (domain, domain), lambda line: _key(line) == domain)
        changes.append("control/virtualdomains: added %s:%s" % (domain, domain))
    elif _entry(mine[-1])[1] != domain:
        notes.append("control/virtualdomains has %s: kept (qmail-lspawn finds users-database mailboxes "
                     "only under the prefix %s)" % (mine[-1].strip(), domain))
    if not own_postmaster:
        changes += postmaster_to_alias(home, domain)
    return changes, notes


def postmaster_to_alias(home, domain):
    """Add `postmaster@domain:alias` when no line names postmaster@domain."""
    key = "%s@%s" % (POSTMASTER, domain)
    if edit.set_elsewhere(home, VIRTUALDOMAINS):
        return []
    if edit.add_line(home, VIRTUALDOMAINS, postmaster_line(domain), lambda line: _key(line) == key):
        return ["control/virtualdomains: added %s (postmaster@%s gets what postmaster@ of control/me gets: "
                "~alias/.qmail-postmaster)" % (postmaster_line(domain), domain)]
    return []


def postmaster_own(home, domain):
    """The domain has its own postmaster mailbox now: take our `postmaster@domain:alias` out."""
    line, key = postmaster_line(domain), "%s@%s" % (POSTMASTER, domain)
    gone = edit.remove_lines(home, VIRTUALDOMAINS, lambda x: _entry(x) == (key, ALIAS_USER))
    return ["control/virtualdomains: removed %s (postmaster@%s is a mailbox now)" % (line, domain)
            for _ in gone]


def is_virtual(home, domain):
    return any(_key(line) == domain for line in edit.read_lines(home, VIRTUALDOMAINS) or [])


def remove_virtual(home, domain):
    """Take out the domain's line and our postmaster line."""
    keys = (domain, "%s@%s" % (POSTMASTER, domain))
    gone = edit.remove_lines(home, VIRTUALDOMAINS, lambda line: _key(line) in keys)
    return ["control/virtualdomains: removed %s" % line.strip() for line in gone], []
