"""qmail-users: vpopmail's admin verbs over the users database of $QMAILHOME.

adddomain, addaliasdomain, deldomain, adduser, deluser, passwd, setquota,
list, info (vadddomain, vaddaliasdomain, vdeldomain, vadduser, vdeluser,
vpasswd, vsetuserquota, vuserinfo), plus openrelay/clearopensmtp/relays for
POP-before-SMTP. Exit 0 done, 1 refused (exists, no such ...), 111 the
database cannot be reached (try again).
"""
import functools
import os
import sys
import time

import click

from qmailpy import paths
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.users import admin, rcpthosts
from qmailpy.users.base import UsersError, UsersUnavailable, open_users
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
        except ControlError as e:           # e.g. popbeforesmtptimeout that is not a number
            click.echo("qmail-users: unable to read controls: %s" % e, err=True)
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
    """As root in production: qmail-smtpd (chkuser) may search the new domain directory."""
    from qmailpy.privs import drops_privileges
    from qmailpy.users import access
    uid = access.smtpd_uid() if drops_privileges(os.environ) else None
    if uid is None:
        return
    for path, error in access.let_smtpd_look(users.vpopmaildir, uid, [domain]):
        click.echo("qmail-users: note: cannot let qmaild into %s (%s): chkuser answers 451 there"
                   % (path, error), err=True)


scheme_option = click.option("--scheme", type=click.Choice(sorted(SCHEMES)), default=DEFAULT_SCHEME,
                             show_default=True, help="crypt scheme for pw_passwd ($1$, $5$, $6$).")
clear_option = click.option("--clear", is_flag=True,
                            help="Also store the password in pw_clear_passwd (needed for CRAM-MD5; 16 chars max).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Manage the virtual domains and mailboxes of $QMAILHOME (default /var/qmail)."""


@cli.command()
@click.argument("domain")
@click.option("--no-rcpthosts", is_flag=True, help="Leave control/rcpthosts alone.")
@with_users
def adddomain(users, domain, no_rcpthosts):
    """Host DOMAIN: its dir_control row and <vpopmaildir>/domains/DOMAIN."""
    domain = admin.add_domain(users, domain)
    click.echo("added domain %s (%s)" % (domain, users.domain_dir(domain)))
    _let_smtpd_look(users, domain)
    _rcpthosts(domain, no_rcpthosts, rcpthosts.add, "add")


@cli.command()
@click.argument("real_domain")
@click.argument("alias_domain")
@click.option("--no-rcpthosts", is_flag=True, help="Leave control/rcpthosts alone.")
@with_users
def addaliasdomain(users, real_domain, alias_domain, no_rcpthosts):
    """Make ALIAS_DOMAIN another name of REAL_DOMAIN (either order, as vaddaliasdomain)."""
    alias, real = admin.add_alias_domain(users, real_domain, alias_domain)
    click.echo("added alias domain %s -> %s" % (alias, real))
    _rcpthosts(alias, no_rcpthosts, rcpthosts.add, "add")


@cli.command()
@click.argument("domain")
@click.option("--keep-files", is_flag=True, help="Keep the domain directory and its mailboxes.")
@click.option("--no-rcpthosts", is_flag=True, help="Leave control/rcpthosts alone.")
@with_users
def deldomain(users, domain, keep_files, no_rcpthosts):
    """Remove DOMAIN with all its users (or, for an alias domain, just the alias)."""
    what = admin.del_domain(users, domain, keep_files)
    click.echo("deleted %s %s" % ("alias domain" if what == "alias" else "domain", domain.lower()))
    _rcpthosts(domain.lower(), no_rcpthosts, rcpthosts.remove, "remove")


def _rcpthosts(domain, skip, change, verb):
    if skip:
        return
    if not change(_home(), domain) and verb == "add":
        click.echo("note: control/rcpthosts is not a file here; %s %s there (or in control/options) "
                   "yourself" % (verb, domain), err=True)


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
    click.echo("added %s (%s)" % (box.address, box.maildir))


@cli.command()
@click.argument("address")
@click.option("--keep-files", is_flag=True, help="Keep the mailbox directory.")
@with_users
def deluser(users, address, keep_files):
    """Remove the mailbox ADDRESS and its directory."""
    box = admin.del_user(users, address, keep_files)
    click.echo("deleted %s" % box.address)


@cli.command()
@click.argument("address")
@click.option("-p", "--password", help="The new password (asked for when not given).")
@clear_option
@scheme_option
@with_users
def passwd(users, address, password, clear, scheme):
    """Set the password of ADDRESS (pw_clear_passwd is emptied unless --clear)."""
    admin.set_password(users, address, _password(password), clear, scheme)
    click.echo("password changed for %s" % address.lower())


@cli.command()
@click.argument("address")
@click.argument("quota")
@with_users
def setquota(users, address, quota):
    """Set the quota of ADDRESS: NOQUOTA, bytes, 10M, 512k or 10000000S[,1000C]."""
    box = admin.set_quota(users, address, quota)
    click.echo("quota of %s: %s" % (box.address, box.quota or "NOQUOTA"))


@cli.command("list")
@click.argument("domain", required=False)
@with_users
def list_(users, domain):
    """List the domains (aliases as 'alias -> domain'), or the users of DOMAIN."""
    if domain is None:
        names, aliases = users.domains()
        for name in names:
            click.echo(name)
        for alias in sorted(aliases):
            click.echo("%s -> %s" % (alias, aliases[alias]))
        return
    real = users.domain_of(domain)
    if real is None:
        raise UsersError("no such domain: %s" % domain.lower())
    for box in users.mailboxes(real):
        click.echo("%s\t%s\t%s" % (box.address, box.quota or "NOQUOTA", box.maildir))


@cli.command()
@click.argument("address")
@with_users
def info(users, address):
    """Show what the database holds for ADDRESS (as vuserinfo)."""
    pairs = admin.info(users, address)
    if pairs is None:
        raise UsersError("no such user: %s" % address.lower())
    for label, value in pairs:
        click.echo("%-13s %s" % (label + ":", value))


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
    count = users.purge_relay(time.time() - window)
    click.echo("cleared %d relay entr%s" % (count, "y" if count == 1 else "ies"))


@cli.command()
@with_users
def relays(users):
    """List the relay table: IP and the time of its last POP3 login."""
    for ip, stamp in users.relays():
        click.echo("%s\t%d" % (ip, stamp))


def main():
    return cli(prog_name="qmail-users")
