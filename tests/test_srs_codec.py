"""qmailpy.srs.codec against the reference: the Debian `srs` command (Mail::SRS 0.31, Guarded).

Each batch runs `srs` once for one secret/alias/separator/hash length with
many addresses (the command dies on the first address it cannot rewrite, so
batches hold only addresses it accepts).
"""
import random
import shutil
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from qmailpy.srs import codec as C

DAY = 86400


@pytest.fixture(scope="module")
def srs():
    path = shutil.which("srs")
    assert path, "the reference `srs` command is missing: apt-get install srs (Debian package srs)"
    return path


def run_srs(srs, args, addresses, check=True):
    p = subprocess.run([srs, *args, "--", *addresses], capture_output=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def same_day(fn):
    """fn(now) where `now` and the reference's clock fall on the same day (retry at midnight)."""
    for _ in range(3):
        before = time.time()
        out = fn(before)
        if C.days(before) == C.days(time.time()):
            return out, before
    raise AssertionError("day changed three times")


# -- generated inputs

LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-=!#$%&'*/?^`{|}~"
HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
SECRET_CHARS = LOCAL_CHARS + " @\"\\()<>,;:[]\u00e9\u00c9\u00df"


def rnd_host(r):
    labels = ["".join(r.choice(HOST_CHARS) for _ in range(r.randint(1, 10))) for _ in range(r.randint(1, 3))]
    return ".".join(labels + [r.choice(["com", "ORG", "Net", "example", "co.uk"])])


def rnd_local(r):
    s = "".join(r.choice(LOCAL_CHARS) for _ in range(r.randint(1, 16)))
    if r.random() < 0.1:
        s += "\u00c9\u00e8"                     # non-ASCII: never lower-cased
    return s


def rnd_hash(r):
    return "".join(r.choice(C.BASE32 + "abcdefghijklmnopqrstuvwxyz+/") for _ in range(r.randint(2, 6)))


def rnd_sender(r, alias_host):
    kind = r.random()
    sep = r.choice(C.SEPARATORS)
    tag0 = r.choice(["SRS0", "srs0", "Srs0"])
    tag1 = r.choice(["SRS1", "srs1", "sRs1"])
    if kind < 0.55:
        return "%s@%s" % (rnd_local(r), rnd_host(r))
    if kind < 0.75:     # an SRS0 address of another forwarder -> SRS1
        return "%s%s%s=%s=%s=%s@%s" % (tag0, sep, rnd_hash(r), r.choice(C.BASE32) + r.choice(C.BASE32),
                                       rnd_host(r), rnd_local(r), rnd_host(r))
    if kind < 0.92:     # an SRS1 address -> re-signed, first host kept
        inner = "%s=%s=%s=%s" % (rnd_hash(r), "AB", rnd_host(r), rnd_local(r))
        return "%s%s%s=%s=%s%s@%s" % (tag1, sep, rnd_hash(r), rnd_host(r), r.choice(C.SEPARATORS), inner,
                                      rnd_host(r))
    if kind < 0.96:     # already at the alias host: unchanged
        return "%s@%s" % (rnd_local(r), alias_host.swapcase())
    return "%s@%s" % (r.choice(["SRS0", "SRS1", "SRS2", "SRS0x", "srs"]) + rnd_local(r), rnd_host(r))


def rnd_secret(r):
    return "".join(r.choice(SECRET_CHARS) for _ in range(r.randint(1, 40)))


# -- forward: byte-identical with the reference

def test_forward_matches_reference(srs):
    r = random.Random(20240611)
    batches = []
    for i in range(60):
        secret = rnd_secret(r)
        alias = rnd_host(r)
        alias_arg = alias if i % 3 else "postmaster@" + alias
        sep = C.SEPARATORS[i % 3]
        length = [4, 4, 4, 1, 2, 6, 8, 27][i % 8]
        senders = [rnd_sender(r, alias) for _ in range(12)]
        batches.append((secret, alias_arg, sep, length, senders))
    total = srs1 = 0

    def compare(now):
        nonlocal total, srs1
        for secret, alias_arg, sep, length, senders in batches:
            args = ["--secret=" + secret, "--alias=" + alias_arg, "--separator=" + sep]
            if length != 4:
                args.append("--hashlength=%d" % length)
            want = run_srs(srs, args, senders).stdout.decode("utf-8", "surrogateescape").split("\n")[:-1]
            got = [C.forward(s, alias_arg, [secret], now, hashlength=length, separator=sep) for s in senders]
            assert got == want, (secret, alias_arg, sep, length)
            total += len(got)
            srs1 += sum(g.startswith("SRS1") for g in got)
        return total

    same_day(compare)
    assert total >= 700 and srs1 >= 100


def test_forward_srs1_layout():
    now = 20000 * DAY
    a = C.forward("user@example.com", "fwd1.org", ["k1"], now)
    h, stamp = a.split("=")[1:3]
    assert a == "SRS0=%s=%s=example.com=user@fwd1.org" % (h, stamp) and stamp == C.timestamp(now)
    b = C.forward(a, "fwd2.net", ["k2"], now)
    g = b.split("=")[1]
    assert b == "SRS1=%s=fwd1.org==%s=%s=example.com=user@fwd2.net" % (g, h, stamp)
    c = C.forward(b, "fwd3.net", ["k3"], now)
    g3 = C.make_hash("k3", ("fwd1.org", "=%s=%s=example.com=user" % (h, stamp)))
    assert c == "SRS1=%s=fwd1.org==%s=%s=example.com=user@fwd3.net" % (g3, h, stamp)
    assert C.reverse(c, ["k3"], now) == "SRS0=%s=%s=example.com=user@fwd1.org" % (h, stamp)
    assert C.reverse(C.reverse(c, ["k3"], now), ["k1"], now) == "user@example.com"


# -- reverse: what the reference accepts, we accept, with the same result

def ascii_swap(ch):
    return ch.swapcase() if ch.isascii() else ch


def case_variants(addr, r):
    """The local part in lower, upper and mixed case (ASCII only: Perl's lc leaves the rest)."""
    local, _, host = addr.rpartition("@")
    return ["".join(ch.lower() if ch.isascii() else ch for ch in local) + "@" + host,
            "".join(ch.upper() if ch.isascii() else ch for ch in local) + "@" + host,
            "".join(ascii_swap(ch) if r.random() < 0.5 else ch for ch in local) + "@" + host]


def test_reverse_matches_reference(srs):
    r = random.Random(77)
    keys = [rnd_secret(r) for _ in range(6)]          # newest first
    cases = []

    def build(now):
        cases.clear()
        for i in range(40):
            k = keys[i % len(keys)]
            made = C.forward("%s@%s" % (rnd_local(r), rnd_host(r)), "srs.example.net", [k], now)
            if i % 4 == 0:
                made = C.forward("SRS0=abcd=%s=%s=%s@%s" % (C.timestamp(now), rnd_host(r), rnd_local(r), rnd_host(r)),
                                 "srs.example.net", [k], now)
            cases.append(made)
            cases.extend(case_variants(made, r))
        args = ["--reverse"] + ["--secret=" + k for k in keys]
        want = run_srs(srs, args, cases).stdout.decode("utf-8", "surrogateescape").split("\n")[:-1]
        got = [C.reverse(a, keys, now) for a in cases]
        assert got == want
        return len(got)

    n, _ = same_day(build)
    assert n == 160


def test_reverse_refused_by_both(srs):
    r = random.Random(5)
    now = time.time()
    good = C.forward("joe@example.com", "srs.example.net", ["right"], now)
    forged = [good.replace(good.split("=")[1], "AAAA", 1),
              good.split("@")[0] + "x@srs.example.net",            # user changed
              good.replace("example.com", "example.org"),          # host changed
              "SRS0=%s@x" % rnd_local(r),                          # fields missing
              "SRS1=abcd=host@x",
              "joe@example.com"]
    for a in forged:
        p = run_srs(srs, ["--reverse", "--secret=right"], [a], check=False)
        assert p.returncode != 0 and p.stdout == b"", a
        with pytest.raises(C.SRSError):
            C.reverse(a, ["right"], now)
    with pytest.raises(C.SRSError, match="Hash invalid"):
        C.reverse(good, ["wrong", "also-wrong"], now)
    with pytest.raises(C.SRSError, match="Not an SRS address"):
        C.reverse("joe@example.com", ["right"], now)
    with pytest.raises(C.SRSError, match="Hash too short"):
        C.reverse(good.replace(good.split("=")[1], good.split("=")[1][:3], 1), ["right"], now)


def test_expiry_matches_reference(srs):
    """Mail::SRS's default MaxAge is 21 days: the same addresses live and die in both."""
    def check(now):
        made = {d: C.forward("old%d@example.com" % d, "srs.example.net", ["s"], now - d * DAY)
                for d in list(range(-3, 26)) + [500, 1000, 1023, 1024, 1030]}
        live = [a for d, a in made.items() if 0 <= d <= 21 or 1024 <= d <= 1024 + 21]
        assert run_srs(srs, ["--reverse", "--secret=s"], live).returncode == 0
        for d, a in made.items():
            ours = True
            try:
                C.reverse(a, ["s"], now, max_age_days=21)
            except C.SRSError as e:
                assert e.expired, e
                ours = False
            if a not in live:
                p = run_srs(srs, ["--reverse", "--secret=s"], [a], check=False)
                assert p.returncode != 0 and b"Invalid timestamp" in p.stderr, d
            assert ours == (a in live), d
        return True
    same_day(check)


# -- rotation, wrap-around, properties

def test_rotation_three_keys():
    now = 19000 * DAY + 5000
    oldest = C.forward("a@example.com", "srs.example.net", ["k3"], now - 5 * DAY)
    middle = C.forward("b@example.com", "srs.example.net", ["k2", "k3"], now - 2 * DAY)
    newest = C.forward("c@example.com", "srs.example.net", ["k1", "k2", "k3"], now)
    keys = ["k1", "k2", "k3"]
    assert [C.reverse(a, keys, now) for a in (oldest, middle, newest)] == \
        ["a@example.com", "b@example.com", "c@example.com"]
    assert C.hash_match(oldest.split("=")[1], keys, oldest.split("@")[0].split("=")[2:]) == 2
    with pytest.raises(C.SRSError, match="Hash invalid"):
        C.reverse(oldest, ["k1", "k2"], now)                 # its key was dropped


def test_timestamp_encoding_and_wrap():
    assert C.timestamp(0) == "AA"
    assert C.timestamp(DAY * 31) == "A7"
    assert C.timestamp(DAY * 32) == "BA"
    assert C.timestamp(DAY * 1023) == "77"
    assert C.timestamp(DAY * 1024) == "AA"                   # 10 bits: wraps
    assert C.timestamp_value("77") == 1023 and C.timestamp_value("bA") == 32
    with pytest.raises(C.SRSError, match="Bad base32"):
        C.timestamp_value("A1")
    # made on day 1020 (counter "74"), read on day 1030 (counter 6): 10 days old
    made = C.forward("u@example.com", "srs.example", ["k"], 1020 * DAY + 1)
    assert made.split("=")[2] == C.timestamp(1020 * DAY)
    assert C.reverse(made, ["k"], 1030 * DAY, max_age_days=10) == "u@example.com"
    with pytest.raises(C.SRSError, match="Time stamp out of date"):
        C.reverse(made, ["k"], 1031 * DAY, max_age_days=10)
    # a stamp from "tomorrow" reads as 1023 days old
    assert not C.timestamp_ok(C.timestamp(5 * DAY), 4 * DAY, 30)
    assert C.timestamp_ok(C.timestamp(5 * DAY), 4 * DAY, 1023)
    # and exactly 1024 days later an address looks new again (a 10-bit counter)
    assert C.timestamp_ok(C.timestamp(5 * DAY), (5 + 1024) * DAY, 0)


def test_max_age_days_rounds_up():
    assert C.max_age_days(2592000) == 30
    assert C.max_age_days(2592001) == 31
    assert C.max_age_days(1) == 1 and C.max_age_days(0) == 0


def test_case_insensitive_hash_and_timestamp():
    now = 20100 * DAY
    a = C.forward("Joe@Example.COM", "srs.example", ["k"], now)
    assert C.reverse(a.lower(), ["k"], now) == "joe@example.com"
    assert C.reverse(a.upper(), ["k"], now) == "JOE@EXAMPLE.COM"
    assert C.reverse(a, ["k"], now) == "Joe@Example.COM"


def test_errors_and_unchanged():
    now = 20100 * DAY
    with pytest.raises(C.SRSError, match="No at sign"):
        C.forward("nobody", "srs.example", ["k"], now)
    with pytest.raises(C.SRSError, match="may not contain an @"):
        C.forward("a@b@c", "srs.example", ["k"], now)
    with pytest.raises(C.SRSError, match="No secrets"):
        C.forward("a@b", "srs.example", [], now)
    with pytest.raises(C.SRSError, match="separator"):
        C.forward("a@b", "srs.example", ["k"], now, separator="x")
    assert C.forward("a@SRS.example", "srs.example", ["k"], now) == "a@SRS.example"
    assert C.forward("a@srs.example", "srs.example", ["k"], now, always_rewrite=True).startswith("SRS0=")
    # an SRS1 sender without its three fields is signed as a plain local part
    assert C.forward("SRS1=xx@h.org", "srs.example", ["k"], now).startswith("SRS0=")
    with pytest.raises(C.SRSError, match="Hashless SRS1"):
        C.reverse("SRS1=host.org=x=y@srs.example", ["k"], now)
    for bad, text in [("SRS0=@x", "No hash in SRS0"), ("SRS0=abcd@x", "No timestamp in SRS0"),
                      ("SRS0=abcd=AA@x", "No host in SRS0"), ("SRS0=abcd=AA=h@x", "No user in SRS0"),
                      ("SRS1=@x", "No hash in SRS1"), ("SRS1=abcd@x", "No host in SRS1"),
                      ("SRS1=abcd=h@x", "No user in SRS1"), ("SRS2=abcd=h@x", "Not an SRS")]:
        with pytest.raises(C.SRSError, match=text):
            C.reverse(bad, ["k"], now)


addresses = st.tuples(st.text(alphabet=LOCAL_CHARS, min_size=1, max_size=30),
                      st.text(alphabet=HOST_CHARS + ".", min_size=1, max_size=30))


@settings(max_examples=300, deadline=None)
@given(addresses, st.text(min_size=1, max_size=20), st.integers(0, 2 ** 33), st.integers(0, 30),
       st.sampled_from(C.SEPARATORS))
def test_round_trip(addr, secret, now, age, sep):
    sender = "%s@%s" % addr
    if C.is_srs(addr[0]):
        return                                              # SRS senders become SRS1 (tested above)
    srs0 = C.forward(sender, "srs.example.net", [secret], now, separator=sep)
    if srs0 == sender:
        return                                              # already at srs.example.net
    assert C.reverse(srs0, ["other", secret], now + age * DAY, max_age_days=30) == sender
    srs1 = C.forward(srs0, "next.example.org", ["n"], now)
    assert srs1.startswith("SRS1" + "=")
    assert C.reverse(srs1, ["n"], now + 10 ** 9) == "SRS0" + srs0[4:]


# -- edges the reference and the docstrings fix (each one a wrong comparison away)

def test_forward_non_utf8_bytes_long_hash_and_empty_srs1_hash_match_reference(srs):
    """Bytes outside UTF-8 (surrogate escapes) are hashed as the bytes themselves; a hash
    length over 27 gives the whole unpadded HMAC; an SRS1 sender with an empty hash keeps
    its host and rest in place."""
    import os
    sender = os.fsdecode(b"j\xf6e@ex\xe9mple.com")
    secret = os.fsdecode(b"s\xe9cr\xffet")

    def compare(now):
        cases = [(sender, 4), ("joe@example.com", 30), ("SRS1==hostA==HHHH=TT=host=user@hostB", 4)]
        for addr, length in cases:
            args = ["--secret=" + secret, "--alias=fwd.example", "--hashlength=%d" % length]
            p = subprocess.run([srs, *(os.fsencode(a) for a in args), "--", os.fsencode(addr)],
                               capture_output=True, timeout=60)
            assert p.returncode == 0, p.stderr
            assert C.forward(addr, "fwd.example", [secret], now, hashlength=length) == \
                os.fsdecode(p.stdout.rstrip(b"\n"))
        return True
    same_day(compare)
    long = C.forward("joe@example.com", "fwd.example", ["k"], 20100 * DAY, hashlength=30)
    assert len(long.split("=")[1]) == 27 and C.digest("k", "x") == C.digest("k", "X")
    assert len(C.digest("k", "x")) == 27 and not C.digest("k", "x").endswith("=")
    assert C.forward("SRS1==hostA==HHHH=TT=host=user@hostB", "fwd.example", ["k"], 0).split("=", 2)[2] == \
        "hostA==HHHH=TT=host=user@fwd.example"


def test_hash_lengths_at_their_bounds():
    now = 20100 * DAY
    whole = C.forward("joe@example.com", "srs.example", ["k"], now, hashlength=27)
    assert C.reverse(whole, ["k"], now) == "joe@example.com"        # 27 characters: the whole HMAC
    too_long = whole.replace("=", "A=", 2).replace("A=", "=", 1)       # a 28th character on the hash
    assert len(too_long.split("=")[1]) == 28
    with pytest.raises(C.SRSError, match="Hash invalid"):
        C.reverse(too_long, ["k"], now)
    # srs/srs_hashmin below 4: a 2-character hash checks against hashmin 2, not the default
    short = C.forward("joe@example.com", "srs.example", ["k"], now, hashlength=2)
    assert C.reverse(short, ["k"], now, hashmin=2) == "joe@example.com"
    with pytest.raises(C.SRSError, match="Hash too short"):
        C.reverse(short, ["k"], now)
    # shorter than hashmin never matches, even a true prefix of the HMAC
    h, fields = whole.split("=")[1], whole.split("@")[0].split("=")[2:]
    assert C.hash_match(h[:3], ["k"], fields) == -1 and C.hash_match(h[:3], ["k"], fields, hashmin=3) == 0


def test_reverse_default_max_age_is_21_days_and_needs_secrets():
    now = 20100 * DAY
    assert C.reverse(C.forward("a@example.com", "srs.example", ["k"], now - 21 * DAY), ["k"], now) == "a@example.com"
    with pytest.raises(C.SRSError, match="Time stamp out of date"):
        C.reverse(C.forward("a@example.com", "srs.example", ["k"], now - 22 * DAY), ["k"], now)
    with pytest.raises(C.SRSError) as e:
        C.reverse(C.forward("a@example.com", "srs.example", ["k"], now), [], now)
    assert str(e.value) == C.NO_SECRETS


def test_the_domain_is_after_the_last_at():
    assert C.parse("SRS0=HHHH=AB=host.org=user") == ("SRS0", "HHHH", "AB", "host.org", "user")
    assert C.parse("SRS0=HHHH=AB=host.org=us@er@srs.example") == ("SRS0", "HHHH", "AB", "host.org", "us@er")
    assert C.at_domain("SRS0=HHHH=AB=host.org=us@er@srs.example", "SRS.example")
    assert not C.at_domain("SRS0=HHHH=AB=host.org=user@srs.example@other.example", "srs.example")
    assert C.alias_host("postmaster@srs.example") == "srs.example"
    assert C.alias_host("a@b@srs.example") == "srs.example"
    assert C.alias_host("srs.example") == "srs.example"
    assert C.forward("joe@example.com", "a@b@srs.example", ["k"], 0).endswith("=joe@srs.example")


def test_a_hash_length_below_one_is_refused():
    """A hash of no characters would sign nothing: every forged address would verify."""
    with pytest.raises(ValueError) as e:
        C.forward("a@remote.example", "srs.example", ["k"], 0, hashlength=0)
    assert str(e.value) == "hash length must be at least 1"
