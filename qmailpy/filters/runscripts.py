"""Command lines, run scripts and config text for clamd, spamd and freshclam.

Made from the controls so the daemons listen where qmail-queue looks
(control/clamdsocket, control/spamdsocket) and spamd runs as H-Sphere ran it:
control/spamdchildren is --max-children, control/sanetcheck 0 adds -L (no
network tests), user preferences come from SQL (-q -x; the DSN is
user_scores_dsn in SpamAssassin's local.cf, see spamd_sql_config()).
`make install` writes the daemontools run scripts (run_scripts()) and the
crontab line of freshclam_crontab(). Pure text: nothing here starts anything.
"""
import shlex


CLAMD_CONF = "/etc/clamav/clamd.conf"
CLAMAV_DB = "/var/lib/clamav"
SPAMD_USER = "debian-spamd"          # Debian's spamd package; spamd -q needs -u
FRESHCLAM_CRON = "0 * * * * %s --quiet"


def _address(text):
    """('unix', path) or ('tcp', host, port) of a clamdsocket/spamdsocket value."""
    from qmailpy.filters.net import parse_address
    import socket
    family, addr = parse_address(text)
    if family == socket.AF_UNIX:
        return ("unix", addr)
    return ("tcp",) + addr


def clamd_command(config_file=CLAMD_CONF, clamd="clamd"):
    """clamd in the foreground (for a supervisor), with its config file."""
    return [clamd, "--foreground", "--config-file=%s" % config_file]


# clamd's own defaults (clamd.conf(5), ClamAV 1.x) of the limits qmailpy raises from databytes
STREAM_MAX, FILE_MAX, SCAN_MAX = 100 << 20, 100 << 20, 400 << 20
HEADROOM = 65536                # the Received lines qmail-smtpd and qmail-queue put above databytes
SCAN_FACTOR = 4                 # the message, its decoded parts and what they contain all count
FILE_CAP = (2 << 30) - 1        # "ClamAV cannot scan files greater than 2 GB"
STREAM_CAP = SCAN_CAP = (4 << 30) - 1


def clamd_limits(databytes):
    """[(option, value)]: StreamMaxLength, MaxFileSize and MaxScanSize, raised together so that a
    message of databytes bytes is read, taken as one file and scanned in full (never lowered below
    clamd's defaults; databytes 0, unlimited, keeps them)."""
    stream = max(STREAM_MAX, databytes + HEADROOM) if databytes else STREAM_MAX
    stream = min(stream, STREAM_CAP)
    return [("StreamMaxLength", stream), ("MaxFileSize", min(max(FILE_MAX, stream), FILE_CAP)),
            ("MaxScanSize", min(max(SCAN_MAX, SCAN_FACTOR * stream), SCAN_CAP))]


def clamd_config(clamdsocket, database_dir=CLAMAV_DB, databytes=0, alert_encrypted=True, user=None, extra=()):
    """A clamd.conf listening at clamdsocket (a path or host:port).

    Whatever clamd cannot scan in full is reported, never passed as clean:
    AlertExceedsMax makes a message beyond MaxFileSize, MaxScanSize,
    MaxRecursion or MaxFiles a `Heuristics.Limits.Exceeded.*` finding, and
    AlertEncrypted (unless alert_encrypted is False: control
    clamdalertencrypted 0) an encrypted archive or document a
    `Heuristics.Encrypted.*` one. The size limits follow databytes
    (clamd_limits()). docs/filters.md has the table.
    """
    lines = ["# made by qmailpy.filters.runscripts from control/clamdsocket, databytes and clamdalertencrypted",
             "Foreground yes"]
    where = _address(clamdsocket)
    if where[0] == "unix":
        lines += ["LocalSocket %s" % where[1], "LocalSocketMode 666", "FixStaleSocket yes"]
    else:
        lines += ["TCPSocket %d" % where[2], "TCPAddr %s" % where[1]]
    lines += ["DatabaseDirectory %s" % database_dir, "ScanMail yes", "LogSyslog no", "LogTime yes"]
    lines += ["%s %d" % limit for limit in clamd_limits(databytes)]
    lines += ["AlertExceedsMax yes", "AlertEncrypted %s" % ("yes" if alert_encrypted else "no")]
    if user:
        lines.append("User %s" % user)
    lines += list(extra)
    return "\n".join(lines) + "\n"


def spamd_command(spamdsocket, children=10, sanetcheck=0, user=SPAMD_USER, siteconfigpath=None,
                  sql=True, spamd="spamd", extra=()):
    """spamd in the foreground, logging to stderr, as qmail-queue expects it."""
    argv = [spamd, "--max-children=%d" % max(1, int(children)), "--syslog=stderr"]
    if sql:
        argv += ["-q", "-x"]              # --sql-config, --nouser-config: preferences from SQL only
    if user:
        argv.append("--username=%s" % user)
    where = _address(spamdsocket)
    if where[0] == "unix":
        argv.append("--socketpath=%s" % where[1])
    else:
        host = "[%s]" % where[1] if ":" in where[1] else where[1]
        argv += ["-i", host, "-p", "%d" % where[2]]
    if not sanetcheck:
        argv.append("-L")                 # --local: no DNS blocklists, razor, pyzor...
    if siteconfigpath:
        argv.append("--siteconfigpath=%s" % siteconfigpath)
    return argv + list(extra)


def spamd_sql_config(database, host="127.0.0.1", port=3306, username=None, password=None):
    """local.cf lines for per-user preferences from SQL (SpamAssassin's userpref table)."""
    lines = ["user_scores_dsn DBI:mysql:%s:%s:%d" % (database, host, port)]
    if username:
        lines.append("user_scores_sql_username %s" % username)
    if password:
        lines.append("user_scores_sql_password %s" % password)
    return "\n".join(lines) + "\n"


# SpamAssassin's sql/userpref_mysql.sql
USERPREF_TABLE = """CREATE TABLE userpref (
  username varchar(100) NOT NULL default '',
  preference varchar(50) NOT NULL default '',
  value varchar(100) NOT NULL default '',
  prefid int(11) NOT NULL auto_increment,
  PRIMARY KEY (prefid),
  KEY username (username)
)"""


def run_script(argv):
    """A daemontools run script that execs argv with stderr into the log."""
    return "#!/bin/sh\nexec 2>&1\nexec %s\n" % " ".join(shlex.quote(a) for a in argv)


def freshclam_crontab(freshclam="freshclam"):
    """The crontab line updating ClamAV's databases hourly, as H-Sphere's mail server cron does."""
    return "# ClamAV database update (qmailpy filters)\n" + FRESHCLAM_CRON % freshclam + "\n"


def from_controls(controls, clamd_conf=CLAMD_CONF, spamd_user=SPAMD_USER, siteconfigpath=None,
                  clamd="clamd", spamd="spamd", database_dir=CLAMAV_DB, clamd_extra=()):
    """{"clamd/run", "spamd/run", "clamd.conf"}: text made from the qmail home's controls."""
    value = controls.value
    return {
        "clamd/run": run_script(clamd_command(clamd_conf, clamd)),
        "clamd.conf": clamd_config(value("clamdsocket"), database_dir, value("databytes") or 0,
                                   bool(value("clamdalertencrypted")), extra=clamd_extra),
        "spamd/run": run_script(spamd_command(value("spamdsocket"), value("spamdchildren"), value("sanetcheck"),
                                              spamd_user, siteconfigpath, spamd=spamd)),
    }
