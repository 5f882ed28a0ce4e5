"""Maildir++ quota: maildirsize reading, refusing, accepting, recounting."""
import os
import time

import pytest
from hypothesis import example, given, settings, strategies as st

from qmailpy import maildirpp
from qmailpy.local import quota
from test_local_support import Box, maildirmake

MSG = b"Subject: q\n\n" + b"x" * 1000 + b"\n"
HEAD = len(b"Return-Path: <alice@example.org>\nDelivered-To: joe@example.com\n")
SIZE = len(MSG) + HEAD
OVER = (100, "User over quota. (#5.1.1)\n")


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def write_size(box, text, age=0, maildir=None):
    path = os.path.join(maildir or box.maildir, "maildirsize")
    with open(path, "w") as f:
        f.write(text)
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def read_size(box, maildir=None):
    with open(os.path.join(maildir or box.maildir, "maildirsize")) as f:
        return f.read()


def put(folder, sub, name, size):
    path = os.path.join(folder, sub, name)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    return path


def test_no_quota_anywhere(box):
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert not os.path.exists(os.path.join(box.maildir, "maildirsize"))


def test_accept_appends_delta(box):
    write_size(box, "100000S\n5000 3\n")
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert read_size(box) == "100000S\n5000 3\n%d 1\n" % SIZE
    name, data = box.only()
    assert name.endswith(",S=%d" % len(data)) and len(data) == SIZE


def settled(*folders, age=2):
    """new/ and cur/ of `folders` last changed `age` seconds ago: before a maildirsize written now."""
    t = time.time() - age
    for folder in folders:
        for sub in ("new", "cur"):
            os.utime(os.path.join(folder, sub), (t, t))


def test_refuse_when_fresh_total_says_over(box):
    settled(box.maildir)
    write_size(box, "10000S\n%d 5\n" % (10000 - SIZE + 1))
    assert box.deliver(MSG) == OVER
    assert box.files() == [] and box.files("tmp") == []
    assert read_size(box) == "10000S\n%d 5\n" % (10000 - SIZE + 1)        # trusted: no recount


@pytest.mark.parametrize("folder,gone", [("", "cur"), ("", "new"), (".Sent", "cur")])
def test_fresh_over_is_recounted_once_a_reader_deleted_mail(box, folder, gone):
    """A fresh one-line "over" trusted for 15 minutes bounced the mail a user had just made room
    for: a POP3 server (Dovecot without its quota plugin, docs/pop3.md) deletes messages and
    leaves maildirsize as it was. A new/ or cur/ of a counting folder changed since the file
    was written means mail came or went: recount."""
    where = maildirmake(os.path.join(box.maildir, folder)) if folder else box.maildir
    put(where, gone, "1.2.h,S=9000", 9000)
    settled(box.maildir, where)
    write_size(box, "10000S\n9000 1\n")                       # the recount that bounced a message
    assert box.deliver(MSG) == OVER                             # nothing changed since: trusted
    assert read_size(box) == "10000S\n9000 1\n"
    os.unlink(os.path.join(where, gone, "1.2.h,S=9000"))        # the reader deletes it (DELE, QUIT)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert read_size(box) == "10000S\n0 0\n%d 1\n" % SIZE


def test_fresh_over_is_trusted_when_only_trash_changed(box):
    trash = maildirmake(os.path.join(box.maildir, ".Trash"))
    put(trash, "cur", "1.2.h,S=9000:2,S", 9000)
    settled(box.maildir)
    write_size(box, "10000S\n9500 1\n")
    os.unlink(os.path.join(trash, "cur", "1.2.h,S=9000:2,S"))  # emptying Trash frees nothing
    assert box.deliver(MSG) == OVER
    assert read_size(box) == "10000S\n9500 1\n"


def test_recount_never_counts_a_message_a_reader_moves_from_new_to_cur_twice(box, monkeypatch):
    """Dovecot moves new/ messages to cur/ at each POP3 login. A recount listing new/ and then
    cur/ counted a message moved in between twice: a mailbox at 1 of 2 messages was 'over'
    (2 + this one) and the message bounced for good. cur/ is listed first: a message moved
    then is missed at worst (the next recount finds it), never counted twice."""
    put(box.maildir, "new", "1.2.h,S=100", 100)
    write_size(box, "10000S,2C\n9000 1\n1000 1\n")          # stale lines say over: recount
    real = os.listdir

    def listdir(path):
        names = real(path)
        if path.endswith("/new") and "1.2.h,S=100" in names:    # the reader moves it just then
            os.rename(os.path.join(path, "1.2.h,S=100"), os.path.join(box.maildir, "cur", "1.2.h,S=100:2,"))
        return names
    monkeypatch.setattr(os, "listdir", listdir)
    assert maildirpp.scan(box.maildir)[1] <= 1
    os.rename(os.path.join(box.maildir, "cur", "1.2.h,S=100:2,"), os.path.join(box.maildir, "new", "1.2.h,S=100"))
    assert box.deliver(MSG) == (0, "did 1+0+0\n")


def test_a_recount_during_which_a_reader_deleted_mail_is_not_trusted(box, monkeypatch):
    """A recount listed cur/, then the reader (a POP3 QUIT) unlinked a message it had listed:
    the count still held it, the mailbox was 'over', the message bounced, and the fresh file
    written after the deletion was trusted for 15 minutes. As Courier's count does, a count
    during which new/ or cur/ changed is not trusted: it is done again."""
    put(box.maildir, "cur", "1.2.h,S=100:2,S", 100)
    put(box.maildir, "cur", "2.2.h,S=100:2,S", 100)
    write_size(box, "10000S,2C\n100 1\n100 1\n")             # two lines: a delivery recounts
    real, deleted = os.listdir, []

    def listdir(path):
        names = real(path)
        if path.endswith("/cur") and not deleted:               # the reader deletes just then
            os.unlink(os.path.join(path, "2.2.h,S=100:2,S"))
            deleted.append(path)
        return names
    monkeypatch.setattr(os, "listdir", listdir)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert read_size(box) == "10000S,2C\n100 1\n%d 1\n" % SIZE


def test_counts_that_keep_being_disturbed_defer(box, monkeypatch):
    put(box.maildir, "cur", "1.2.h,S=100:2,S", 100)
    put(box.maildir, "cur", "2.2.h,S=100:2,S", 100)
    write_size(box, "10000S,2C\n100 1\n100 1\n")
    real = os.listdir

    def listdir(path):
        names = real(path)
        if path.endswith("/cur"):                               # a reader renames a message each time
            old = [n for n in names if n.startswith("1.2.h")][0]
            os.rename(os.path.join(path, old), os.path.join(path, old + "S"))
        return names
    monkeypatch.setattr(os, "listdir", listdir)
    assert box.deliver(MSG) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert box.files() == [] and box.files("tmp") == []
    # the last count, disturbed, is left with a second line: the retry recounts, not trusts it
    assert read_size(box) == "10000S,2C\n200 2\n0 0\n"


def test_exactly_full_is_accepted(box):
    write_size(box, "10000S\n%d 5\n" % (10000 - SIZE))
    assert box.deliver(MSG)[0] == 0


def test_count_limit(box):
    write_size(box, "0S,3C\n0 3\n")            # 0S: qcalc reads it as a 0-byte limit
    assert box.deliver(MSG) == OVER
    put(box.maildir, "cur", "1.2.h,S=10:2,", 1)
    put(box.maildir, "cur", "2.2.h,S=10:2,", 1)
    write_size(box, "1000000S,3C\n20 2\n")
    assert box.deliver(MSG)[0] == 0                            # the 3rd message fits
    assert box.deliver(MSG) == OVER                            # the 4th does not, even after a recount
    assert read_size(box) == "1000000S,3C\n%d 3\n" % (20 + SIZE)


def test_over_with_many_lines_recounts_and_accepts(box):
    put(box.maildir, "cur", "1.2.h,S=300:2,S", 999)            # size from the name, not the file
    put(box.maildir, "new", "2.3.h", 200)                       # no S=: stat
    sub = maildirmake(os.path.join(box.maildir, ".Sent"))
    put(sub, "cur", "3.4.h,S=100:2,", 1)
    trash = maildirmake(os.path.join(box.maildir, ".Trash"))
    put(trash, "cur", "4.5.h,S=100000:2,", 1)                   # Trash does not count
    put(box.maildir, "cur", "5.6.h,S=100000:2,ST", 1)           # flagged T: does not count
    put(box.maildir, "cur", ".hidden,S=100000", 1)
    write_size(box, "10000S\n9000 10\n1000 1\n")                # stale deltas say "over"
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert read_size(box) == "10000S\n600 3\n%d 1\n" % SIZE


def test_over_but_old_single_line_recounts(box):
    write_size(box, "10000S\n9999 1\n", age=16 * 60)
    assert box.deliver(MSG)[0] == 0
    assert read_size(box) == "10000S\n0 0\n%d 1\n" % SIZE


def test_over_single_line_dated_ahead_of_a_clock_stepped_back_recounts(box):
    """A one-line maildirsize saying "over" is trusted for FRESH (15 min) after its recount;
    one written before the clock was stepped back two days was 'fresh' for two days, and
    every delivery bounced over quota (permanently) although the mailbox had been emptied.
    Dated ahead of the clock, its age is unknown: it is recounted."""
    write_size(box, "10000S\n9999 1\n", age=-2 * 86400)
    assert box.deliver(MSG)[0] == 0
    assert read_size(box) == "10000S\n0 0\n%d 1\n" % SIZE


def test_recount_still_over_refuses_and_rewrites(box):
    put(box.maildir, "cur", "1.2.h,S=9500:2,", 1)
    write_size(box, "10000S\n9000 1\n900 1\n")                 # says over; recount agrees
    assert box.deliver(MSG) == OVER
    assert read_size(box) == "10000S\n9500 1\n"
    assert box.files("tmp") == []                               # the NeWmAiLdIrSiZe file was renamed


def test_big_file_is_recounted(box):
    write_size(box, "1000000S\n" + "10 1\n" * 1100)             # > 5120 bytes
    assert box.deliver(MSG)[0] == 0
    assert read_size(box) == "1000000S\n0 0\n%d 1\n" % SIZE


def test_env_quota_creates_file(box):
    put(box.maildir, "cur", "1.2.h,S=500:2,", 1)
    assert box.deliver(MSG, env={"MAILDIRQUOTA": "10000000S"}) == (0, "did 1+0+0\n")
    assert read_size(box) == "10000000S\n500 1\n%d 1\n" % SIZE


def test_env_quota_refuses(box):
    put(box.maildir, "cur", "1.2.h,S=500:2,", 1)
    assert box.deliver(MSG, env={"MAILDIRQUOTA": "1000"}) == OVER
    assert read_size(box) == "1000S\n500 1\n"


def test_env_quota_replaces_other_definition(box):
    write_size(box, "100S\n0 0\n")
    assert box.deliver(MSG, env={"MAILDIRQUOTA": "5M"})[0] == 0
    assert read_size(box).startswith("5242880S\n0 0\n")


@pytest.mark.parametrize("given, definition", [("1MB", "1048576S"), ("2 mb", "2097152S"), ("1Mbytes", "1048576S")])
def test_env_quota_units_as_vpopmail_formats_them(box, given, definition):
    """vdelivermail hands pw_shell through format_maildirquota() (vpopmail.c): no comma and no
    final S: the leading number, times 1024 or 1048576 for the first k/K or m/M anywhere."""
    assert box.deliver(MSG, env={"MAILDIRQUOTA": given}) == (0, "did 1+0+0\n")
    assert read_size(box) == "%s\n0 0\n%d 1\n" % (definition, SIZE)


def test_noquota_ignores_file_limit_but_keeps_counting(box):
    write_size(box, "100S\n0 0\n")
    assert box.deliver(MSG, env={"MAILDIRQUOTA": "NOQUOTA"})[0] == 0
    assert read_size(box) == "100S\n0 0\n%d 1\n" % SIZE
    assert box.deliver(MSG, env={"MAILDIRQUOTA": ""}) == OVER          # empty = use the file


def test_subfolder_counts_against_parent(box):
    sub = maildirmake(os.path.join(box.maildir, ".Spam"))
    open(os.path.join(sub, "maildirfolder"), "w").close()
    write_size(box, "100000S\n0 0\n")
    box.dotqmail(".qmail", "./Maildir/.Spam/\n")
    assert box.deliver(MSG)[0] == 0
    assert len(box.files(maildir=sub)) == 1
    assert read_size(box) == "100000S\n0 0\n%d 1\n" % SIZE
    assert not os.path.exists(os.path.join(sub, "maildirsize"))


@pytest.mark.parametrize("value, out", [
    (None, None), ("", None), ("  ", None), ("NOQUOTA", ""), ("noquota", ""),
    ("1000", "1000S"), ("10K", "10240S"), ("2m", "2097152S"), ("5000S,10C", "5000S,10C"),
    ("10MB", "10485760S"), ("3 kb", "3072S"), ("7KM", "7168S"), ("1000C", "1000C"), ("5M,10C", "5M,10C"),
])
def test_normalize(value, out):
    assert maildirpp.normalize(value) == out


@pytest.mark.parametrize("definition, size, count, over", [
    ("100S", 100, 1, False), ("100S", 101, 1, True), ("100S,2C", 1, 3, True),
    ("100S,2C", 1, 2, False), ("", 10 ** 12, 10 ** 6, False), ("junk", 5, 5, False),
    ("100", 101, 1, True), ("2C", 10 ** 9, 2, False),
])
def test_over(definition, size, count, over):
    assert maildirpp.over(definition, size, count) is over


def test_maildirsize_read_tolerates_junk(tmp_path):
    p = tmp_path / "maildirsize"
    p.write_bytes(b"100S\n10 1\n-5 -1\n7x 2y\nfoo\n\n")
    st = maildirpp.read(str(p))
    assert (st.definition, st.size, st.count, st.nlines, st.too_big) == ("100S", 12, 2, 5, False)
    assert maildirpp.read(str(tmp_path / "none")) is None


@pytest.mark.parametrize("name, size", [
    ("1.2.h,S=123", 123), ("1.2.h,S=123:2,S", 123), ("1.2.h,S=12,W=14:2,", 12),
    ("1.2.h", None), ("1.2.h:2,S=5", None), ("1.2.a,S=1,S=2", 2),
])
def test_parse_size(name, size):
    assert maildirpp.parse_size(name) == size


# --- quota.check() in-process, at its edges (make mutate) ------------------------------

def test_check_without_quota_or_file(tmp_path):
    md = maildirmake(str(tmp_path / "Maildir"))
    assert quota.check(md, {}, 10, "mx.test") is None
    path = os.path.join(md, "maildirsize")
    with open(path, "w") as f:
        f.write("\n0 0\n")                              # a file without a definition
    assert quota.check(md, {}, 10, "mx.test") == path


def test_check_uses_the_given_now_for_freshness(tmp_path):
    """A one-line file that says "over" is trusted for 15 minutes of the caller's clock,
    up to but not at mtime + FRESH; after that it is recounted."""
    md = maildirmake(str(tmp_path / "Maildir"))
    settled(md)
    path = os.path.join(md, "maildirsize")
    with open(path, "w") as f:
        f.write("1000S\n5000 1\n")                     # says over; the maildir is empty
    mtime = os.stat(path).st_mtime
    with pytest.raises(Exception) as e:
        quota.check(md, {}, 10, "mx.test", now=mtime + quota.FRESH - 1)
    assert (e.value.code, e.value.text) == (100, "User over quota. (#5.1.1)")
    with open(path, "w") as f:
        f.write("1000S\n5000 1\n")
    os.utime(path, (mtime, mtime))
    assert quota.check(md, {}, 10, "mx.test", now=mtime + quota.FRESH) == path      # recounted: fits
    assert read_size(Box(tmp_path), md) == "1000S\n0 0\n"


def test_recount_counts_this_message(tmp_path, monkeypatch):
    """After a recount, usage + this message (one more file) must fit; the recount names the host."""
    md = maildirmake(str(tmp_path / "Maildir"))
    put(md, "cur", "1", 100)
    hosts, real = [], maildirpp.rewrite
    monkeypatch.setattr(maildirpp, "rewrite", lambda root, d, s, c, host=None, owner=None:
                        hosts.append(host) or real(root, d, s, c, host, owner))
    path = os.path.join(md, "maildirsize")
    assert quota.check(md, {"MAILDIRQUOTA": "1000S,2C"}, 10, "mx.test") == path
    assert hosts == ["mx.test"]


def test_quota_root_walks_up_at_most_eight_folders(tmp_path):
    d = str(tmp_path / "Maildir")
    chain = [d]
    for i in range(10):
        d = os.path.join(d, ".f%d" % i)
        chain.append(d)
    for folder in chain:
        os.makedirs(folder, exist_ok=True)
    for folder in chain[1:]:
        open(os.path.join(folder, "maildirfolder"), "w").close()
    assert quota.quota_root(chain[3]) == chain[0]
    assert quota.quota_root(chain[8]) == chain[0]
    assert quota.quota_root(chain[9]) == chain[1]


def test_needs_lock_only_with_a_quota_or_a_maildirsize(tmp_path):
    """needs_lock(): the Maildir++ root when $MAILDIRQUOTA gives a quota or the root has a
    maildirsize file, else None (no lock for a mailbox without a quota)."""
    md = maildirmake(str(tmp_path / "Maildir"))
    folder = maildirmake(os.path.join(md, ".Sub"))
    open(os.path.join(folder, "maildirfolder"), "w").close()
    assert quota.needs_lock(md, {}) is None
    assert quota.needs_lock(folder, {}) is None
    assert quota.needs_lock(md, {quota.ENV: "   "}) is None
    assert quota.needs_lock(md, {quota.ENV: "1000S"}) == md
    assert quota.needs_lock(folder, {quota.ENV: "NOQUOTA"}) is None       # normalize(): "" is no quota
    with open(os.path.join(md, maildirpp.NAME), "w") as f:
        f.write("1000S\n")
    assert quota.needs_lock(md, {}) == md
    assert quota.needs_lock(folder, {}) == md


def test_a_lock_that_cannot_be_removed_after_the_link_is_still_one_delivery(box, monkeypatch):
    """The message is in new/ once the link is made; failing to remove maildirsize.lock
    after it (EIO, ESTALE over NFS) left it there and reported a temporary failure, so
    qmail-send's retry delivered a second copy. The lock left behind goes stale and is
    broken after LOCK_STALE seconds, as a crashed holder's is."""
    write_size(box, "100000S\n5000 3\n")
    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        if str(path).endswith(maildirpp.LOCK):
            raise OSError(5, "Input/output error", path)
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert len(box.files()) == 1 and box.files("tmp") == []
    assert read_size(box) == "100000S\n5000 3\n%d 1\n" % SIZE



@pytest.mark.parametrize("rewrite_too", [False, True])
def test_a_size_line_that_cannot_be_appended_after_the_link_is_still_one_delivery(box, monkeypatch, rewrite_too):
    """The message is in new/ once the link is made: a full disk refusing maildirsize's
    `<size> 1` line is never a deferral, which would have qmail-send deliver a second copy.
    The Maildir is recounted into a new maildirsize instead (the sums right again); only when
    that fails too does the count stay short until the next recount."""
    write_size(box, "100000S\n5000 3\n")

    def append(path, *args, **kwargs):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(quota.maildirpp, "append", append)
    if rewrite_too:
        monkeypatch.setattr(quota.maildirpp, "rewrite", append)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert len(box.files()) == 1 and box.files("tmp") == []
    assert read_size(box) == ("100000S\n5000 3\n" if rewrite_too else "100000S\n%d 1\n" % SIZE)


def test_a_quota_lifted_while_the_delivery_waits_for_the_lock_is_not_written_back(box, monkeypatch):
    """maildirsize is there when the delivery looks, and removed (maildirpp.remove: the quota
    lifted) before it holds the lock: the message is delivered and no maildirsize comes back."""
    from qmailpy.local import maildir
    path = write_size(box, "100000S\n5000 3\n")
    real = quota.needs_lock

    def needs_lock(maildir_path, environ):
        root = real(maildir_path, environ)
        maildirpp.remove(root)
        return root
    monkeypatch.setattr(maildir.quota, "needs_lock", needs_lock)
    assert box.deliver(MSG) == (0, "did 1+0+0\n")
    assert len(box.files()) == 1 and not os.path.exists(path)

# --- properties: any quota text, any maildirsize --------------------------------------

LONG = "9" * 4400                       # more digits than int() takes (4300)


@example(LONG + "K")                    # int() refused the digits: ValueError out of qmail-local
@example(LONG + "S")
@given(st.text(max_size=30) | st.builds("".join, st.lists(st.sampled_from(
    ["1", "0", "9" * 30, "K", "m", "S", "C", ",", " ", "NOQUOTA", "x"]), max_size=8)))
def test_quota_definitions_normalize_idempotently(value):
    definition = maildirpp.normalize(value)
    assert definition is None or maildirpp.normalize(definition) in (definition, None)
    if definition:
        assert maildirpp.normalize(definition) == definition
    limits = maildirpp.limits(definition or "")
    assert all(kind in "SC" and limit >= 0 for kind, limit in limits)
    if maildirpp.valid(value) and definition and len(definition) < 4000:
        assert limits == [(p[-1], min(int(p[:-1]), maildirpp.OFF_MAX)) for p in definition.split(",")]
    maildirpp.over(definition or "", 10, 1)


@example(b"1S\n" + LONG.encode() + b" 1\n")
@settings(max_examples=50)
@given(st.binary(max_size=6000) | st.lists(st.sampled_from(
    [b"\n", b" ", b"-", b"+", b"12", b"7x", b"S", b"\t", b"9" * 100]), max_size=60).map(b"".join))
def test_maildirsize_read_never_raises_on_junk(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("q") / "maildirsize"
    path.write_bytes(data)
    state = maildirpp.read(str(path))
    assert state.too_big == (len(data) >= maildirpp.MAX_BYTES)
    kept = data[:maildirpp.MAX_BYTES].split(b"\n")
    assert state.nlines == max(len(kept) - (kept[-1] == b"") - 1, 0)
