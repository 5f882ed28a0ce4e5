"""setsrssecret: key rotation in control/srs/, atomic and safe to run twice at once."""
import os
import stat
import subprocess
import time

import pytest

from conftest import program
from test_e2e_support import wait_until
from qmailpy.ctl.reader import Controls
from qmailpy.srs import keys as K
from qmailpy.srs import rewrite as W

DAY = 86400


def read(home, name):
    with open(os.path.join(home.root, "control", name)) as f:
        return f.read().splitlines()


def state(home):
    """(keys of revers_srs_secrets, keys of srs_secrets, age lines)."""
    return read(home, K.REVERSE), read(home, K.FORWARD), read(home, K.AGES)


def assert_consistent(home, count, dated_in_order=True):
    rev, fwd, ages = state(home)
    assert rev == fwd and len(rev) == count == len(set(rev))
    assert [line.split()[0] for line in ages] == [K.fingerprint(s) for s in rev]
    stamps = [int(line.split()[1]) for line in ages]
    assert stamps == sorted(stamps, reverse=True) or not dated_in_order
    leftovers = [f for f in os.listdir(os.path.join(home.root, "control", "srs")) if ".tmp." in f]
    assert leftovers == []
    return rev


def test_first_run_creates_everything(home):
    p = home.run("setsrssecret")
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b""       # quiet for cron
    srs_dir = os.path.join(home.root, "control", "srs")
    assert stat.S_IMODE(os.stat(srs_dir).st_mode) == 0o755
    for name in K.FILES:
        want = K.ROOT_MODES[name] if os.geteuid() == 0 else 0o400
        assert stat.S_IMODE(os.stat(os.path.join(home.root, "control", name)).st_mode) == want
    (secret,) = assert_consistent(home, 1)
    assert len(secret) == 32 and not secret.startswith("#")
    made = int(read(home, K.AGES)[0].split()[1])
    assert abs(made - time.time()) < 60
    # the controls the mail programs read see the key
    c = Controls(home.root)
    assert c.value("srs/srs_secrets") == (secret,) == c.value("srs/revers_srs_secrets")


def test_second_run_puts_new_key_on_top(home):
    home.run("setsrssecret")
    first = read(home, K.FORWARD)
    p = home.run("setsrssecret", "-v")
    assert p.returncode == 0 and b"2 kept, 0 dropped" in p.stdout
    keys = assert_consistent(home, 2)
    assert keys[1:] == first
    assert K.fingerprint(keys[0]).encode() in p.stdout and keys[0].encode() not in p.stdout


def test_concurrent_runs_stay_consistent(home):
    env = home.env()
    for _ in range(5):
        procs = [subprocess.Popen([program("setsrssecret")], env=env) for _ in range(2)]
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert_consistent(home, 10)


def test_a_run_that_waited_for_the_lock_dates_its_key_when_it_got_it(home):
    """The new key's date is taken under the lock, so keys stay newest first whatever the
    order in which concurrent runs started (two runs 1 s apart could otherwise swap)."""
    home.run("setsrssecret")
    with K.Locked(home.root):
        p = subprocess.Popen([program("setsrssecret")], env=home.env())
        waiting = " %d " % p.pid                # /proc/locks: `N: -> FLOCK ADVISORY WRITE <pid> ...`
        wait_until(lambda: any("->" in line and waiting in line for line in open("/proc/locks")),
                   what="setsrssecret waiting for the lock")
        blocked = int(time.time())              # a date read before the lock is at most this
        wait_until(lambda: int(time.time()) > blocked, what="the next second")
        released = int(time.time())
    assert p.wait(timeout=60) == 0
    assert int(read(home, K.AGES)[0].split()[1]) >= released
    assert_consistent(home, 2)


def test_show_never_prints_a_secret(home):
    for _ in range(3):
        home.run("setsrssecret")
    secrets = read(home, K.FORWARD)
    p = home.run("setsrssecret", "--show")
    assert p.returncode == 0
    out = p.stdout.decode()
    for s in secrets:
        assert s not in out
        assert all(s[i:i + 8] not in out for i in range(len(s) - 7))
        assert K.fingerprint(s) in out
    lines = out.splitlines()
    assert lines[0].startswith("srs_max_age: 2592000 seconds (30d 0h)")
    assert "signs new addresses" in lines[1] and "accepted on bounces" in lines[2]
    assert read(home, K.FORWARD) == secrets                                  # --show changes nothing


def test_show_without_keys(home):
    p = home.run("setsrssecret", "--show")
    assert p.returncode == 0 and b"no SRS keys" in p.stdout
    assert not os.path.exists(os.path.join(home.root, "control", "srs", "srs_secrets"))


def write_keys(home, keys):
    """keys: [(secret, age in days)] newest first."""
    now = int(time.time())
    home.control(K.REVERSE, "".join(s + "\n" for s, _ in keys))
    home.control(K.FORWARD, "".join(s + "\n" for s, _ in keys))
    home.control(K.AGES, "".join("%s %d\n" % (K.fingerprint(s), now - d * DAY) for s, d in keys))


def test_show_warns_when_the_two_key_files_differ(home):
    """qmail-send signs with srs_secrets, qmail-smtpd checks with revers_srs_secrets: keys that
    differ (one file edited by hand) break bounces, and --show says so, last."""
    write_keys(home, [("A", 1), ("B", 40)])
    home.control(K.FORWARD, "A\n")
    p = home.run("setsrssecret", "--show")
    assert p.returncode == 0
    assert p.stdout.decode().splitlines()[-1] == "warning: srs_secrets and revers_srs_secrets differ: run setsrssecret"


def test_old_keys_are_dropped_after_max_age_plus_a_day(home):
    # A is replaced now by the new key: kept. B was replaced when A was made,
    # 40 days ago, more than srs_max_age (30 days) + 1 day: dropped, C with it.
    write_keys(home, [("A", 40), ("B", 60), ("C", 100)])
    p = home.run("setsrssecret", "-v")
    assert p.returncode == 0 and b"2 kept, 2 dropped" in p.stdout
    keys = assert_consistent(home, 2)
    assert keys[1] == "A"


def test_retention_counts_from_replacement(home):
    # B was made 50 days ago but only replaced 20 days ago (when A came): kept.
    # C was replaced when B came, 50 days ago: dropped.
    write_keys(home, [("A", 20), ("B", 50), ("C", 51)])
    assert home.run("setsrssecret").returncode == 0
    assert assert_consistent(home, 3)[1:] == ["A", "B"]
    home.control("srs/srs_max_age", "864000\n")        # 10 days: B (replaced 20 days ago) goes
    home.run("setsrssecret")
    keys = assert_consistent(home, 3)
    assert keys[2] == "A" and "B" not in keys


def test_hand_made_keys_are_kept_and_dated(home):
    home.control(K.FORWARD, "legacy1\nlegacy2\n")
    home.control(K.REVERSE, "legacy1\nlegacy2\nonlyreverse\n")
    home.control(K.AGES, "legacy2 %d\n" % (time.time() - 5 * DAY))   # keyed by the secret itself
    assert home.run("setsrssecret").returncode == 0
    # legacy1 has no age line: dated now, so legacy2 and onlyreverse count as just replaced
    keys = assert_consistent(home, 4, dated_in_order=False)
    assert keys[1:] == ["legacy1", "legacy2", "onlyreverse"]
    ages = dict(line.split() for line in read(home, K.AGES))
    assert "legacy2" not in ages and K.fingerprint("legacy2") in ages   # rewritten as a fingerprint




def test_show_reads_age_lines_that_name_the_secret(home):
    # H-Sphere's srs_secrets_age, copied over at a migration, names each key by the
    # secret itself; a run reads that (above), and so does --show, before any run.
    now = int(time.time())
    home.control(K.FORWARD, "hsphere2\nhsphere1\n")
    home.control(K.REVERSE, "hsphere2\nhsphere1\n")
    home.control(K.AGES, "hsphere2 %d\nhsphere1 %d\n" % (now - 3 * DAY, now - 10 * DAY))
    p = home.run("setsrssecret", "--show")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "unknown" not in out and "hsphere" not in out
    assert "(3d 0h ago), signs new addresses" in out
    assert "(10d 0h ago), replaced 3d 0h ago, accepted on bounces 2" in out      # 28d less the seconds gone


def test_show_without_the_key_files_names_an_old_age_line_by_fingerprint(home, monkeypatch):
    # A user who cannot read the key files gets srs_secrets_age's names: an older line's
    # name is the secret, so it is shown as its fingerprint, never as it stands.
    from qmailpy.cli import setsrssecret as S
    now = int(time.time())
    home.control(K.AGES, "hsphere2 %d\n%s %d\n" % (now - 3 * DAY, K.fingerprint("new1"), now - 10 * DAY))
    real = K.read_lines

    def read_lines(path):
        if not path.endswith("_age"):
            raise PermissionError(13, "Permission denied")
        return real(path)
    monkeypatch.setattr(K, "read_lines", read_lines)
    out = "\n".join(S.show_lines(home.root, now, 2592000))
    assert "hsphere2" not in out and "unknown" not in out
    assert "key 1 %s made" % K.fingerprint("hsphere2") in out and "key 2 %s made" % K.fingerprint("new1") in out
def test_addresses_signed_before_a_rotation_still_reverse(home):
    from qmailpy.srs import codec as C
    home.run("setsrssecret")
    home.control("srs/srs_domain", "srs.example\n")
    now = time.time()
    made = W.forward("joe@remote.example", Controls(home.root), now)
    assert made.startswith("SRS0=")
    for _ in range(2):
        home.run("setsrssecret")
    assert W.reverse(made, Controls(home.root), now) == (W.OK, "joe@remote.example")
    assert C.reverse(made, read(home, K.REVERSE), now) == "joe@remote.example"


def test_owner_and_mode_when_root(home, monkeypatch):
    import grp
    import pwd
    user = pwd.getpwuid(65534).pw_name if os.getuid() == 0 else None
    if user is None:
        pytest.skip("needs root to chown")
    group = grp.getgrgid(pwd.getpwuid(65534).pw_gid).gr_name
    K.srs_dir(home.root, create=True)
    monkeypatch.setitem(K.OWNERS, K.REVERSE, (user, group))
    monkeypatch.setitem(K.OWNERS, K.FORWARD, ("no-such-user-xyz", "no-such-group-xyz"))
    K.write_atomic(home.root, K.REVERSE, b"k\n", as_root=True)
    K.write_atomic(home.root, K.FORWARD, b"k\n", as_root=True)
    st = os.stat(os.path.join(home.root, "control", K.REVERSE))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, pwd.getpwuid(65534).pw_gid, 0o440)
    st = os.stat(os.path.join(home.root, "control", K.FORWARD))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o440)               # unknown users: left alone


def test_no_control_directory_is_fatal(tmp_path):
    env = dict(os.environ, QMAILHOME=str(tmp_path / "nowhere"))
    p = subprocess.run([program("setsrssecret")], env=env, capture_output=True)
    assert p.returncode == 111 and p.stderr.startswith(b"setsrssecret: fatal: ")
    assert not os.path.exists(tmp_path / "nowhere")


def test_stale_temp_files_are_cleaned(home):
    home.run("setsrssecret")
    stale = os.path.join(home.root, "control", "srs", ".srs_secrets.tmp.99999")
    with open(stale, "w") as f:
        f.write("half\n")
    home.run("setsrssecret")
    assert not os.path.exists(stale)
    assert_consistent(home, 2)


def test_control_srs_that_is_not_a_directory_is_fatal(home):
    """A file where control/srs/ belongs: rotation and --show stop with the path and exit 111,
    the file left as it is (never a traceback, never keys written elsewhere)."""
    path = home.control("srs", "not a directory\n")
    for args in ((), ("--show",)):
        p = home.run("setsrssecret", *args)
        assert (p.returncode, p.stdout) == (111, b""), p.stderr
        where = path if not args else os.path.join(path, "setsrssecret.lock")
        assert p.stderr.decode() == "setsrssecret: fatal: %s: Not a directory\n" % where
    with open(path) as f:
        assert f.read() == "not a directory\n"


def test_a_new_key_is_never_one_in_use(monkeypatch):
    import secrets
    made = iter(["old", "old", "fresh"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(made))
    assert K.new_secret({"old"}) == "fresh"


def test_malformed_age_lines_are_skipped_and_the_first_line_of_a_key_wins():
    assert K.parse_ages(["k1 100", "k1 200", "k2", "k3 x", "k4 1 2", "k5 300"]) == {"k1": 100, "k5": 300}
