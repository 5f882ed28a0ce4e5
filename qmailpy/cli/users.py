"""qmail-users: vpopmail's admin verbs over the users database of $QMAILHOME.

adddomain, addaliasdomain, deldomain, adduser, deluser, passwd, setquota,
list, info (vadddomain, vaddaliasdomain, vdeldomain, vadduser, vdeluser,
vpasswd, vsetuserquota, vuserinfo), plus openrelay/clearopensmtp/relays for
POP-before-SMTP, syncdomains, and importvpasswd (vpopmail's cdb backend in).
Exit 0 done, 1 refused (exists, no such ...), 111 the
database cannot be reached (try again).
"""
import functools
import os
import sys
import time

import click

from qmailpy import paths
from qmailpy.cli.qmailtool import os_text
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard
from qmailpy.output import click_main, output
from qmailpy.users import admin, domaincontrols
from qmailpy.users.base import UsersError, UsersUnavailable, open_users
from qmailpy.users.errors import UsersTrouble
from qmailpy.users.passwords import DEFAULT_SCHEME, SCHEMES

EXIT_REFUSED, EXIT_TEMPORARY = 1, 111


def _home():
    return paths.qmailhome(os.environ)


def _controls():
    return Controls(_home(), os.environ)


def with_users(func):
    """Open the database (creating its tables), run the verb, map errors to exit codes."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            users = open_users(_home(), _controls(), create=True)
            try:
                return func(users, *args, **kwargs)
            finally:
                users.close()
        except UsersError as e:
            click.echo("qmail-users: %s" % e, err=True)
            sys.exit(EXIT_REFUSED)
        except UsersUnavailable as e:
            click.echo("qmail-users: database unavailable: %s" % e, err=True)
            sys.exit(EXIT_TEMPORARY)
        except UsersTrouble as e:           # an I/O error making a directory: nothing kept
            click.echo("qmail-users: %s" % e, err=True)
            sys.exit(EXIT_TEMPORARY)
        except ControlError as e:           # e.g. popbeforesmtptimeout that is not a number
            click.echo("qmail-users: unable to read controls: %s" % e, err=True)
            sys.exit(EXIT_TEMPORARY)
        except OSError as e:                # a file of ours the disk refused (named): try again
            click.echo("qmail-users: %s" % os_text(e), err=True)    # (after ControlError, an OSError too)
            sys.exit(EXIT_TEMPORARY)
    return wrapper


def _password(given):
    """--password, else asked twice on a terminal, else one line of stdin (for scripts)."""
    if given is not None:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("password", hide_input=True, confirmation_prompt="password again", err=True)


def _let_smtpd_look(users, domain):
    """As root in production: whoever answers chkuser (the users service's qmailu, or qmail-smtpd's
    qmaild where it reads the database itself) may search the new domain directory."""
    from qmailpy.privs import drops_privileges
    from qmailpy.users import access
    uid = access.chkuser_uid(_home()) if drops_privileges(os.environ) else None
    if uid is None:
        return
    for path, error in access.let_smtpd_look(users.vpopmaildir, uid, [domain]):
        click.echo("qmail-users: note: cannot let chkuser into %s (%s): chkuser answers 451 there"
                   % (path, error), err=True)


scheme_option = click.option("--scheme", type=click.Choice(sorted(SCHEMES)), default=DEFAULT_SCHEME,
                             show_default=True, help="crypt scheme for pw_passwd ($1$, $5$, $6$).")
clear_option = click.option("--clear", is_flag=True,
                            help="Also store the password in pw_clear_passwd (needed for CRAM-MD5; 16 chars max).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Manage the virtual domains and mailboxes of $QMAILHOME (default /var/qmail)."""


no_rcpthosts_option = click.option("--no-rcpthosts", is_flag=True, help="Leave control/rcpthosts alone.")
no_virtualdomains_option = click.option("--no-virtualdomains", is_flag=True,
                                        help="Leave control/virtualdomains alone (and qmail-send).")


@cli.command()
@click.argument("domain")
@no_rcpthosts_option
@no_virtualdomains_option
@with_users
def adddomain(users, domain, no_rcpthosts, no_virtualdomains):
    """Host DOMAIN: its dir_control row and <vpopmaildir>/domains/DOMAIN; DOMAIN in
    control/rcpthosts and control/virtualdomains (with postmaster@DOMAIN going where
    postmaster@ of control/me goes); the running qmail-send is told (SIGHUP)."""
    domain = admin.add_domain(users, domain)
    _let_smtpd_look(users, domain)
    _say(_controls_follow(["added domain %s (%s)" % (domain, users.domain_dir(domain))], domain,
                          no_rcpthosts, no_virtualdomains, domaincontrols.add_rcpthost,
                          domaincontrols.add_virtual))


@cli.command()
@click.argument("real_domain")
@click.argument("alias_domain")
@no_rcpthosts_option
@no_virtualdomains_option
@with_users
def addaliasdomain(users, real_domain, alias_domain, no_rcpthosts, no_virtualdomains):
    """Make ALIAS_DOMAIN another name of REAL_DOMAIN (either order, as vaddaliasdomain)."""
    alias, real = admin.add_alias_domain(users, real_domain, alias_domain)
    _say(_controls_follow(["added alias domain %s -> %s" % (alias, real)], alias,
                          no_rcpthosts, no_virtualdomains, domaincontrols.add_rcpthost,
                          lambda home, d: domaincontrols.add_virtual(home, d, own_postmaster=users.lookup(
                              domaincontrols.POSTMASTER, real) is not None)))


@cli.command()
@click.argument("domain")
@click.option("--keep-files", is_flag=True, help="Keep the domain directory and its mailboxes.")
@no_rcpthosts_option
@no_virtualdomains_option
@with_users
def deldomain(users, domain, keep_files, no_rcpthosts, no_virtualdomains):
    """Remove DOMAIN with all its users (or, for an alias domain, just the alias), and
    its lines in control/rcpthosts and control/virtualdomains."""
    name = admin.check_domain(domain)
    aliases = sorted(a for a, real in users.domains()[1].items() if real == name)
    what = admin.del_domain(users, domain, keep_files)
    # vdeldomain deletes a real domain's alias domains with it, and their control lines too
    _say(_controls_follow(["deleted %s %s" % ("alias domain" if what == "alias" else "domain", name)],
                          [name] + (aliases if what == "domain" else []), no_rcpthosts, no_virtualdomains,
                          domaincontrols.remove_rcpthost, domaincontrols.remove_virtual))


@cli.command()
@click.argument("domains", nargs=-1)
@with_users
def syncdomains(users, domains):
    """On another host sharing the users database: make this host's control/rcpthosts and
    control/virtualdomains follow the database, as adddomain/deldomain did where they ran.
    Without DOMAINS every hosted and alias domain is added (nothing is removed); each DOMAIN
    named is added when the database hosts it and removed when it does not."""
    names, aliases = users.domains()
    if domains:
        wanted = [admin.check_domain(d) for d in domains]
    else:
        wanted = sorted(set(names) | set(aliases))
    home = _home()
    changes, notes = [], []
    try:
        for domain in wanted:
            real = users.domain_of(domain)
            if real is None:
                more = [domaincontrols.remove_rcpthost(home, domain), domaincontrols.remove_virtual(home, domain)]
            else:
                own = users.lookup(domaincontrols.POSTMASTER, real) is not None
                more = [domaincontrols.add_rcpthost(home, domain),
                        domaincontrols.add_virtual(home, domain, own_postmaster=own),
                        (domaincontrols.postmaster_own(home, domain) if own else [], [])]
            for c, n in more:
                changes, notes = changes + c, notes + n
    except OSError as e:
        click.echo("qmail-users: cannot change the control files: %s" % os_text(e), err=True)
        sys.exit(EXIT_TEMPORARY)
    _say(_report(home, changes, notes))


@cli.command()
@click.argument("domains", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Only say what would be imported.")
@with_users
def importvpasswd(users, domains, dry_run):
    """Import the domains and mailboxes of vpopmail's cdb backend: each DOMAIN of users/assign
    (default: every one whose directory has a vpasswd file) with its users exactly as vpasswd
    has them and its alias domains, in one transaction per domain; what exists is kept. The
    domains go into control/rcpthosts and control/virtualdomains as adddomain puts them."""
    from qmailpy.cli import newu
    from qmailpy.cli.qmailtool import Fatal
    from qmailpy.users import importvpasswd as imp
    try:
        real, aliases, unhostable = imp.assign_domains(newu.read_assign(os.path.join(_home(), newu.SOURCE)))
    except Fatal as e:
        raise UsersError(e.text) from None
    failed, trouble, done, lines = False, False, [], []
    for directory, name in sorted(unhostable.items()):
        if not domains and os.path.exists(os.path.join(directory, imp.VPASSWD)):
            click.echo("qmail-users: users/assign: %r (%s) is not a domain name qmail-users can host: "
                       "its users are not imported" % (name, directory), err=True)
            failed = True
    if domains:
        wanted = []
        for name in domains:
            name = admin.check_domain(name)
            if name in aliases:
                click.echo("qmail-users: %s: an alias domain of %s in users/assign: import %s"
                           % (name, aliases[name], aliases[name]), err=True)
                failed = True
            elif name in real and os.path.exists(os.path.join(real[name], imp.VPASSWD)):
                wanted.append(name)
            else:
                click.echo("qmail-users: %s: not a vpopmail domain of users/assign (with a vpasswd file)" % name,
                           err=True)
                failed = True
    else:
        wanted = sorted(d for d in real if os.path.exists(os.path.join(real[d], imp.VPASSWD)))
    for domain in wanted:
        its_aliases = sorted(a for a, d in aliases.items() if d == domain)
        try:
            said, notes = imp.import_domain(users, domain, real[domain], its_aliases, dry_run)
        except UsersError as e:
            click.echo("qmail-users: %s: nothing of %s imported" % (e, domain), err=True)
            failed = True
            continue
        except (UsersUnavailable, UsersTrouble, OSError) as e:
            # temporary: stop here; the domains imported so far still get their control lines
            what = ("database unavailable: %s" % e if isinstance(e, UsersUnavailable)
                    else os_text(e) if isinstance(e, OSError) else str(e))
            click.echo("qmail-users: %s: nothing of %s imported (run importvpasswd again)" % (what, domain),
                       err=True)
            trouble = True
            break
        lines += said
        for line in notes:
            click.echo("note: %s" % line, err=True)
        if not dry_run:
            _let_smtpd_look(users, domain)      # as adddomain: chkuser's reader may search it
        done += [domain] + its_aliases
        if dry_run:
            lines.append("would add %s to control/rcpthosts and control/virtualdomains where missing"
                         % ", ".join([domain] + its_aliases))
    if done and not dry_run:
        lines = _controls_follow(lines, done, False, False, domaincontrols.add_rcpthost,
                                 lambda home, d: domaincontrols.add_virtual(home, d, own_postmaster=users.lookup(
                                     domaincontrols.POSTMASTER, users.domain_of(d)) is not None))
    _say(lines)
    if trouble or failed:
        sys.exit(EXIT_TEMPORARY if trouble else EXIT_REFUSED)


def _say(lines):
    """A verb's lines, printed once its work is whole (database and control files): a stdout
    that fails (output(): exit 111) must not stop the work half done."""
    for line in lines:
        output(line)


def _controls_follow(said, domains, no_rcpthosts, no_virtualdomains, rcpthosts, virtualdomains):
    """Apply the control-file changes for a domain (or a list of them), HUP qmail-send after
    virtualdomains; the verb's lines (`said`) and those saying what changed, for _say(). A file
    that cannot be changed: what was done is said, then the trouble, exit 111."""
    home = _home()
    changes, notes = [], []
    try:
        for domain in [domains] if isinstance(domains, str) else domains:
            if not no_rcpthosts:
                more, more_notes = rcpthosts(home, domain)
                changes, notes = changes + more, notes + more_notes
            if not no_virtualdomains:
                more, more_notes = virtualdomains(home, domain)
                changes, notes = changes + more, notes + more_notes
    except (OSError, UsersUnavailable) as e:   # a file, or a read of the database after its commit
        _say(said + changes)
        why = "database unavailable: %s" % e if isinstance(e, UsersUnavailable) else os_text(e)
        click.echo("qmail-users: the users database is changed, but not the control files: %s "
                   "(qmail-users syncdomains %s makes them follow it)"
                   % (why, domains if isinstance(domains, str) else " ".join(domains)), err=True)
        sys.exit(EXIT_TEMPORARY)
    return said + _report(home, changes, notes)


def _report(home, changes, notes):
    """Notes to stderr now; HUP qmail-send after a virtualdomains change; the lines for stdout."""
    lines = list(changes)
    for line in notes:
        click.echo("note: %s" % line, err=True)
    if any(line.startswith("control/virtualdomains") for line in changes):
        from qmailpy.install.running import reload_send
        done, command = reload_send(home)
        if done:
            lines.append("qmail-send told to reread its controls (%s)" % command)
        else:
            click.echo("note: qmail-send reads control/virtualdomains at start and on SIGHUP: run %s"
                       % command, err=True)
    return lines


@cli.command()
@click.argument("address")
@click.option("-p", "--password", help="The password (asked for when not given).")
@click.option("-q", "--quota", help="NOQUOTA (default), bytes, 10M, 512k or Maildir++ 10000000S[,1000C].")
@click.option("-c", "--gecos", help="Comment (pw_gecos); default: the user name.")
@clear_option
@scheme_option
@with_users
def adduser(users, address, password, quota, gecos, clear, scheme):
    """Add the mailbox ADDRESS (user@domain) and create its Maildir."""
    box = admin.add_user(users, address, _password(password), quota, clear, scheme, gecos)
    lines = ["added %s (%s)" % (box.address, box.maildir)]
    if box.name == domaincontrols.POSTMASTER:
        lines = _controls_follow(lines, box.domain, True, False, None,
                                 lambda home, d: (domaincontrols.postmaster_own(home, d), []))
    _say(lines)


@cli.command()
@click.argument("address")
@click.option("--keep-files", is_flag=True, help="Keep the mailbox directory.")
@with_users
def deluser(users, address, keep_files):
    """Remove the mailbox ADDRESS and its directory."""
    box = admin.del_user(users, address, keep_files)
    lines = ["deleted %s" % box.address]
    if box.name == domaincontrols.POSTMASTER:
        lines = _controls_follow(lines, box.domain, True, False, None, lambda home, d: (
            domaincontrols.postmaster_to_alias(home, d) if domaincontrols.is_virtual(home, d) else [], []))
    _say(lines)


@cli.command()
@click.argument("address")
@click.option("-p", "--password", help="The new password (asked for when not given).")
@clear_option
@scheme_option
@with_users
def passwd(users, address, password, clear, scheme):
    """Set the password of ADDRESS (pw_clear_passwd is emptied unless --clear)."""
    admin.set_password(users, address, _password(password), clear, scheme)
    output("password changed for %s" % address.lower())


@cli.command()
@click.argument("address")
@click.argument("quota")
@with_users
def setquota(users, address, quota):
    """Set the quota of ADDRESS: NOQUOTA, bytes, 10M, 512k or 10000000S[,1000C]."""
    try:
        box = admin.set_quota(users, address, quota)
    except OSError as e:                # after the commit: the table has the new quota
        click.echo("qmail-users: the quota of %s is changed in the users database, but not its "
                   "maildirsize: %s (run qmail-users setquota again)" % (address.lower(), os_text(e)), err=True)
        sys.exit(EXIT_TEMPORARY)
    output("quota of %s: %s" % (box.address, box.quota or "NOQUOTA"))


@cli.command("list")
@click.argument("domain", required=False)
@with_users
def list_(users, domain):
    """List the domains (aliases as 'alias -> domain'), or the users of DOMAIN."""
    if domain is None:
        names, aliases = users.domains()
        for name in names:
            output(name)
        for alias in sorted(aliases):
            output("%s -> %s" % (alias, aliases[alias]))
        return
    real = users.domain_of(domain)
    if real is None:
        raise UsersError("no such domain: %s" % domain.lower())
    for box in users.mailboxes(real):
        output("%s\t%s\t%s" % (box.address, box.quota or "NOQUOTA", box.maildir))


@cli.command()
@click.argument("address")
@with_users
def info(users, address):
    """Show what the database holds for ADDRESS (as vuserinfo)."""
    pairs = admin.info(users, address)
    if pairs is None:
        raise UsersError("no such user: %s" % address.lower())
    for label, value in pairs:
        output("%-13s %s" % (label + ":", value))


@cli.command()
@click.argument("ip")
@with_users
def openrelay(users, ip):
    """Let IP relay for popbeforesmtptimeout seconds from now (run after a POP3 login)."""
    users.record_relay(ip, time.time())


@cli.command()
@click.option("--timeout", type=int, help="Seconds a login lets its IP relay (default: control popbeforesmtptimeout).")
@with_users
def clearopensmtp(users, timeout):
    """Forget POP3 logins older than the POP-before-SMTP window (run from cron)."""
    window = timeout if timeout is not None else _controls().value("popbeforesmtptimeout")
    now = time.time()
    count = users.purge_relay(now - window, now + window)
    output("cleared %d relay entr%s" % (count, "y" if count == 1 else "ies"))


@cli.command()
@with_users
def relays(users):
    """List the relay table: IP and the time of its last POP3 login."""
    for ip, stamp in users.relays():
        output("%s\t%d" % (ip, stamp))


@guard("qmail-users", EXIT_TROUBLE)
def main():
    return click_main(cli, prog_name="qmail-users")
