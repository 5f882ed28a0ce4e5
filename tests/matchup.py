"""qmailanalog's matchup, line for line in Python: how admins read qmail-send's log.

matchup (qmailanalog 0.70, matchup.c) reads a timestamped qmail-send log and
pairs each `delivery N:` line with its `starting delivery N:` line and that
message's `info msg` line; `end msg` closes the message. Its output feeds
zoverall, zddist, zrhosts, zsenders...:
  m <birth> <done> <bytes> <numk> <numd> <numz> <sender> <qp> <uid>
  d <k|d|z> <birth> <dstart> <ddone> <bytes> <sender> <chan>.<recip> <qp> <uid> <reason>
(a delivery of an unknown message: `d k <dstart> <dstart> <ddone> 0 ? <chan>.<recip> ? ? ...`),
`warning:`/`alert:` lines as they are, any other unknown line as `? <line>`.
What is still open at the end (messages, deliveries) is what matchup writes to
fd 5 for the next run: `pending()`. Fields are split on space, tab and newline,
20 at most, a missing one empty, as in the C code.
"""

FIELDS = 20


def _ulong(text):
    """scan_ulong(): the leading digits, 0 without any."""
    n = 0
    for ch in text:
        if not "0" <= ch <= "9":
            break
        n = n * 10 + ord(ch) - 48
    return n


def _fields(line):
    words = line.replace("\t", " ").replace("\n", " ").split(" ")
    words = [w for w in words if w]
    return (words + [""] * FIELDS)[:FIELDS]


class Matchup:
    def __init__(self):
        self.msgs = {}          # id -> dict(birth, bytes, sender, qp, uid, k, d, z)
        self.dels = {}          # delivery number -> dict(msg, start, chan, recip)
        self.out = []

    def feed(self, line):
        """One log line (with its timestamp as the first field)."""
        f = _fields(line)
        what = f[1]
        if what == "status:" or what in ("number", "local", "remote"):
            return
        handler = {"starting": self._starting, "delivery": self._delivery, "new": self._new,
                   "end": self._end, "info": self._info, "extra": self._extra,
                   "running": self._clear, "exiting": self._clear}.get(what)
        if handler is not None:
            handler(f)
        elif what in ("warning:", "alert:"):
            self.out.append(line)
        else:
            self.out.append("? " + line)

    def _clear(self, f):
        self.dels.clear()

    def _starting(self, f):
        self.dels[_ulong(f[3])] = dict(msg=_ulong(f[5]), start=f[0], chan=f[7], recip=f[8].lower())

    def _delivery(self, f):
        d = self.dels.pop(_ulong(f[2]), None)
        if d is None:
            return
        m = self.msgs.get(d["msg"])
        word = f[3]
        if word.startswith("succ"):
            kind, reason = "k", f[4]
        elif word.startswith("fail"):
            kind, reason = "d", f[4]
        elif word.startswith("defer"):
            kind, reason = "z", f[4]
        elif word.startswith("report"):
            kind, reason = "z", "report_mangled"
        else:
            kind, reason = None, ""
        if m is not None and kind is not None:
            m[kind] += 1
        result = "d %s " % kind if kind else "?"
        if m is not None:
            self.out.append(result + " ".join([m["birth"], d["start"], f[0], str(m["bytes"]), m["sender"],
                                               d["chan"] + "." + d["recip"], str(m["qp"]), str(m["uid"]),
                                               reason]))
        else:
            self.out.append(result + " ".join([d["start"], d["start"], f[0], "0", "?",
                                               d["chan"] + "." + d["recip"], "?", "?", reason]))

    def _new(self, f):
        self.msgs.pop(_ulong(f[3]), None)

    def _end(self, f):
        m = self.msgs.pop(_ulong(f[3]), None)
        if m is None:
            return
        self.out.append("m " + " ".join([m["birth"], f[0], str(m["bytes"]), str(m["k"]), str(m["d"]),
                                         str(m["z"]), m["sender"], str(m["qp"]), str(m["uid"])]))

    def _info(self, f):
        self.msgs[_ulong(f[3])] = dict(birth=f[0], bytes=_ulong(f[5]), sender=f[7].lower(),
                                       qp=_ulong(f[9]), uid=_ulong(f[11]), k=0, d=0, z=0)

    def _extra(self, f):
        m = self.msgs.get(_ulong(f[2]))
        if m is not None:
            m["k"], m["z"], m["d"] = _ulong(f[3]), _ulong(f[4]), _ulong(f[5])

    def pending(self):
        """What matchup writes to fd 5 at the end: the messages and deliveries still open."""
        out = []
        for msgid, m in self.msgs.items():
            out.append("%s info msg %d: bytes %d from %s qp %d uid %d"
                       % (m["birth"], msgid, m["bytes"], m["sender"], m["qp"], m["uid"]))
            out.append("%s extra %d %d %d %d" % (m["birth"], msgid, m["k"], m["z"], m["d"]))
        for delid, d in self.dels.items():
            out.append("%s starting delivery %d: msg %d to %s %s"
                       % (d["start"], delid, d["msg"], d["chan"], d["recip"]))
        return out


def run(lines):
    """(matchup's output lines, its pending lines) for a log's lines."""
    m = Matchup()
    for line in lines:
        m.feed(line)
    return m.out, m.pending()
