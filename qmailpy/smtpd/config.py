"""Everything one qmail-smtpd session needs to know, read once per connection.

Built from the controls and the environment tcpserver gives (TCPREMOTEIP,
TCPREMOTEHOST, TCPREMOTEINFO, TCPLOCALIP, TCPLOCALHOST, RELAYCLIENT, ...).
Lists are compiled into matchers here so that the session code stays pure;
the anti-spam policy (qmailpy.policy) reads its controls on first use.
"""
from qmailpy.ctl.patterns import HostList, IPPrefixList
from qmailpy.ctl.reader import env_seconds
from qmailpy.policy.engine import Policy


ENV_SECONDS = ("AUTHFAILDELAY", "DNSTIMEOUT")
AUTH_FAILURE_DELAY = 5.0     # seconds before "535 authentication failed" (spamcontrol's AUTHSLEEP)


class Peer:
    """The client as tcpserver describes it."""
    __slots__ = ("ip", "host", "info", "local_ip", "local_host")

    def __init__(self, environ):
        self.ip = environ.get("TCPREMOTEIP") or "unknown"
        host = environ.get("TCPREMOTEHOST")      # qmail: "unknown" when unset; set empty stays ""
        self.host = "unknown" if host is None else host
        self.info = environ.get("TCPREMOTEINFO")
        self.local_ip = environ.get("TCPLOCALIP") or "unknown"
        self.local_host = environ.get("TCPLOCALHOST") or environ.get("TCPLOCALIP") or "unknown"


def _list(controls, name, cls):
    s = controls.setting(name)
    return cls(s.value or (), s.linenos) if s.value else None


class SmtpdConfig:
    """Controls and environment of one session, with list controls compiled."""

    def __init__(self, controls, environ):
        controls.require("qmail-smtpd")     # a bad number or line: 421 now, not in mid-session
        for name in ENV_SECONDS:            # the same for the numbers only the environment gives
            env_seconds(environ, name, None)
        v = controls.value
        self.controls = controls
        self.environ = environ
        self.peer = Peer(environ)
        self.me = v("me")
        self.greeting = v("smtpgreeting")
        self.localiphost = v("localiphost")
        self.databytes = v("databytes")
        self.timeout = v("timeoutsmtpd") or 1200
        self.session_limit = v("timeoutsession")          # 0: none
        self.minrate, self.minrate_window = v("smtpminrate"), v("smtpminratewindow")
        self.maxrcpt = v("maxrecepients")
        self.newline = v("newline")
        self.stripsinglequotes = v("stripsinglequotes")
        self.lowercase = v("lowercase")
        self.noathost = v("noathost")
        self.smtpauth = v("smtpauth")
        self.auth_plaintext = v("smtpauthplaintext")
        self.authfail_limit, self.authfail_window = v("authfaillimit"), v("authfailwindow")
        self.authfail_shared = v("authfailshared")
        self.smtps = bool(environ.get("SMTPS"))          # implicit TLS from the first byte (port 465)
        self.tls_offer = self._cert_looks_usable(v("servercert.pem"))     # STARTTLS offered
        self.authsender = v("authsender")
        self.smdcheck = v("smdcheck")
        self.periplimit = v("periplimit")
        self.userchk = v("userchk")
        self.popbeforesmtp = v("popbeforesmtp")
        self.pop_window = v("popbeforesmtptimeout")
        self.relayclient = environ.get("RELAYCLIENT")      # None: not set
        self.auth_delay = env_seconds(environ, "AUTHFAILDELAY", AUTH_FAILURE_DELAY)
        rcpthosts = controls.value("rcpthosts")
        self.rcpthosts = None if rcpthosts is None else HostList(rcpthosts)
        self.morercpthosts_path = controls.value("morercpthosts.cdb")
        self.relayclients = _list(controls, "relayclients", IPPrefixList)
        self.relaydomains = _list(controls, "relaydomains", HostList)
        # the anti-spam lists, DNS checks, SPF and relaymailfrom: read on first use
        self.policy = Policy(controls, environ, self.peer, self.my_ips())

    @staticmethod
    def _cert_looks_usable(path):
        """servercert.pem there with a certificate and a key (no ssl import: qmailpy.ctl.pem)."""
        if path is None:
            return False
        from qmailpy.ctl.pem import looks_usable
        return looks_usable(path)

    def my_ips(self):
        """IPs whose [literal] means "this host" (qmail asks the interfaces; we know these):
        the loopback addresses and TCPLOCALIP (an IPv6 one in RFC 5952 text, as literals are)."""
        local = self.peer.local_ip
        if ":" in local:
            from qmailpy.proto.grammar import ipv6_text
            local = ipv6_text(local) or local
        return {"127.0.0.1", "::1", local}
