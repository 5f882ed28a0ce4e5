"""What qmail-showctl prints, built from the registry; docs and tests use it too.

Format (stable; tests compare it byte for byte):
    name: (Default.) value        a single value from the default
    name: value                   a single value from a file or control/options
    name:                         a list: one indented line per entry follows
      entry
cdb and secrets parameters show a summary in parentheses, never their keys.
"""
import os
import time

from qmailpy.ctl import registry as R
from qmailpy.ctl.cdbmap import open_cdb
from qmailpy.ctl.options import DEFAULT_MARK, OPTIONS, Finding
from qmailpy.ctl.reader import ControlError

LIST_LIKE = (R.LIST, R.PATTERNS, R.TEXT)
# cdbs that are not parameters: tcpserver's rules (we check it for tcpserver) and qmail-lspawn's users
OTHER_CDBS = ("control/tcp.smtp.cdb", "users/cdb")


def summary(setting):
    """(head text, indented entries) for one Setting."""
    c, v = setting.control, setting.value
    if c.kind == R.CDB:
        if v is None:
            return "absent", ()
        try:
            db = open_cdb(v, setting.source)
            n = len(db)
            db.close()
        except ControlError as e:
            return "(unreadable: %s)" % e.reason, ()
        return "(%d keys)" % n, ()
    if c.kind == R.FILE:
        return ("absent", ()) if v is None else ("(present)", ())
    if c.kind == R.SECRETS:
        if not v:
            return "none", ()
        if c.name.endswith("_age"):
            return "(%s)" % ages(v), ()
        return "(%d keys)" % len(v), ()
    if c.kind in LIST_LIKE:
        return ("absent" if v is None else ""), tuple(v or ())
    return str(v), ()


def ages(lines, now=None):
    """'N keys, newest D days, oldest D days' from 'key timestamp' lines."""
    now = time.time() if now is None else now
    stamps = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[-1].isdigit():
            stamps.append(int(parts[-1]))
    if not stamps:
        return "%d keys" % len(lines)
    days = sorted(int((now - s) // 86400) for s in stamps)
    return "%d keys, newest %d days, oldest %d days" % (len(lines), days[0], days[-1])


def render(setting):
    """The lines qmail-showctl prints for one Setting."""
    head, items = summary(setting)
    mark = DEFAULT_MARK + " " if setting.is_default else ""
    text = (mark + head).rstrip()
    first = setting.control.name + ":" + (" " + text if text else "")
    return [first] + [("  " + item).rstrip() if not item else "  " + item for item in items]


def as_json(controls):
    rows = []
    for c in R.CONTROLS:
        try:
            s = controls.setting(c.name)
        except ControlError as e:
            rows.append({"name": c.name, "kind": c.kind, "error": str(e)})
            continue
        head, items = summary(s)
        value = s.value if c.kind not in (R.CDB, R.SECRETS, R.FILE) else head
        rows.append({"name": c.name, "kind": c.kind, "default": s.is_default,
                     "source": s.source, "value": list(value) if isinstance(value, tuple) else value})
    return rows


def unknown_files(home):
    """Findings for files in control/ that no registry entry explains."""
    base = os.path.join(home, "control")
    found = []

    def unlisted(e):            # a directory that cannot be listed hides its unknown files
        rel = os.path.relpath(e.filename or base, base)
        found.append(Finding("control/" if rel == "." else "control/%s/" % rel, 0,
                             "unable to list: %s" % (e.strerror or e)))
    for dirpath, dirnames, filenames in os.walk(base, onerror=unlisted):
        rel = os.path.relpath(dirpath, base)
        for fn in sorted(filenames):
            name = fn if rel == "." else rel + "/" + fn
            if R.lookup(name) is None and name not in R.KNOWN_FILES:
                found.append(Finding("control/" + name, 0, "unknown control file"))
        dirnames[:] = sorted(d for d in dirnames if (d if rel == "." else rel + "/" + d) in R.KNOWN_FILES)
    return found


def cdb_findings(controls):
    """Each cdb of the home opened and walked whole: a truncated or corrupt one is a finding."""
    found = []
    names = ["control/" + c.name for c in R.CONTROLS if c.kind == R.CDB] + list(OTHER_CDBS)
    for name in names:
        try:
            db = open_cdb(os.path.join(controls.home, name), name)
            if db is not None:
                try:
                    db.verify()
                finally:
                    db.close()
        except ControlError as e:
            found.append(e.finding())
    return found


def tls_findings(controls):
    """A servercert.pem that is there but cannot be used (qmail-smtpd then offers no STARTTLS),
    a dh2048.pem that does not load, and AUTH that no client can reach."""
    from qmailpy.ctl import pem
    found = []
    cert = controls.value("servercert.pem")
    if cert is not None:
        why = pem.problem(cert)
        if why is not None:
            found.append(Finding("control/servercert.pem", 0, why + ": qmail-smtpd offers no STARTTLS"))
        dh = controls.value("dh2048.pem")
        if why is None and dh is not None:
            why = pem.problem(cert, dh)
            if why is not None:
                found.append(Finding("control/dh2048.pem", 0, why))
    try:
        if controls.value("smtpauth") and not controls.value("smtpauthplaintext") and cert is None:
            found.append(Finding("control/smtpauth", 0, "AUTH is offered only over TLS and there is no "
                                 "control/servercert.pem (set control/smtpauthplaintext for clients without TLS)"))
    except ControlError:
        pass
    return found


def authfail_findings(controls):
    """authfailshared 1 where the users database is SQLite (no usersdb): the count stays per host."""
    try:
        if controls.value("authfailshared") and not (controls.value("usersdb") or "").strip():
            return [Finding("control/authfailshared", 0, "the users database is SQLite (control/usersdb is "
                            "empty): the AUTH-failure count is kept on this host only")]
    except ControlError:
        pass
    return []


def check(controls):
    """Every finding: malformed values, unreadable files, corrupt cdbs, unknown files and options lines."""
    findings = []
    for c in R.CONTROLS:
        try:
            controls.setting(c.name)
        except ControlError as e:
            findings.append(e.finding())
    try:
        controls.options()
    except ControlError:
        pass                       # reported above, by every parameter it could set
    findings.extend(controls.findings)
    findings.extend(cdb_findings(controls))
    findings.extend(unknown_files(controls.home))
    findings.extend(tls_findings(controls))
    findings.extend(authfail_findings(controls))
    try:
        if controls.value("rcpthosts") is None:
            findings.append(Finding("control/rcpthosts", 0,
                                    "absent: qmail-smtpd accepts mail for any domain (open relay)"))
    except ControlError:
        pass
    unique = {str(f): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.path, f.lineno, f.message))


__all__ = ["render", "as_json", "check", "OPTIONS"]
