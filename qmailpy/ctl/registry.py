"""The one table of control files: the reader, qmail-showctl and docs/ all use it.

Kinds (how a file is read, see qmailpy.ctl.parse):
  line     first line, trailing white space stripped
  text     every line kept (a multi-line text such as a bounce message)
  list     one entry a line; blank and '#' lines skipped; literal entries
  patterns like list, entries in the spamcontrol pattern language
  number   a non-negative integer on the first line; above `maximum` (NUMBER_MAX when
           none is given: qmail reads numbers into an int) is clamped; below `minimum`
           (where 0 cannot work: a time-out, a count of servers) and anything else
           stops the programs that read it (ctl.reader.ControlError)
  bool     a number, 0 = off, anything else = on
  cdb      a constant database (tcprules/qmail-newmrh format)
  secrets  a list whose entries are never shown (SRS keys)
  file     a file its programs use whole by its path (a PEM certificate or key): the value
           is the path when the file is there, else None; never in control/options

A default of ME means "the value of control/me"; LIST defaults are tuples and
None means "absent changes behaviour" (rcpthosts: absent = accept any domain).
"""

ME = "<me>"        # default taken from control/me
NUMBER_MAX = 2 ** 31 - 1

LINE, TEXT, LIST, PATTERNS, NUMBER, BOOL, CDB, SECRETS, FILE = (
    "line", "text", "list", "patterns", "number", "bool", "cdb", "secrets", "file")


class Control:
    """One control file: how to read it, its default, who reads it, what it does.

    env names an environment variable that overrides the file; keep_empty says
    an empty file is a value (doublebounceto) rather than "use the default"; lazy says
    it is read only when it is used, never by require() at start (the users database's
    controls: qmail-smtpd and qmail-queue open the database only without qmail-usersd,
    and control/usersdb, which holds the MySQL password, is qmailu's alone).
    A plain slotted class: namedtuple/NamedTuple would import collections or
    typing (and re) into every qmail-smtpd start.
    """
    __slots__ = ("name", "kind", "default", "group", "readers", "doc", "maximum", "env", "aliases",
                 "keep_empty", "minimum", "lazy")

    def __init__(self, name, kind, default, group, readers, doc, maximum=None, env=None, aliases=(),
                 keep_empty=False, minimum=0, lazy=False):
        self.name, self.kind, self.default, self.group = name, kind, default, group
        self.readers, self.doc, self.maximum, self.env = readers, doc, maximum, env
        self.aliases, self.keep_empty, self.minimum, self.lazy = aliases, keep_empty, minimum, lazy

    def __repr__(self):
        return "Control(%r, %r)" % (self.name, self.kind)


def _c(name, kind, default, group, readers, doc, **kw):
    return Control(name, kind, default, group, tuple(readers.split()), doc, **kw)


SMTPD, QUEUE, SEND, REMOTE = "qmail-smtpd", "qmail-queue", "qmail-send", "qmail-remote"
TODO, LSPAWN = "qmail-todo", "qmail-lspawn"
INJECT = "qmail-inject sendmail"      # sendmail runs qmail-inject
# Readers that are qmail's programs but not qmailpy's yet: docs/ says "(not yet)".
# Besides these, every reader is a console script of setup.cfg, a run script
# (install/services.py: run-scripts, spamd-run) or a service's generated configuration
# (filters/runscripts.py: clamd-conf, the clamd.conf the install writes).
NOT_YET = frozenset()
RUN_SCRIPTS = frozenset(("run-scripts", "spamd-run", "clamd-conf"))

# Group order is the order of docs/ pages and of qmail-showctl output.
GROUPS = {
    "identity": "Host identity",
    "smtp": "SMTP server",
    "relay": "Relaying and recipients",
    "auth": "SMTP AUTH and POP-before-SMTP",
    "antispam": "Anti-spam lists",
    "dnscheck": "DNS checks and RBL",
    "spf": "SPF",
    "filter": "Virus and spam filtering",
    "queue": "Queue and scheduling",
    "remote": "Remote delivery",
    "tls": "TLS",
    "dkim": "DKIM",
    "bounce": "Bounces",
    "srs": "SRS",
}

CONTROLS = (
    # -- identity
    _c("me", LINE, None, "identity", f"{SMTPD} {SEND} {TODO} {LSPAWN} {QUEUE} {REMOTE} {INJECT}",
       "This host's fully qualified name; the default of most host names below (absent: the system host name)."),
    _c("defaultdomain", LINE, ME, "identity", INJECT, "Domain appended to host names without a dot.",
       env="QMAILDEFAULTDOMAIN"),
    _c("defaulthost", LINE, ME, "identity", INJECT, "Host appended to addresses without one.",
       env="QMAILDEFAULTHOST"),
    _c("plusdomain", LINE, ME, "identity", INJECT, "Replaces a trailing '+' in a host name.",
       env="QMAILPLUSDOMAIN"),
    _c("idhost", LINE, ME, "identity", INJECT, "Host name used in Message-IDs.", env="QMAILIDHOST"),
    _c("envnoathost", LINE, ME, "identity", f"{SEND} {TODO} {LSPAWN} {QUEUE} {SMTPD}",
       "Domain given to envelope recipients without '@'."),
    _c("localiphost", LINE, ME, "identity", f"{SMTPD} {QUEUE}", "Replaces [my-IP] domain literals in recipients."),
    # -- smtp
    _c("smtpgreeting", LINE, ME, "smtp", SMTPD, "Text of the 220 greeting and the HELO/EHLO reply."),
    _c("databytes", NUMBER, 0, "smtp", SMTPD, "Largest message accepted, in bytes; 0 = unlimited.",
       env="DATABYTES"),
    _c("timeoutsmtpd", NUMBER, 1200, "smtp", SMTPD, "Seconds to wait for the client on every read.", minimum=1),
    _c("timeoutsession", NUMBER, 0, "smtp", SMTPD,
       "Seconds a whole SMTP session may last; then 421 and the connection ends; 0 = no limit (qmail)."),
    _c("smtpminrate", NUMBER, 0, "smtp", SMTPD,
       "Bytes per second a client must send, on average, over the time qmail-smtpd waits for it "
       "(judged once it waited smtpminratewindow seconds); slower: 421; 0 = no minimum (qmail)."),
    _c("smtpminratewindow", NUMBER, 60, "smtp", SMTPD,
       "Seconds of waiting for the client after which smtpminrate is judged."),
    _c("maxrecepients", NUMBER, 0, "smtp", SMTPD, "Most recipients per message; 0 = unlimited.",
       aliases=("maxrcpt",), env="MAXRECIPIENTS"),
    _c("newline", BOOL, 0, "smtp", SMTPD, "1: accept clients that end lines with a bare LF."),
    _c("stripsinglequotes", BOOL, 0, "smtp", SMTPD, "1: remove single quotes from envelope addresses."),
    _c("lowercase", BOOL, 0, "smtp", SMTPD, "1: lower-case envelope addresses before any check."),
    _c("noathost", BOOL, 0, "smtp", SMTPD, "1: MAIL FROM and RCPT TO must be fully qualified (user@domain)."),
    _c("tcpsessioncount", NUMBER, 40, "smtp", "run-scripts", "Concurrent SMTP sessions (tcpserver -c); restart to apply.", minimum=1),
    _c("periplimit", NUMBER, 0, "smtp", SMTPD, "Most simultaneous sessions from one client IP; 0 = unlimited."),
    _c("quitasap", BOOL, 0, "smtp", SMTPD, "1: end the session after the first refusal by a list or check."),
    _c("tarpitcount", NUMBER, 0, "smtp", SMTPD, "Recipients after which each RCPT reply is delayed; 0 = off.",
       env="TARPITCOUNT"),
    _c("tarpitdelay", NUMBER, 5, "smtp", SMTPD, "Seconds of delay per RCPT past tarpitcount.", env="TARPITDELAY"),
    # -- relay
    _c("rcpthosts", LIST, None, "relay", f"{SMTPD} {SEND}",
       "Domains we accept mail for ('.example.com' = its subdomains); absent = any domain (open relay)."),
    _c("morercpthosts", LIST, (), "relay", "qmail-newmrh", "Source text of morercpthosts.cdb."),
    _c("morercpthosts.cdb", CDB, None, "relay", f"{SMTPD} {SEND}", "More rcpthosts, as a cdb of the domains (qmail-newmrh's format)."),
    _c("relayclients", LIST, (), "relay", SMTPD, "Client IPs ('1.2.3.4:' or prefix '192.168.1.:') that may relay."),
    _c("relaydomains", LIST, (), "relay", SMTPD, "Client host names ('host:' or '.domain:') that may relay: TCPREMOTEHOST, which only tcpserver -p confirms."),
    _c("relaymailfrom", LIST, (), "relay", SMTPD, "Senders (address or @domain) that may relay; not recommended."),
    _c("locals", LIST, (ME,), "relay", f"{SEND} {TODO} {LSPAWN} {QUEUE} {SMTPD}",
       "Domains delivered locally."),
    _c("virtualdomains", LIST, (), "relay", f"{SEND} {TODO} {LSPAWN} {QUEUE} {SMTPD}",
       "'domain:prefix' lines mapping virtual domains to users."),
    _c("percenthack", LIST, (), "relay", f"{SEND} {TODO} {LSPAWN} {QUEUE} {SMTPD}",
       "Domains where user%host@domain is rewritten to user@host."),
    _c("userchk", BOOL, 0, "relay", SMTPD, "1: refuse unknown mailbox users of hosted domains at RCPT (chkuser)."),
    # -- auth
    _c("smtpauth", BOOL, 0, "auth", SMTPD,
       "1: offer SMTP AUTH LOGIN PLAIN CRAM-MD5: after STARTTLS or on SMTPS, on plain connections "
       "only with smtpauthplaintext 1."),
    _c("smtpauthplaintext", BOOL, 0, "auth", SMTPD,
       "1: offer and accept AUTH on connections without TLS (legacy clients); 0: AUTH only after "
       "STARTTLS or on SMTPS (538 before)."),
    _c("authfaillimit", NUMBER, 10, "auth", SMTPD,
       "Password checks one client (an IPv4 address; 127.0.0.0/8 and each IPv6 /64 one client) may fail "
       "within authfailwindow, over all its connections; the "
       "next AUTH (even with the right password) gets 421 and the connection ends; 0 = no limit (qmail)."),
    _c("authfailwindow", NUMBER, 900, "auth", SMTPD,
       "Seconds a failed AUTH counts against its client IP (authfaillimit): the lockout ends when "
       "the oldest failure is that old."),
    _c("authfailshared", BOOL, 0, "auth", SMTPD,
       "1: the authfaillimit count is kept in the MySQL/MariaDB users database (table qmailpy_authfail, "
       "through qmail-usersd), shared by every MX host using it; per host when the database is SQLite, "
       "and while it cannot answer (logged as authfail-local); 0: per host (sessions/authfail/)."),
    _c("authsender", BOOL, 0, "auth", SMTPD, "1: the MAIL FROM domain must be the authenticated user's domain (<> passes)."),
    _c("popbeforesmtp", BOOL, 1, "auth", SMTPD, "1: clients that logged in over POP3 recently may relay."),
    _c("smdcheck", BOOL, 0, "auth", SMTPD, "1: relaying clients must use one of our domains as sender."),
    _c("popbeforesmtptimeout", NUMBER, 1800, "auth", f"{SMTPD} qmail-users",
       "Seconds a POP3 login lets its IP relay (POP-before-SMTP window)."),
    _c("usersdb", LINE, "", "auth", f"{SMTPD} {QUEUE} {LSPAWN} qmail-users",
       "Mailbox users database: empty = SQLite file users/vpopmail.sqlite under the qmail home; "
       "or vpopmail's MySQL line host|port|user|password|database.", keep_empty=True, lazy=True),
    _c("vpopmaildir", LINE, "", "auth", f"{SMTPD} {QUEUE} {LSPAWN} qmail-users",
       "Home of the virtual domains (vpopmail's ~vpopmail); empty = vpopmail/ under the qmail home.",
       keep_empty=True, lazy=True),
    # -- antispam lists
    _c("badmailfrom", LIST, (), "antispam", SMTPD, "Refused senders: addresses or @host."),
    _c("badmailpatterns", PATTERNS, (), "antispam", SMTPD, "Refused senders as patterns; '!' lines are exceptions."),
    _c("badmailfrom-unknown", LIST, (), "antispam", SMTPD,
       "Sender domains (@host) refused when the client IP has no PTR record."),
    _c("badhelo", PATTERNS, (), "antispam", SMTPD, "Refused HELO/EHLO names as patterns."),
    _c("badrcptto", LIST, (), "antispam", SMTPD, "Refused recipients: addresses or @host."),
    _c("badrcptpatterns", PATTERNS, (), "antispam", SMTPD, "Refused recipients as patterns."),
    _c("blackholedsender", PATTERNS, (), "antispam", SMTPD,
       "Senders as patterns; refused and the session ends at once."),
    # -- dns checks
    _c("mfdnscheck", BOOL, 0, "dnscheck", SMTPD, "1: the MAIL FROM domain must have an MX or A record.",
       env="MFDNSCHECK"),
    _c("nomfdnscheck", LIST, (), "dnscheck", SMTPD, "Sender addresses or @domains exempt from mfdnscheck."),
    _c("helodnscheck", BOOL, 0, "dnscheck", SMTPD, "1: the HELO/EHLO name must have an MX or A record."),
    _c("splithorizon", BOOL, 0, "dnscheck", SMTPD, "1: skip helodnscheck and badhelo for relaying clients."),
    _c("rblhosts", LIST, (), "dnscheck", SMTPD, "DNSBL zones asked about the client IP."),
    # -- spf
    _c("spfbehavior", NUMBER, 0, "spf", SMTPD, "0 off ... 6 reject anything but pass (see docs/spf.md).",
       maximum=6, env="SPFBEHAVIOR"),
    _c("spfrules", LINE, "", "spf", SMTPD, "Local SPF mechanisms run before a fail, softfail or neutral stands.",
       keep_empty=True),
    _c("spfguess", LINE, "", "spf", SMTPD, "SPF record assumed for domains that publish none.", keep_empty=True),
    _c("spfexp", LINE, "See http://spf.pobox.com/why.html?sender=%{S}&ip=%{I}&receiver=%{xR}", "spf", SMTPD,
       "Explanation (SPF macros) sent with an SPF refusal."),
    # -- filters
    _c("clamglobal", BOOL, 0, "filter", QUEUE, "1: virus-check mail for every recipient."),
    _c("spamglobal", BOOL, 0, "filter", QUEUE, "1: spam-check mail for every recipient."),
    _c("clamavclients.cdb", CDB, None, "filter", QUEUE, "Recipients (address or @domain) checked by clamd."),
    _c("spamdclients.cdb", CDB, None, "filter", QUEUE, "Recipients (address or @domain) checked by spamd."),
    _c("sanetcheck", BOOL, 0, "filter", "spamd-run", "1: let spamd run network tests (0: spamd -L)."),
    _c("spamdchildren", NUMBER, 10, "filter", "spamd-run", "spamd --max-children.", minimum=1),
    _c("clamdsocket", LINE, "/var/run/clamav/clamd.ctl", "filter", f"{QUEUE} clamd-conf",
       "clamd's LocalSocket path, or host:port of its TCPSocket."),
    _c("clamdalertencrypted", BOOL, 1, "filter", "clamd-conf",
       "1: clamd.conf AlertEncrypted yes, encrypted archives and documents are refused as "
       "Heuristics.Encrypted.*; 0: they pass unscanned (for sites that must accept them)."),
    _c("spamdsocket", LINE, "127.0.0.1:783", "filter", QUEUE,
       "spamd's host:port ([v6]:port), or the path of its UNIX socket."),
    _c("filtertimeout", NUMBER, 60, "filter", QUEUE, "Seconds one clamd or spamd conversation may take.", minimum=1),
    _c("filterfailopen", BOOL, 0, "filter", QUEUE,
       "1: on clamd/spamd trouble, queue unfiltered instead of refusing for now (451)."),
    _c("spamdmaxsize", NUMBER, 512000, "filter", QUEUE, "Larger messages are not spam-checked (as spamc); 0: no limit."),
    _c("badurls", BOOL, 0, "filter", QUEUE, "1: report URLs found in infected messages."),
    _c("badurlscommand", LINE, "", "filter", QUEUE,
       "Shell command given infected mail's URLs on stdin ($VIRUS, $SENDER set); empty = none.", keep_empty=True),
    _c("urlscnt", NUMBER, 5, "filter", QUEUE, "Most URLs reported per infected message; 0: none (badurls then reports nothing)."),
    # -- queue
    _c("concurrencylocal", NUMBER, 50, "queue", SEND,
       "Simultaneous local deliveries; 0 holds them (qmail) until a SIGHUP raises it.", maximum=500),
    _c("concurrencyremote", NUMBER, 100, "queue", SEND,
       "Simultaneous remote deliveries; 0 holds them (qmail) until a SIGHUP raises it.", maximum=500),
    _c("queuelifetime", NUMBER, 604800, "queue", SEND, "Seconds a message may stay in the queue."),
    _c("timeoutqueue", NUMBER, 86400, "queue", QUEUE, "Seconds qmail-queue may take for one message.", minimum=1),
    # -- remote
    _c("helohost", LINE, ME, "remote", REMOTE, "Name qmail-remote gives in HELO/EHLO."),
    _c("moreipme", LIST, (), "remote", REMOTE,
       "More IP addresses of this host (behind NAT), for qmail-remote's 'I am the best MX' check."),
    _c("smtproutes", LIST, (), "remote", REMOTE, "'domain:relay[:port]' lines; ':relay' routes everything."),
    _c("outgoingip", LINE, "", "remote", REMOTE, "Source IP for outgoing connections; empty = any.",
       keep_empty=True),
    _c("timeoutconnect", NUMBER, 60, "remote", REMOTE, "Seconds to wait for a remote connection.", minimum=1),
    _c("timeoutremote", NUMBER, 1200, "remote", REMOTE, "Seconds to wait for each remote reply.", minimum=1),
    # -- tls (the qmail TLS patch's names)
    _c("tlsdestinations", LIST, (), "tls", REMOTE,
       "Destinations whose TLS is required: 'domain' (certificate verified, system CAs), "
       "'domain:cafile', '-domain' (any certificate), '!domain' (never TLS), '.domain', '*'; "
       "others get opportunistic STARTTLS."),
    _c("tlsclientciphers", LINE, "", "tls", REMOTE, "OpenSSL cipher list for qmail-remote's TLS; empty = OpenSSL's.",
       keep_empty=True),
    _c("servercert.pem", FILE, None, "tls", SMTPD,
       "Certificate chain and private key (PEM, one file) qmail-smtpd shows for STARTTLS and SMTPS; "
       "absent or unusable: STARTTLS is not offered."),
    _c("clientca.pem", FILE, None, "tls", SMTPD,
       "CAs (PEM) whose client certificates qmail-smtpd asks for and logs as verified; absent: none asked."),
    _c("tlsserverciphers", LINE, "", "tls", SMTPD,
       "OpenSSL cipher list for qmail-smtpd's TLS 1.2 and below; empty = OpenSSL's.", env="TLSCIPHERS",
       keep_empty=True),
    _c("dh2048.pem", FILE, None, "tls", SMTPD,
       "DH parameters (PEM) for DHE ciphers; absent: ECDHE and TLS 1.3 key exchange only."),
    _c("clientcert.pem", FILE, None, "tls", REMOTE,
       "Certificate and key (PEM) qmail-remote shows to servers that ask for one."),
    # -- dkim
    _c("dkimverify", BOOL, 0, "dkim", QUEUE,
       "1: qmail-queue verifies the DKIM signatures of mail from qmail-smtpd and adds "
       "Authentication-Results (DKIM, and qmail-smtpd's SPF)."),
    _c("dkimverifymaxsize", NUMBER, 32 << 20, "dkim", QUEUE,
       "Signed messages larger than this many bytes are not verified (dkim=policy): a signed message is "
       "read whole, in qmail-queued's memory shared by every client; 0: no limit."),
    _c("dkimsignheaders", LIST, (), "dkim", REMOTE,
       "Header fields qmail-remote signs (From always); empty = RFC 6376's list, those present."),
    # -- bounces
    _c("bouncefrom", LINE, "MAILER-DAEMON", "bounce", SEND, "User part of the bounce sender."),
    _c("bouncehost", LINE, ME, "bounce", SEND, "Host part of the bounce sender."),
    _c("bouncesubject", LINE, "failure notice", "bounce", SEND, "Subject of bounce messages."),
    _c("bouncemessage", TEXT,
       ("I'm afraid I wasn't able to deliver your message to the following addresses.",
        "This is a permanent error; I've given up. Sorry it didn't work out."),
       "bounce", SEND, "Text of a bounce, after the 'Hi. This is the qmail-send program' line."),
    _c("bouncemaxbytes", NUMBER, 0, "bounce", SEND, "Most bytes of the original copied into a bounce; 0 = all."),
    _c("doublebouncehost", LINE, ME, "bounce", SEND, "Host of the double-bounce recipient."),
    _c("doublebounceto", LINE, "postmaster", "bounce", SEND,
       "User receiving double bounces; an empty file discards them (doublebounce-trim).", keep_empty=True),
    _c("doublebouncesubject", LINE, "failure notice", "bounce", SEND, "Subject of double bounces."),
    _c("doublebouncemessage", TEXT,
       ("I tried to deliver a bounce message to this address, but the bounce bounced!",),
       "bounce", SEND, "Text of a double bounce."),
    # -- srs
    _c("srs/srs_domain", LINE, ME, "srs", f"{SMTPD} {SEND} {TODO}", "Domain of SRS addresses."),
    _c("srs/srs_secrets", SECRETS, (), "srs", SEND, "Keys for new SRS addresses, newest first (setsrssecret)."),
    _c("srs/revers_srs_secrets", SECRETS, (), "srs", f"{SMTPD} {SEND} {TODO}",
       "Keys accepted on SRS bounces, newest first."),
    _c("srs/srs_secrets_age", SECRETS, (), "srs", "setsrssecret", "'key timestamp' lines: when each key was made."),
    _c("srs/srs_max_age", NUMBER, 2592000, "srs", f"{SMTPD} {SEND} {TODO} setsrssecret",
       "Seconds an SRS address stays valid (30 days)."),
)

BY_NAME = {c.name: c for c in CONTROLS}
BY_NAME.update({alias: c for c in CONTROLS for alias in c.aliases})

# Files that live in control/ but are not parameters themselves.
KNOWN_FILES = frozenset({"options", "clamavclients", "spamdclients", "srs", "tcp.smtp", "tcp.smtp.cdb",
                         "domainkeys",      # DKIM keys, domainkeys/DOMAIN/SELECTOR (qmailpy.dkim.keys)
                         "srs/setsrssecret.lock",
                         "edit.lock"})      # the admin tools' lock on control/ (qmailpy.ctl.edit)


def lookup(name):
    """The Control for a name or alias, or None."""
    return BY_NAME.get(name)
