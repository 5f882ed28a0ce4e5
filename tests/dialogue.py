"""Recorded SMTP dialogues (chasquid style), run in-process and through tcpserver.

File format (tests/dialogues/*.txt), one directive per line:
    # comment
    @control NAME VALUE      write control/NAME (VALUE may use \\n; no VALUE = empty file)
    @env NAME=VALUE          environment of qmail-smtpd
    @tcprules RULE           a tcprules line for tcpserver -x (in-process: the same cdb lookup)
    @checkpassword           AUTH is checked by tests/checkpassword.py (good@example.org / secret)
    @domain DOMAIN           a hosted domain in the home's users database (SQLite)
    @user ADDRESS PASSWORD [clear]   a mailbox user
    @poprelay IP [AGE]       a POP3 login from IP, AGE seconds ago (default now)
    @client IP [HOST]        the client's TCPREMOTEIP (and TCPREMOTEHOST); through tcpserver
                             this becomes a tcprules line for 127.0.0.1 (with @tcprules,
                             put TCPREMOTEIP=... into that line instead)
    @dns NAME TYPE VALUE     a record served by the test DNS server (tests/dnsserver.py) that
                             qmail-smtpd asks ($DNSCACHEIP); TYPE A AAAA MX TXT PTR CNAME NS;
                             MX VALUE is "PREF HOST", TXT VALUE the rest of the line
    @dns NAME BEHAVIOUR      SERVFAIL, REFUSED, NXDOMAIN or DROP (no answer: a time-out)
    @dns NAME TYPE BEHAVIOUR the same for one type only
                             ($DNSTIMEOUT defaults to 0.3 s in dialogues with @dns)
    C: text                  client sends text + CRLF
    C~ text                  client sends raw text with \\r \\n \\t \\0 \\xHH escapes, nothing added
    S: text                  expected server line; '*' matches any run of characters
    Q: F<sender> / T<rcpt>   envelope records of the next queued message
    M: line                  a line of that message as stored (after qmail-queue's own
                             Received line), '*' wildcards allowed
    Q: none                  nothing (more) was queued
    X: closed                the server has closed the connection
    L: pattern               a log line of the session, without "qmail-smtpd: PID ",
                             '*' wildcards; L lines must match log lines in this order
Client lines are grouped: each group of C lines is sent, then exactly the S
lines that follow it must arrive, in order.
"""
import os


def unescape(text):
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def wildmatch(pattern, text):
    """Does text match pattern, where '*' is any run of characters?"""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]):
        return False
    pos, end = len(parts[0]), len(text) - len(parts[-1])
    for part in parts[1:-1]:
        i = text.find(part, pos, end)
        if i < 0:
            return False
        pos = i + len(part)
    return pos <= end


class Dialogue:
    def __init__(self, path):
        self.name = os.path.basename(path)
        self.controls, self.env, self.tcprules = {}, {}, []
        self.steps = []            # [(client bytes, [expected server lines])]
        self.queued = []           # [(envelope records, message lines)]
        self.expect_closed = False
        self.checkpassword = False
        self.users = []
        self.client = None         # (ip, host or None)
        self.dns = {}              # zones for tests/dnsserver.py
        self.logs = []             # expected log line patterns
        with open(path, encoding="utf-8", newline="") as f:
            for line in f.read().split("\n"):
                self._parse(line)

    def _parse(self, line):
        if not line.strip() or line.startswith("#"):
            return
        if line.startswith("@control "):
            _, name, *value = line.split(" ", 2)
            self.controls[name] = (value[0].replace("\\n", "\n") + "\n") if value else ""
        elif line.startswith("@env "):
            name, _, value = line[5:].partition("=")
            self.env[name] = value
        elif line.split(" ")[0] in ("@domain", "@user", "@poprelay"):
            cmd, *args = line[1:].split(" ")
            self.users.append((cmd, args))
        elif line.startswith("@client "):
            words = line.split()[1:]
            self.client = (words[0], words[1] if len(words) > 1 else None)
        elif line.startswith("@dns "):
            self._dns(line[5:])
        elif line.startswith("L: "):
            self.logs.append(line[3:])
        elif line == "@checkpassword":
            self.checkpassword = True
        elif line.startswith("@tcprules "):
            self.tcprules.append(line[10:])
        elif line.startswith("C: ") or line == "C:":
            self._client(line[3:].encode("utf-8") + b"\r\n")
        elif line.startswith("C~ "):
            self._client(unescape(line[3:]))
        elif line.startswith("S: "):
            if not self.steps:
                self.steps.append((b"", []))
            self.steps[-1][1].append(line[3:])
        elif line.startswith("Q: "):
            record = line[3:]
            if record == "none":
                return
            if record.startswith("F"):
                self.queued.append(([record], []))
            else:
                self.queued[-1][0].append(record)
        elif line.startswith("M: ") or line == "M:":
            self.queued[-1][1].append(line[3:])
        elif line == "X: closed":
            self.expect_closed = True
        else:
            raise ValueError("%s: cannot parse %r" % (self.name, line))

    def _dns(self, text):
        from dnsserver import BEHAVIOURS
        words = text.split(" ", 2)
        name = words[0].lower()
        if len(words) == 2 and words[1] in BEHAVIOURS:
            self.dns[name] = words[1]
            return
        rtype, value = words[1].upper(), words[2] if len(words) > 2 else ""
        entry = self.dns.setdefault(name, {})
        if isinstance(entry, str):
            raise ValueError("%s: %s already has a behaviour" % (self.name, name))
        if value in BEHAVIOURS:
            entry[rtype] = value
        elif rtype == "CNAME":
            entry[rtype] = value
        elif rtype == "MX":
            pref, host = value.split(" ", 1)
            entry.setdefault(rtype, []).append((int(pref), host))
        else:
            entry.setdefault(rtype, []).append(value)

    def client_rule(self):
        """The tcprules line that makes tcpserver's client look like @client."""
        ip, host = self.client
        extra = ',TCPREMOTEHOST="%s"' % host if host else ""
        return '127.0.0.1:allow,TCPREMOTEIP="%s"%s' % (ip, extra)

    def _client(self, data):
        if self.steps and not self.steps[-1][1]:
            self.steps[-1] = (self.steps[-1][0] + data, [])
        else:
            self.steps.append((data, []))


def check_lines(got, expected, where):
    assert len(got) == len(expected), "%s: got %r, expected %r" % (where, got, expected)
    for g, e in zip(got, expected):
        assert wildmatch(e, g), "%s: got %r, expected %r" % (where, g, e)


def check_queued(dialogue, messages):
    """messages: [(envelope records as str list, message bytes)] in queue order."""
    assert len(messages) == len(dialogue.queued), "queued %d messages, expected %d" % (
        len(messages), len(dialogue.queued))
    for (records, body), (want_records, want_lines) in zip(messages, dialogue.queued):
        assert records == want_records
        lines = body.decode("utf-8", "surrogateescape").split("\n")
        assert lines[-1] == "", "message does not end with a line feed: %r" % body[-40:]
        check_lines(lines[:-1], want_lines, dialogue.name + " message")


def check_logs(lines, patterns, where):
    """Each pattern matches a log line, in order (other lines may come between)."""
    i = 0
    for pattern in patterns:
        while i < len(lines) and not wildmatch(pattern, lines[i]):
            i += 1
        assert i < len(lines), "%s: no log line matching %r after the previous one in %r" % (
            where, pattern, lines)
        i += 1
