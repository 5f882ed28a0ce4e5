"""The streamed bounce copy (issue 22): same bytes as before for honest MIME, bounded for hostile input,
and nothing of the bounced message in the bounce's own header."""
import io
import itertools
import tracemalloc

from hypothesis import given, settings, strategies as st

import bounce_oracle
from qmailpy.send import bounce, bouncecopy, mime
from test_send_bouncetext import DEFAULTS, NOW, compose
REPORT = b"<fail@x.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? "
TSPECIALS = set(" ()<>@,;:\\\"/[]?=")
FIXED_HEAD = [b"Date", b"From", b"To", b"Subject"]


class Trickle(io.BytesIO):
    """A file that hands out at most the next of `sizes` bytes per read (short reads, as pipes do)."""

    def __init__(self, data, sizes):
        super().__init__(data)
        self.sizes = itertools.cycle(sizes)

    def read(self, n=-1):
        return super().read(min(n, next(self.sizes)) if n >= 0 else next(self.sizes))


# -- honest MIME messages

boundaries = st.text(alphabet=BCHARS, min_size=1, max_size=70).filter(lambda b: not b.endswith(" "))
words = st.text(alphabet="abcdefgh XYZ-:<>/=;.'\"", max_size=24).map(lambda s: s.strip())
names = st.sampled_from(["Subject", "From", "X-Note", "Content-Disposition", "Content-Transfer-Encoding",
                         "Content-ID", "MIME-Version", "X-A"])


@st.composite
def messages(draw):
    nl = draw(st.sampled_from([b"\n", b"\r\n"]))
    used = set()

    def field():
        lines = [("%s: %s" % (draw(names), draw(words))).encode()]
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from([" ", "\t"])).encode() + draw(words).encode() + b"x")
        return lines

    def body_line():
        text = draw(st.one_of(words, st.sampled_from(["-- ", "--", "---", "--x", "--zz--", "- -"])))
        core = text.rstrip(" \t")
        for b in (core[2:], core[2:-2]):
            if text.startswith("--") and b in used:
                text = "text " + text                          # honest: never a delimiter of a boundary
        return text.encode()

    def content_type(media, boundary):
        quoted = draw(st.booleans()) or TSPECIALS & set(boundary) or boundary != boundary.strip()
        param = ('"%s"' % boundary if quoted else boundary).encode()
        if draw(st.booleans()):
            return [b"Content-Type: " + media + b";", b"\tboundary=" + param]
        return [b"Content-Type: " + media + b"; charset=us-ascii; boundary=" + param]

    def entity(depth, top):
        head = []
        for _ in range(draw(st.integers(0, 2))):
            head += field()
        multipart = depth < 3 and draw(st.booleans())
        if multipart:
            boundary = draw(boundaries.filter(lambda b: b not in used))
            used.add(boundary)
            head += content_type(draw(st.sampled_from([b"multipart/mixed", b"Multipart/Alternative"])), boundary)
        elif draw(st.booleans()):
            head.append(b"Content-Type: text/plain; charset=utf-8")
        for _ in range(draw(st.integers(0, 1 if top else 2))):
            head += field()
        lines = head + [b""]
        if not multipart:
            return lines + [body_line() for _ in range(draw(st.integers(0, 3)))]
        lines += [body_line() for _ in range(draw(st.integers(0, 2)))]          # preamble
        delim = b"--" + boundary.encode()
        for _ in range(draw(st.integers(1, 3))):
            lines.append(delim + draw(st.sampled_from([b"", b" ", b"\t ", b"  "])))
            lines += entity(depth + 1, False)
        if draw(st.integers(0, 5)):                                            # sometimes cut short
            lines.append(delim + b"--" + draw(st.sampled_from([b"", b" "])))
            lines += [body_line() for _ in range(draw(st.integers(0, 2)))]     # epilogue
        return lines

    lines = [b"Received: (qmail 1 invoked by uid 0); 26 Sep 1995 04:46:00 -0000"] + entity(0, True)
    return nl.join(lines) + (nl if draw(st.integers(0, 4)) else b"")


@settings(max_examples=400, deadline=None)
@given(messages(), st.sampled_from([b"joe@far.example", b""]), st.one_of(st.just(0), st.integers(1, 600)),
       st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_streamed_bounce_equals_the_old_one_for_honest_mime(mess, sender, maxbytes, sizes):
    s = DEFAULTS._replace(maxbytes=maxbytes)
    want = bounce_oracle.compose(NOW, sender, REPORT, mess, s)
    got = b"".join(bounce.chunks(NOW, sender, Trickle(REPORT, sizes), Trickle(mess, sizes), s))
    assert got == want
    assert bouncecopy.skeleton(mess) == bounce_oracle.skeleton(mess)


def test_oracle_cases_from_the_old_tests_still_hold():
    mess = (b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
            b"Content-Type: multipart/related;\n\tboundary=\"i\"\n\nignored\n--i\nX: 1\n\nbody\n"
            b"--o\nY: 2\n\nbody2\n--o--\nepilogue\n--o\nnot a part\n")
    assert bouncecopy.skeleton(mess) == bounce_oracle.skeleton(mess)
    for block in (1, 2, 3, 7, 64):
        f = Trickle(mess, [block])
        scan = mime.HeaderScan()
        list(bouncecopy.scan_chunks(f, scan))
        assert b"".join(bouncecopy.copy_chunks(f, scan, 0)) == bounce_oracle.skeleton(mess).copy


# -- the bounce's own header: fixed fields, nothing of the message above the copy line

def above_copy_line(got):
    head, sep, _ = got.partition(bounce.COPY_SEP)
    assert sep
    return head


def header_names(got):
    return [line.split(b":", 1)[0] for line in got.split(b"\n\n", 1)[0].split(b"\n")]


INJECTED = [
    b'"zz\\"\rSubject: Your invoice\rX-Injected: 1"',           # bare CR (the example)
    b'"zz\\"\nSubject: Your invoice"',                           # LF (cuts the header line)
    b'"zz\rSubject: Your invoice"',
    b'"zz\0Subject: Your invoice"',                              # NUL
    b'"zz\\"Subject: Your invoice\\""',                          # quotes
    b'"a\\\\b"',                                                 # backslash
    b'"' + b"a" * 200 + b'"',                                    # 200 bytes
    b"a" * 71,                                                   # 71 bytes
    b'"zz "',                                                    # ends with a space
    b'""',
]


def test_injected_boundaries_give_the_plain_bounce():
    for param in INJECTED:
        mess = (b"Subject: x\nContent-Type: multipart/mixed; boundary=" + param + b"\n\n"
                b"--zz\nContent-Type: text/html\n\n<h1>pay here</h1>\n--zz--\n")
        got = compose(NOW, b"joe@far.example", REPORT, mess, DEFAULTS)
        assert header_names(got) == FIXED_HEAD, param
        above = above_copy_line(got)
        assert b"\r" not in above and b"\0" not in above and b"invoice" not in above and b"Injected" not in above
        assert b"pay here" not in got
        # the copy is the message's header only (qmail's plain bounce, H-Sphere's body removal)
        assert got.endswith(b"Return-Path: <joe@far.example>\n" + mess.split(b"\n\n", 1)[0] + b"\n\n"), param


def test_boundary_limits():
    for ok in (b"a", b"a" * 70, b"'()+_,-./:=? a", b"x y"):
        assert mime.valid_boundary(ok), ok
    for bad in (b"", b"a" * 71, b"a ", b'a"b', b"a\\b", b"a\rb", b"a\nb", b"a\0b", b"a;b", b"a\xe9"):
        assert not mime.valid_boundary(bad), bad
    ok = mime.multipart_boundary(b'multipart/mixed; boundary="' + b"b" * 70 + b'"')
    assert ok == b"b" * 70


def test_the_original_sender_cannot_write_header_lines():
    for sender in (b"evil\rSubject: Your invoice@far.example", b"evil\0x@far.example", b"a\nSubject: x@y"):
        got = compose(NOW, sender, REPORT, b"Subject: x\n\nbody\n", DEFAULTS)
        assert header_names(got) == FIXED_HEAD
        above = above_copy_line(got)
        assert b"\r" not in above and b"\0" not in above and b"\nSubject: Your" not in above
    assert b"To: evil_Subject:_Your_invoice@far.example\n" not in got
    got = compose(NOW, b"evil\rx@far.example", REPORT, b"S: x\n\n", DEFAULTS)
    assert b"\nTo: evil_x@far.example\n" in got
    assert bounce.addbounce(b"a\rb\0c@x", b"no.\n") == b"<a_b_c@x>:\nno.\n\n"


PARTS = [
    (b"--zz\n<h1>pay here</h1>\nContent-Type: text/html\n\n<p>x</p>\n", b"--zz\n"),
    (b"--zz\nContent-Type: text/html\n<h1>pay here</h1>\nX-After: 1\n\n", b"--zz\nContent-Type: text/html\n"),
    (b"--zz\nX-A: b\r<h1>pay here</h1>\n\n", b"--zz\n"),                      # a bare CR would split the line
    (b"--zz\nX-A: b\0<h1>pay here</h1>\n\n", b"--zz\n"),
    (b"--zz\n <h1>pay here</h1>\n\n", b"--zz\n"),                               # a continuation of nothing
    (b"--zz\npay here: now\n\n", b"--zz\n"),                                   # no field name has a space
    (b"--zz\nX-A: 1\n continued\r\n\n", b"--zz\nX-A: 1\n continued\r\n\n"),
    (b"--zz\nX-A : obsolete form\n\n", b"--zz\nX-A : obsolete form\n\n"),
    (b"--zz\nX-A: b\n" + b"y" * (mime.LINE_MAX + 1) + b"\n\n", b"--zz\nX-A: b\n"),
]


def test_only_header_fields_are_kept_as_part_headers():
    head = b"Content-Type: multipart/mixed; boundary=zz\n\n"
    for part, kept in PARTS:
        mess = head + part + b"--zz--\nepilogue\n"
        got = bouncecopy.skeleton(mess)
        assert got == (head + kept + b"--zz--\n", b"zz"), part
        assert b"pay here" not in compose(NOW, b"joe@far.example", REPORT, mess, DEFAULTS)


def test_long_lines_and_deep_nesting():
    head = b"Content-Type: multipart/mixed; boundary=b0\n\n"
    deep = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(100))
    got = bouncecopy.skeleton(head + deep + b"--b99\nX: 1\n\n--b60\nX: 2\n\n--b0--\n")
    # b0..b63 are followed; b64 and deeper are not (DEPTH_MAX), so their parts are body
    kept = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
                    for i in range(bouncecopy.DEPTH_MAX))
    assert got.copy == head + kept + b"--b60\nX: 2\n\n--b0--\n"
    # a delimiter longer than LINE_MAX is none; a Content-Type too long is no multipart
    pad = b" " * (mime.LINE_MAX + 1)
    assert bouncecopy.skeleton(b"Content-Type: multipart/mixed; boundary=zz\n\n--zz" + pad + b"\nX: 1\n\n--zz--\n") \
        == (b"Content-Type: multipart/mixed; boundary=zz\n\n--zz--\n", b"zz")
    long_ct = b"Content-Type: multipart/mixed; x=\"" + b"x" * mime.FIELD_MAX + b"\"; boundary=zz\n\n--zz--\n"
    assert bouncecopy.skeleton(long_ct) == (long_ct.split(b"\n\n")[0] + b"\n\n", None)
    # a header of one long line of CRs ends like an empty line
    crs = b"S: x\n" + b"\r" * (mime.LINE_MAX + 5) + b"\nbody\n"
    assert bouncecopy.skeleton(crs) == (crs[:-5], None)


# -- bounded work and memory

def hostile_blocks(size, block=bouncecopy.BLOCK):
    """A hostile message made as it is read: 6,000 nested multiparts, then boundary-like lines."""
    data = bytearray(b"Content-Type: multipart/mixed; boundary=b0\n\n")
    for i in range(6000):
        data += b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
    sent = 0
    n = 0
    while sent < size:
        while len(data) < block:
            data += b"--zz\n--b%d\n--b0 \n" % (n % 7000) if n % 3 else b"--zz\n"
            n += 1
        out, data = bytes(data[:block]), data[block:]
        sent += len(out)
        yield out


class Blocks:
    """A read()-able stream over a block generator, rewound by making the generator again."""

    def __init__(self, make):
        self.make = make
        self.it = make()

    def read(self, n):
        return next(self.it, b"")

    def seek(self, pos):
        assert pos == 0
        self.it = self.make()


def test_hostile_message_bounded_memory_and_chunks():
    size = 1024 * 1024
    tracemalloc.start()
    try:
        mess = Blocks(lambda: hostile_blocks(size))
        biggest = total = 0
        for chunk in bounce.chunks(NOW, b"joe@far.example", io.BytesIO(REPORT), mess, DEFAULTS):
            biggest, total = max(biggest, len(chunk)), total + len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert biggest <= 2 * bouncecopy.BLOCK
    assert total > 30000                        # every "--b0 " line is a delimiter of the top
    assert peak < 2 * 1024 * 1024, peak
    # one line of 10 MB, 10 MB of newlines: still bounded, still one pass
    for make in (lambda: iter([b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\n"] +
                              [b"x" * bouncecopy.BLOCK] * 160),
                 lambda: iter([b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nA: b\n\n"] +
                              [b"\n" * bouncecopy.BLOCK] * 160)):
        tracemalloc.start()
        try:
            out = b"".join(bounce.chunks(NOW, b"joe@far.example", io.BytesIO(REPORT), Blocks(make), DEFAULTS))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert out.endswith(b"--zz\n") or out.endswith(b"A: b\n\n")
        assert peak < 2 * 1024 * 1024, peak


def test_report_only_bounce():
    mess = b"Subject: X5O!P%@AP\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\n\nbody\n--zz--\n"
    got = compose(NOW, b"joe@far.example", REPORT, mess, DEFAULTS, copy=False)
    assert got == (b"Date: 26 Sep 1995 04:46:34 -0000\nFrom: MAILER-DAEMON@mx.example.org\n"
                   b"To: joe@far.example\nSubject: failure notice\n\n"
                   b"Hi. This is the qmail-send program at mx.example.org.\n"
                   b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                   b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n" + REPORT +
                   b"--- The copy of the message is left out: the mail server refused it.\n")
    double = compose(NOW, b"", REPORT, mess, DEFAULTS, copy=False)
    assert double.endswith(REPORT + bounce.NOCOPY_SEP) and b"X5O" not in double


def test_boundary_parameters_that_give_no_boundary():
    """A parameter without '=' ends the parameters (a malformed Content-Type: no MIME skeleton),
    and a multipart type without a boundary parameter has none."""
    assert mime.boundary_param(b"multipart/mixed; charset=us-ascii; format") is None
    assert mime.boundary_param(b"multipart/mixed; charset=us-ascii") is None
    assert mime.boundary_param(b"multipart/mixed; charset=us-ascii; boundary=zz") == b"zz"


def scan(blocks):
    """HeaderScan over the message given in these blocks: (header end, boundary)."""
    s = mime.HeaderScan()
    for block in blocks:
        s.feed(block)
    s.finish()
    return s.end, s.boundary


CT = b"Content-Type: multipart/mixed; boundary=zz\n"


def test_a_long_line_of_crs_cut_across_blocks_is_blank_only_when_all_crs():
    crs = b"\r" * (mime.LINE_MAX + 1)
    assert scan([CT + crs, b"\r\r\n", b"--zz--\n"]) == (len(CT) + len(crs) + 3, b"zz")
    assert scan([CT + crs, b"\rx\n", b"\n--zz--\n"]) == (len(CT) + len(crs) + 4, b"zz")


def test_a_line_longer_than_line_max_inside_one_block():
    lines = mime.Lines()
    long = b"X-Long: " + b"y" * mime.LINE_MAX + b"\n"
    got = list(lines.feed(b"A: 1\n" + long + b"B: 2\n"))
    assert [type(x) for x in got] == [bytes, mime.Long, bytes]
    assert got[1].head == long[:mime.HEAD] and not got[1].blank
    assert (got[0], got[2], lines.at) == (b"A: 1\n", b"B: 2\n", 5 + len(long) + 5)


def test_content_type_lines_too_long_to_trust_give_no_boundary():
    """Beyond LINE_MAX or FIELD_MAX a Content-Type is not looked at: no boundary, so the bounce
    carries no MIME skeleton built on a value cut short."""
    long_ct = b"Content-Type: multipart/mixed; boundary=zz; x=" + b"y" * mime.LINE_MAX + b"\n\n"
    assert scan([long_ct]) == (len(long_ct), None)
    long_fold = b"Content-Type: multipart/mixed; boundary=zz;\n x=" + b"y" * mime.LINE_MAX + b"\n\n"
    assert scan([long_fold]) == (len(long_fold), None)
    # a long line of another field after Content-Type ends it, and its boundary stands
    after = CT + b"X-Other: " + b"y" * mime.LINE_MAX + b"\n\n"
    assert scan([after]) == (len(after), b"zz")
    folds = b"Content-Type: multipart/mixed; boundary=zz;\n" + b" x=y\n" * (mime.FIELD_MAX // 4) + b"\n"
    assert scan([folds]) == (len(folds), None)


def test_a_multipart_nested_in_one_with_the_same_boundary():
    """RFC 2046 forbids it, but a message may: the innermost open one is closed first, and the
    outer one goes on with the parts after it (as the old skeleton did)."""
    mess = (b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: multipart/mixed; boundary=zz\n\n"
            b"--zz\nX: 1\n\nbody1\n--zz--\n--zz\nX: 2\n\nbody2\n--zz--\nepilogue\n")
    assert bouncecopy.skeleton(mess) == (
        b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: multipart/mixed; boundary=zz\n\n"
        b"--zz\nX: 1\n\n--zz--\n--zz\nX: 2\n\n--zz--\n", b"zz")
    assert bouncecopy.skeleton(mess) == bounce_oracle.skeleton(mess)
