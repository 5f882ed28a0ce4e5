"""qmail's config-fast: control/me, defaultdomain, plusdomain, locals and rcpthosts from one name.

The values are config-fast's: me is the name; defaultdomain drops its first
label when it has three or more (`sed 's/^\\([^\\.]*\\)\\.\\([^\\.]*\\)\\./\\2\\./'`);
plusdomain is its last two labels when it has three or more; locals and
rcpthosts get the name (config-fast appends with `>>`). Without rcpthosts
qmail-smtpd relays for anyone, so this is what keeps a new home from being
an open relay. Used by qmail-config (qmailpy/cli/config.py) and by
tools/install.py (--me, and --production from the host name).

Modes for files that are there already (or set in control/options):
  REFUSE   write nothing at all and say which are there (qmail-config's default)
  MISSING  write only the absent ones, keep the rest (the installer)
  FORCE    replace me, defaultdomain, plusdomain; add the name to locals and
           rcpthosts when they do not list it (config-fast's >>)
"""
from qmailpy.ctl import edit

FILES = ("me", "defaultdomain", "plusdomain", "locals", "rcpthosts")
LISTS = ("locals", "rcpthosts")
REFUSE, MISSING, FORCE = "refuse", "missing", "force"
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


class ConfigError(Exception):
    """A bad host name, or files that are there already (REFUSE)."""


def check_name(fqdn):
    name = (fqdn or "").strip().rstrip(".")
    if (not name or len(name) > 253 or not set(name.lower()) <= NAME_CHARS or name.startswith((".", "-"))
            or ".." in name):
        raise ConfigError("invalid host name %r" % fqdn)
    return name


def defaultdomain(fqdn):
    parts = fqdn.split(".", 2)
    return "%s.%s" % (parts[1], parts[2]) if len(parts) == 3 else fqdn


def plusdomain(fqdn):
    parts = fqdn.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 3 else fqdn


def values(fqdn):
    """{file: the line config-fast puts into it}, in config-fast's order."""
    return {"me": fqdn, "defaultdomain": defaultdomain(fqdn), "plusdomain": plusdomain(fqdn),
            "locals": fqdn, "rcpthosts": fqdn}


def present(home, name):
    """control/NAME exists, or control/options sets it."""
    return edit.read_lines(home, name) is not None or edit.set_elsewhere(home, name)


def configure(home, fqdn, mode=REFUSE):
    """Write the files; the lines to print (config-fast's "Putting X into control/Y...").

    Raises ConfigError for a bad name, and in REFUSE mode when any file is there.
    """
    fqdn = check_name(fqdn)
    there = [name for name in FILES if present(home, name)]
    if there and mode == REFUSE:
        raise ConfigError("%s already there: nothing written (--force replaces me, defaultdomain and "
                          "plusdomain and adds %s to locals and rcpthosts; --missing writes only the absent "
                          "files)" % (", ".join("control/" + n for n in there), fqdn))
    out = []
    for name, value in values(fqdn).items():
        if name in there and mode == MISSING:
            out.append("control/%s is there already: left as it is" % name)
            continue
        if name in there and name in LISTS:
            if edit.set_elsewhere(home, name):      # a file would shadow the whole options value
                out.append("control/%s is set in control/options: add %s there" % (name, value))
            elif edit.add_line(home, name, value):
                out.append("Adding %s to control/%s..." % (value, name))
            else:
                out.append("control/%s lists %s already" % (name, value))
            continue
        out.append("Putting %s into control/%s..." % (value, name))
        edit.write_lines(home, name, [value])
    if "rcpthosts" not in there:
        out.append("Now qmail will refuse to accept SMTP messages except to %s." % fqdn)
        out.append("Make sure to change rcpthosts if you add hosts to locals or virtualdomains!")
    return out
