"""SMTP DATA decoding: qmail-smtpd's blast() as an incremental, sans-IO reader.

The caller feeds whatever the socket gave it; feed() returns how many bytes it
took, stopping right after the end-of-data terminator, so the rest is the next
pipelined command. take() hands over the message (LF line endings) to stream to
qmail-queue.

What ends the message (the SMTP smuggling defence, reference section 10):

* strict (default; qmail 1.03/netqmail/notqmail byte for byte): only
  <CR><LF>.<CR><LF> (the message start counts as just after CRLF). A bare LF
  anywhere sets error='straylf' and stops: the caller replies 451 and drops the
  connection, as qmail does.
* bare_lf_ok (newline=1 but the client sent a CRLF DATA line): still only
  <CR><LF>.<CR><LF>. A bare LF is stored as a line break but is NOT a line
  start, so <LF>.<LF>, <CR><LF>.<LF>, <LF>.<CR><LF> and <CR>.<CR> never end the
  message; they stay in it ("\\n.\\n", ".\\n", "\\n.\\n", "\\r.\\r").
* lf_mode (newline=1 and the DATA line itself ended in a bare LF: an LF-only
  client, never a relay): LF and CRLF are both line ends; a line "." ended by
  LF or CRLF ends the message. <CR>.<CR> still does not.

What is stored (all modes): CRLF (and, outside strict mode, a bare LF) becomes
LF; a leading dot is removed (un-stuffing), except that "." + CR + non-LF at a
line start is kept as ".\\r" and, in bare_lf_ok, "." + bare LF as ".\\n"; a CR
not followed by LF is kept. Long lines and NUL bytes pass through unchanged,
as in qmail: only databytes bounds the size (the session must also bound
command lines). Counting (size, databytes, hops) follows blast(): size and
databytes count stored bytes; hops counts raw lines starting with "received"
or "delivered" (any case) before the first empty line (an LF-only empty line
ends the header too outside strict mode); a line is counted once its LF has
been fed, so hops is final when done.

Speed: whole lines are converted by bytes.find/count/replace in C (CRLF -> LF,
lone CRs kept, line-start dots dropped); only a line-start "." followed by CR
or LF, a CR at a chunk end and, in strict mode, a bare LF reach the per-byte
machine, and a partial last line is copied up to its next CR/LF.
"""

_LF, _CR, _DOT = 10, 13, 46
_BYTE = [bytes((i,)) for i in range(256)]
_END, _ERR = -1, -2
STRICT, BARE_LF_OK, LF_MODE = 0, 1, 2


def _step(mode, st, c, put):
    """One byte through blast(); returns the new state, _END or _ERR.

    States as in qmail: 0 mid-line, 1 line start, 2 after line-start ".",
    3 after line-start ".\\r", 4 after a withheld CR.
    """
    if c == _LF:
        if st == 4:
            put(b"\n")
            return 1
        if st == 3:
            return _END
        if mode == LF_MODE:
            if st == 2:
                return _END
            put(b"\n")
            return 1
        if mode == BARE_LF_OK:
            put(b".\n" if st == 2 else b"\n")
            return 0
        return _ERR
    if c == _CR:
        if st == 2:
            return 3
        if st == 3:
            put(b".\r")
        elif st == 4:
            put(b"\r")
        return 4
    if st == 1 and c == _DOT:
        return 2
    if st == 3:
        put(b".\r")
    elif st == 4:
        put(b"\r")
    put(_BYTE[c])
    return 0


# Per mode: the two patterns whose dot needs the state machine, and how the bulk
# path un-stuffs the other line-start dots (a line starts after CRLF, or after
# any LF in lf_mode). Dropping the dot never creates a new CRLF: the byte left
# of it is LF.
_BULK = {
    STRICT: (b"\r\n.\r", b"\r\n.\n", b"\r\n.", b"\r\n"),
    BARE_LF_OK: (b"\r\n.\r", b"\r\n.\n", b"\r\n.", b"\r\n"),
    LF_MODE: (b"\n.\r", b"\n.\n", b"\n.", b"\n"),
}


class DataReader:
    """Incremental DATA decoder; see the module docstring for the rules.

    Attributes: done, error (None or 'straylf'), toobig, toomanyhops, hops,
    size (stored bytes, counted even when toobig).

    counted: bytes written before the message that count against databytes
    too (the qmail-spf patch's Received-SPF line; qmail-smtpd's own Received
    line does not count). Counted larger than databytes is too big at once
    (qmail-spf's `bytestooverflow <= 0`).
    """

    def __init__(self, lf_mode=False, bare_lf_ok=False, databytes=0, maxhops=100, counted=0):
        self.mode = LF_MODE if lf_mode else BARE_LF_OK if bare_lf_ok else STRICT
        self.databytes = databytes
        self._room = databytes - counted if databytes > 0 else None    # None: no limit
        self.maxhops = maxhops
        self.done = False
        self.error = None
        self.toobig = self._room is not None and self._room < 0
        self.hops = 0
        self.toomanyhops = maxhops <= 0
        self.size = 0
        self._st = 1
        self._out = []
        self._hl = b""          # start of the current raw header line; None after it

    def feed(self, data):
        """Consume data; return the number of bytes used (0 once done or failed)."""
        if self.done or self.error is not None or not data:
            return 0
        if not isinstance(data, bytes):
            data = bytes(data)
        out = []
        n = self._decode(data, out)
        if self._hl is not None:
            self._count_hops(data if n == len(data) else data[:n])
        if out:
            self.size += sum(map(len, out))
            if self.toobig:
                pass
            elif self._room is not None and self.size > self._room:
                self.toobig = True          # qmail_fail(): read on, store nothing
                self._out.clear()
            else:
                self._out.extend(out)
        return n

    def take(self):
        """Return and forget the message bytes produced so far (b"" once toobig)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def _decode(self, data, out):
        n = len(data)
        mode = self.mode
        put = out.append
        st = self._st
        pa, pb, strip, keep = _BULK[mode]
        off = len(strip) - 1    # where the dot sits in pa/pb
        i = 0
        bulk_end = 0            # retry the bulk path once i reaches this
        na = nb = ncr = nlf = -1    # cached next positions: keeps every scan linear
        while i < n:
            if st > 1 or (st == 1 and data[i] == _DOT):
                st = _step(mode, st, data[i], put)
                i += 1
                if st < 0:
                    break
                continue
            if i >= bulk_end:
                # Bulk: whole lines up to the next line-start dot that needs the
                # state machine (".\r", ".\n"), converted in C. Lone CRs are kept
                # and other line-start dots dropped, exactly as blast() does.
                if na < i:
                    na = data.find(pa, i)
                    na = n if na < 0 else na + off
                if nb < i:
                    nb = data.find(pb, i)
                    nb = n if nb < 0 else nb + off
                k = na if na < nb else nb
                if k >= n:
                    k = data.rfind(b"\n", i) + 1
                if k > i:
                    if mode or data.count(b"\n", i, k) == data.count(b"\r\n", i, k):
                        r = data[i:k]
                        st = 0 if mode == BARE_LF_OK and not r.endswith(b"\r\n") else 1
                        put(r.replace(strip, keep).replace(b"\r\n", b"\n"))
                        i = k
                        continue
                    bulk_end = k        # strict and a bare LF in there: find it below
                else:
                    bulk_end = n
            # Medium: copy up to the next CR or LF, then handle that byte.
            if ncr < i:
                ncr = data.find(b"\r", i)
                if ncr < 0:
                    ncr = n
            if nlf < i:
                nlf = data.find(b"\n", i)
                if nlf < 0:
                    nlf = n
            k = ncr if ncr < nlf else nlf
            if k > i:
                put(data[i:k])
                st = 0
                i = k
                if i == n:
                    break
            if k == ncr and k + 1 < n and data[k + 1] == _LF:
                put(b"\n")
                st = 1
                i = k + 2
            else:
                st = _step(mode, st, data[i], put)
                i += 1
                if st < 0:
                    break
        if st == _END:
            self.done = True
        elif st == _ERR:
            self.error = "straylf"
        else:
            self._st = st
        return i

    def _count_hops(self, chunk):
        """blast()'s hop count on raw input, done with bytes.count per chunk."""
        text = (b"\n" + self._hl + chunk).lower()
        end = text.find(b"\n\r\n")
        if self.mode:
            e2 = text.find(b"\n\n")
            if e2 >= 0 and (end < 0 or e2 < end):
                end = e2
        if end >= 0:
            self._hl = None
        else:
            end = text.rfind(b"\n")
            self._hl = text[end + 1:end + 10]
        self.hops += text.count(b"\nreceived", 0, end) + text.count(b"\ndelivered", 0, end)
        if self.hops >= self.maxhops:
            self.toomanyhops = True
            self._hl = None
