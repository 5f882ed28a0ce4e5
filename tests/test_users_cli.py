"""qmail-users run as the real program (bin/qmail-users) on a scratch home, both backends."""
import os
import subprocess
import time

from conftest import program
from mysql_fixture import backend, mysql_backend  # noqa: F401 (fixtures)


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


def test_domain_and_user_lifecycle(backend):  # noqa: F811
    home = backend.home
    run = home.run
    ok(run("qmail-users", "adddomain", "Example.ORG"))
    assert ok(run("qmail-users", "list")).splitlines() == ["example.org"]
    ok(run("qmail-users", "adduser", "joe@example.org", "-p", "secret", "-q", "10M"))
    ok(run("qmail-users", "adduser", "ann@example.org", "--clear", "--scheme", "sha512", input=b"annpw\n"))
    lines = ok(run("qmail-users", "list", "example.org")).splitlines()
    vdir = os.path.join(home.root, "vpopmail", "domains", "example.org")
    assert lines == ["ann@example.org\tNOQUOTA\t%s/ann/Maildir" % vdir,
                     "joe@example.org\t10485760S\t%s/joe/Maildir" % vdir]
    assert os.path.isdir(os.path.join(vdir, "joe", "Maildir", "new"))
    with open(os.path.join(vdir, "joe", "Maildir", "maildirsize")) as f:
        assert f.readline() == "10485760S\n"

    info = ok(run("qmail-users", "info", "ann@example.org"))
    assert "passwd:       $6$" in info and "clear passwd: yes" in info and "quota:        NOQUOTA" in info

    users = backend.open()
    assert users.verify_password("joe@example.org", "secret")
    assert users.verify_password("ann@example.org", "annpw")
    ok(run("qmail-users", "passwd", "joe@example.org", "-p", "changed"))
    assert users.verify_password("joe@example.org", "changed")
    assert not users.verify_password("joe@example.org", "secret")
    assert "5000000S" in ok(run("qmail-users", "setquota", "joe@example.org", "5000000"))
    assert users.lookup("joe", "example.org").quota == "5000000S"

    ok(run("qmail-users", "addaliasdomain", "example.org", "example.net"))
    assert ok(run("qmail-users", "list")).splitlines() == ["example.org", "example.net -> example.org"]
    assert users.lookup("joe", "example.net").domain == "example.org"

    ok(run("qmail-users", "deluser", "joe@example.org"))
    assert users.lookup("joe", "example.org") is None
    assert not os.path.exists(os.path.join(vdir, "joe"))
    ok(run("qmail-users", "deldomain", "example.org"))
    assert ok(run("qmail-users", "list")).splitlines() == []
    assert not os.path.exists(vdir)


def test_refusals_exit_1(backend):  # noqa: F811
    run = backend.home.run
    ok(run("qmail-users", "adddomain", "example.org"))
    for args in (["adddomain", "example.org"], ["adduser", "joe@nowhere.test", "-p", "x"],
                 ["deluser", "joe@example.org"], ["info", "joe@example.org"],
                 ["setquota", "joe@example.org", "10M"], ["list", "nowhere.test"],
                 ["adduser", "joe@example.org", "-p", "x" * 17, "--clear"],
                 ["addaliasdomain", "a.test", "b.test"]):
        r = run("qmail-users", *args)
        assert r.returncode == 1, args
        assert r.stderr.startswith(b"qmail-users: "), args


def test_refusals_say_what_is_wrong(backend):  # noqa: F811
    """Each refusal is one line on stderr, exit 1, and nothing written."""
    home = backend.home
    ok(home.run("qmail-users", "adddomain", "example.org"))
    long_domain = "d" * 88 + ".example"
    ok(home.run("qmail-users", "adddomain", long_domain))
    box = os.path.join(home.root, "vpopmail", "domains", long_domain, "a" * 32)
    for args, said in [
            (["adduser", "jo e@example.org", "-p", "x"], "invalid user name 'jo e'"),
            (["adduser", "j\u00f3e@example.org", "-p", "x"], "invalid user name 'j\u00f3e'"),
            (["adduser", "%s@example.org" % ("a" * 33), "-p", "x"], "invalid user name '%s'" % ("a" * 33)),
            (["adduser", "joe@nowhere.test", "-p", "x"], "no such domain: nowhere.test"),
            (["adduser", "%s@%s" % ("a" * 32, long_domain), "-p", "x"],
             "mailbox path longer than 160 characters: %s" % box),
            (["adduser", "joe@example.org", "-p", "x", "-q", "9" * 22], "quota longer than 20 characters: %sS" % ("9" * 22)),
            (["adduser", "joe@example.org", "-p", "x" * 17, "--clear"],
             "pw_clear_passwd holds at most 16 characters (vpopmail's column)"),
            (["passwd", "joe@example.org", "-p", "y"], "no such user: joe@example.org"),
            (["addaliasdomain", "a.test", "b.test"], "neither a.test nor b.test exists"),
            (["addaliasdomain", "example.org", long_domain], "both domains exist already: example.org, %s" % long_domain)]:
        r = home.run("qmail-users", *args)
        assert (r.returncode, r.stdout, r.stderr.decode()) == (1, b"", "qmail-users: %s\n" % said), args
    assert ok(home.run("qmail-users", "list", "example.org")) == ""
    assert not os.path.exists(box)


def test_adduser_whose_mailbox_cannot_be_made_adds_nobody(backend):  # noqa: F811
    """vpopmail's vadduser makes the user's directory first and adds no row when it cannot
    (VA_BAD_U_DIR); the row was committed first, the error was an 'internal bug' (111), and
    the user stayed in the database without a Maildir ('user exists' on the next try)."""
    run = backend.home.run
    ok(run("qmail-users", "adddomain", "example.org"))
    blocker = os.path.join(backend.home.root, "vpopmail", "domains", "example.org", "joe")
    open(blocker, "w").close()                  # a file where the mailbox directory goes
    r = run("qmail-users", "adduser", "joe@example.org", "-p", "secret", "-q", "10M")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(b"qmail-users: cannot make the mailbox") and b"bug" not in r.stderr, r.stderr
    assert backend.open().lookup("joe", "example.org") is None
    os.unlink(blocker)
    ok(run("qmail-users", "adduser", "joe@example.org", "-p", "secret"))


def test_adddomain_whose_directory_cannot_be_made_adds_nothing(backend):  # noqa: F811
    """A file where domains/DOMAIN goes: mkdir's EEXIST was taken for the directory, the domain
    was 'added' without one (every mailbox of it then failed); vadddomain makes the directory
    first and adds nothing when it cannot."""
    run = backend.home.run
    ok(run("qmail-users", "adddomain", "example.org"))          # makes vpopmail/domains
    blocker = os.path.join(backend.home.root, "vpopmail", "domains", "blocked.org")
    open(blocker, "w").close()
    r = run("qmail-users", "adddomain", "blocked.org", "--no-rcpthosts", "--no-virtualdomains")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith(b"qmail-users: cannot make the domain directory"), r.stderr
    assert not backend.open().has_domain("blocked.org")
    os.unlink(blocker)
    ok(run("qmail-users", "adddomain", "blocked.org", "--no-rcpthosts", "--no-virtualdomains"))


def test_rcpthosts_follows_domains(home):
    home.control("rcpthosts", "localhost\nmx.example.com\n")
    home.run("qmail-users", "adddomain", "example.org")
    home.run("qmail-users", "addaliasdomain", "example.org", "example.net")
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "localhost\nmx.example.com\nexample.org\nexample.net\n"
    ok(home.run("qmail-users", "deldomain", "example.org"))       # its alias domain goes with it
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "localhost\nmx.example.com\n"


def test_deldomain_takes_its_alias_domains_out_of_the_controls(home):
    """vdeldomain deletes a real domain's alias domains with it, and their lines in rcpthosts and
    virtualdomains (del_control over the list of aliases); the aliasdomains rows went, but
    example.net stayed in rcpthosts and virtualdomains: its mail was still taken at RCPT
    (chkuser: no longer a hosted domain, so not judged) and delivered locally to a domain
    the database no longer knows."""
    home.control("rcpthosts", "localhost\n")
    ok(home.run("qmail-users", "adddomain", "example.org"))
    ok(home.run("qmail-users", "addaliasdomain", "example.org", "example.net"))
    ok(home.run("qmail-users", "adddomain", "other.test"))
    out = ok(home.run("qmail-users", "deldomain", "example.org"))
    assert "control/rcpthosts: removed example.net" in out
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "localhost\nother.test\n"
    with open(os.path.join(home.root, "control", "virtualdomains")) as f:
        assert f.read() == "other.test:other.test\npostmaster@other.test:alias\n"


def test_two_tools_editing_rcpthosts_at_once_keep_both_lines(home):
    """A second tool that edits control/rcpthosts between another's read and write of it: each
    wrote the lines it had read plus its own, so the first writer's domain was lost from
    rcpthosts (its mail refused at RCPT, 553). Here qmail-users adddomain is started at that
    point, while an in-process add_line has read the file and not written it yet; it now waits
    for the lock on control/ and adds its line to the file the first one wrote."""
    from qmailpy.ctl import edit
    home.control("rcpthosts", "localhost\n")
    second = []

    def same(existing):
        if not second:
            second.append(subprocess.Popen([program("qmail-users"), "adddomain", "example.org"],
                                           env=home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            try:
                second[0].wait(3)       # unlocked, it writes now: between our read and our write
            except subprocess.TimeoutExpired:
                pass                    # waiting for the lock we hold
        return existing == "other.test"
    assert edit.add_line(home.root, "rcpthosts", "other.test", same)
    out, err = second[0].communicate(timeout=60)
    assert second[0].returncode == 0, err
    assert b"control/rcpthosts: added example.org" in out
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "localhost\nother.test\nexample.org\n"


def test_control_edits_lock_where_nfs_allows_an_exclusive_flock(home, monkeypatch):
    """flock(2): on NFS Linux emulates flock with POSIX locks, and an exclusive one needs a file
    opened for writing; the lock was an flock of control/ opened read-only, so add_line (qmail-users
    adddomain) failed there with EBADF. It is now control/edit.lock, opened for writing, which
    qmail-showctl --check knows. Here flock refuses as NFS's emulation does."""
    import errno
    import fcntl
    from qmailpy.ctl import edit
    real = fcntl.flock

    def nfs_flock(fd, op):
        if op & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(fd, op)
    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    home.control("rcpthosts", "localhost\n")
    assert edit.add_line(home.root, "rcpthosts", "example.org")
    assert edit.remove_lines(home.root, "rcpthosts", lambda line: line == "localhost") == ["localhost"]
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "example.org\n"
    assert oct(os.stat(os.path.join(home.root, "control", "edit.lock")).st_mode & 0o777) == "0o600"
    r = home.run("qmail-showctl", "--check")
    assert "edit.lock" not in r.stdout.decode(), r.stdout


def test_control_edits_by_whoever_may_not_write_control_or_where_there_is_none(home, tmp_path, monkeypatch):
    """A tool that may not create control/edit.lock (EACCES: a user other than control/'s
    owner; EROFS) takes the flock on control/ itself and can still find nothing to remove; a
    home without control/ has no line to remove and no lock to take."""
    import errno
    from qmailpy.ctl import edit
    home.control("rcpthosts", "localhost\n")
    real = os.open

    def no_lock_file(path, flags, *mode):
        if path.endswith("/edit.lock"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, flags, *mode)
    with monkeypatch.context() as m:
        m.setattr(os, "open", no_lock_file)
        assert edit.remove_lines(home.root, "rcpthosts", lambda line: line == "example.org") == []
        assert edit.remove_lines(home.root, "rcpthosts", lambda line: line == "localhost") == ["localhost"]
    assert not os.path.exists(os.path.join(home.root, "control", "edit.lock"))
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == ""
    assert edit.remove_lines(str(tmp_path / "bare"), "rcpthosts", lambda line: True) == []
    assert not os.path.exists(tmp_path / "bare")


def test_no_rcpthosts_file_is_left_alone(home):
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0 and b"rcpthosts" in r.stderr
    assert not os.path.exists(os.path.join(home.root, "control", "rcpthosts"))


def test_pop_before_smtp_verbs(backend):  # noqa: F811
    run = backend.home.run
    ok(run("qmail-users", "openrelay", "192.0.2.7"))
    users = backend.open()
    assert users.relay_allowed("192.0.2.7", time.time(), 1800)
    assert ok(run("qmail-users", "relays")).startswith("192.0.2.7\t")
    assert ok(run("qmail-users", "clearopensmtp")) == "cleared 0 relay entries\n"
    backend.sql("UPDATE relay SET timestamp = ?", (int(time.time()) - 3600,))
    assert ok(run("qmail-users", "clearopensmtp")) == "cleared 1 relay entry\n"     # popbeforesmtptimeout 1800
    assert ok(run("qmail-users", "relays")) == ""


def test_database_down_exits_111(home):
    home.control("usersdb", "127.0.0.1|1|root||vpopmail\n")
    started = time.monotonic()
    r = home.run("qmail-users", "list")
    assert r.returncode == 111 and b"database unavailable" in r.stderr
    assert time.monotonic() - started < 10


def test_clearopensmtp_with_a_malformed_window_exits_111_and_clears_nothing(home):
    """From cron: popbeforesmtptimeout '30 minutes' used to mean the default 1800; no guess now."""
    home.control("popbeforesmtptimeout", "30 minutes\n")
    ok(home.run("qmail-users", "openrelay", "192.0.2.7"))
    r = home.run("qmail-users", "clearopensmtp")
    assert (r.returncode, r.stdout) == (111, b"")
    assert r.stderr == (b"qmail-users: unable to read controls: control/popbeforesmtptimeout:1: "
                        b"not a number: '30 minutes'\n")
    assert ok(home.run("qmail-users", "relays")).startswith("192.0.2.7\t")


def test_adddomain_makes_the_domain_local_and_deldomain_undoes_it(home):
    """Issue 13 item 9: as vadddomain, the domain goes into rcpthosts and virtualdomains (else its
    mail goes remote), postmaster@ of it to where postmaster@me goes; the output says so."""
    home.control("rcpthosts", "mx.example.com\n")
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[1:] == [
        "control/rcpthosts: added example.org",
        "control/virtualdomains: added example.org:example.org",
        "control/virtualdomains: added postmaster@example.org:alias (postmaster@example.org gets what "
        "postmaster@ of control/me gets: ~alias/.qmail-postmaster)"]
    # nothing runs qmail-send for this home: the exact command to run is printed
    assert ("note: qmail-send reads control/virtualdomains at start and on SIGHUP: run svc -h %s/service/"
            "qmail-send" % home.root) in r.stderr.decode()
    vd = os.path.join(home.root, "control", "virtualdomains")
    with open(vd) as f:
        assert f.read() == "example.org:example.org\npostmaster@example.org:alias\n"
    r = home.run("qmail-showctl")
    assert "virtualdomains:\n  example.org:example.org\n  postmaster@example.org:alias\n" in r.stdout.decode()

    # a postmaster mailbox of its own takes the alias line out; deleting it puts the line back
    r = home.run("qmail-users", "adduser", "postmaster@example.org", "-p", "x")
    assert "control/virtualdomains: removed postmaster@example.org:alias" in r.stdout.decode()
    with open(vd) as f:
        assert f.read() == "example.org:example.org\n"
    r = home.run("qmail-users", "deluser", "postmaster@example.org")
    assert "control/virtualdomains: added postmaster@example.org:alias" in r.stdout.decode()

    r = home.run("qmail-users", "deldomain", "example.org")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "deleted domain example.org", "control/rcpthosts: removed example.org",
        "control/virtualdomains: removed example.org:example.org",
        "control/virtualdomains: removed postmaster@example.org:alias"]
    with open(vd) as f:
        assert f.read() == ""
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "mx.example.com\n"


def test_adddomain_keeps_an_existing_line_and_leaves_options_alone(home):
    home.control("virtualdomains", "example.org:someone\n")
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0
    assert b"note: control/virtualdomains has example.org:someone: kept" in r.stderr
    with open(os.path.join(home.root, "control", "virtualdomains")) as f:
        assert f.read() == "example.org:someone\npostmaster@example.org:alias\n"
    os.unlink(os.path.join(home.root, "control", "virtualdomains"))
    home.control("options", "virtualdomains:\n  example.org:example.org\n")
    r = home.run("qmail-users", "adddomain", "example.net", "--no-rcpthosts")
    assert r.returncode == 0
    assert b"control/virtualdomains is set in control/options: add example.net:example.net there" in r.stderr
    assert not os.path.exists(os.path.join(home.root, "control", "virtualdomains"))


def test_adddomain_tells_make_runs_qmail_send(home, tmp_path):
    """The running qmail-send must learn the new virtualdomains (SIGHUP), as vadddomain does it."""
    import signal
    import subprocess
    fake = tmp_path / "bin" / "qmail-send"
    fake.parent.mkdir()
    got = tmp_path / "got-hup"
    fake.write_text("#!/bin/sh\ntrap 'echo hup >> %s' HUP\nwhile :; do sleep 0.05; done\n" % got)
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake)], start_new_session=True)
    try:
        with open(os.path.join(home.root, "qmail-send.pid"), "w") as f:       # as tools/run.sh writes it
            f.write("%d\n" % proc.pid)
        time.sleep(0.2)                                                          # the trap is set
        r = home.run("qmail-users", "adddomain", "example.org")
        assert r.returncode == 0, r.stderr
        assert "qmail-send told to reread its controls (kill -HUP %d)" % proc.pid in r.stdout.decode()
        deadline = time.monotonic() + 10
        while not got.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.read_text() == "hup\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_syncdomains_makes_another_hosts_controls_follow(mysql_backend, tmp_path):  # noqa: F811
    """Two hosts, one database: adddomain edits the controls where it runs; syncdomains on the
    other host adds what the database hosts, and takes out a named domain it no longer hosts."""
    from conftest import Home
    from mysql_fixture import usersdb_line
    a = mysql_backend.home
    b = Home(tmp_path / "other-host")
    for h in (a, b):
        h.control("rcpthosts", "mx.example.com\n")
        h.control("virtualdomains", "")
    b.control("usersdb", usersdb_line(mysql_backend.mysql.name) + "\n")
    ok(a.run("qmail-users", "adddomain", "example.org"))
    ok(a.run("qmail-users", "adduser", "postmaster@example.org", "-p", "x"))
    ok(a.run("qmail-users", "addaliasdomain", "example.org", "example.net"))
    # example.org has a postmaster mailbox of its own: no postmaster line for it or its alias
    assert ok(b.run("qmail-users", "syncdomains")).splitlines() == [
        "control/rcpthosts: added example.net", "control/virtualdomains: added example.net:example.net",
        "control/rcpthosts: added example.org", "control/virtualdomains: added example.org:example.org"]
    assert ok(b.run("qmail-users", "syncdomains")) == ""
    ctl = lambda h, name: sorted(open(os.path.join(h.root, "control", name)).read().splitlines())  # noqa: E731
    assert ctl(b, "rcpthosts") == ctl(a, "rcpthosts") == ["example.net", "example.org", "mx.example.com"]
    assert ctl(b, "virtualdomains") == ctl(a, "virtualdomains") == ["example.net:example.net",
                                                                    "example.org:example.org"]
    ok(a.run("qmail-users", "deldomain", "example.net"))
    assert ok(b.run("qmail-users", "syncdomains")) == ""             # without names: never removes
    assert ok(b.run("qmail-users", "syncdomains", "Example.NET")).splitlines() == [
        "control/rcpthosts: removed example.net", "control/virtualdomains: removed example.net:example.net"]
    assert ctl(b, "rcpthosts") == ["example.org", "mx.example.com"]


def test_adddomain_finds_a_domains_lines_as_qmail_reads_them(home):
    """adddomain looked for the domain's rcpthosts and virtualdomains lines with rules of its
    own (blanks stripped on both sides, Unicode lower case): a line ' example.org' (or
    ' example.org:example.org'), which qmail-smtpd and qmail-send read as another name, made it
    add nothing, and the domain's mail was refused at RCPT and routed remote. It now asks the
    programs' rules (ctl.parse.strip_line, HostList.key, addr.rewrite.vdom_entry)."""
    from qmailpy.addr.rewrite import LOCAL, Rewriter
    from qmailpy.ctl import rcpthosts
    from qmailpy.ctl.reader import Controls
    home.control("rcpthosts", "mx.example.com\n example.org\n")
    home.control("virtualdomains", "\texample.org:example.org\nexample.org :x\n")
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[1:3] == [
        "control/rcpthosts: added example.org", "control/virtualdomains: added example.org:example.org"]
    controls = Controls(home.root)
    assert rcpthosts.ours(rcpthosts.hosts(controls), None, "joe@example.org")
    assert Rewriter.from_controls(controls).rewrite(b"joe@example.org") == (LOCAL, b"example.org-joe@example.org")
    # the lines qmail reads as the domain's are found: nothing is added twice
    home.control("rcpthosts", "EXAMPLE.NET:  \n")
    home.control("virtualdomains", "Example.Net:example.net \npostmaster@example.net:alias\n")
    r = home.run("qmail-users", "adddomain", "example.net")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[1:] == []
    r = home.run("qmail-users", "deldomain", "example.net")
    assert r.stdout.decode().splitlines()[1:] == [
        "control/rcpthosts: removed EXAMPLE.NET:", "control/virtualdomains: removed Example.Net:example.net",
        "control/virtualdomains: removed postmaster@example.net:alias"]


def test_adddomain_keeps_every_line_as_qmail_splits_them(home):
    """The admin tools split a control file with str.splitlines(), which also breaks at a form
    feed, \\x1c..\\x1e, \\x85 and U+2028: adddomain rewrote 'a.example\\fb.example' (one line that
    qmail-smtpd reads as one name, matching no domain) as two lines, and a.example and
    b.example became domains qmail-smtpd takes mail for. Lines are split at '\\n' only
    (ctl.parse.file_lines), as the programs do."""
    home.control("rcpthosts", "a.example\fb.example\nc.example\u2028d.example\r\n")
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(home.root, "control", "rcpthosts"), "rb") as f:
        assert f.read().decode() == "a.example\fb.example\nc.example\u2028d.example\r\nexample.org\n"


def test_syncdomains_takes_a_domain_name_as_every_other_verb_does(home):
    """syncdomains and deldomain lower-cased the names they were given with str.lower(), which
    makes 'k' of the Kelvin sign: `syncdomains \\u212aexample.org` (a name adddomain refuses)
    took example.org's neighbour kexample.org's line out of rcpthosts. Every verb now takes a
    domain through admin.check_domain (A-Z folded, nothing else)."""
    home.control("rcpthosts", "kexample.org\n")
    r = home.run("qmail-users", "syncdomains", "\u212aexample.org")
    assert (r.returncode, r.stderr.decode()) == (1, "qmail-users: invalid domain name '\u212aexample.org'\n")
    r = home.run("qmail-users", "deldomain", "\u212aexample.org")
    assert (r.returncode, r.stderr.decode()) == (1, "qmail-users: invalid domain name '\u212aexample.org'\n")
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "kexample.org\n"
    r = home.run("qmail-users", "syncdomains", "KEXAMPLE.org.")
    assert r.returncode == 0 and r.stdout.decode().splitlines() == ["control/rcpthosts: removed kexample.org"]


def test_control_files_it_cannot_change_are_said_with_the_way_to_finish(home):
    """adddomain whose control/virtualdomains cannot be written (here a directory in its place):
    the database has the domain, the controls not all of it; exit 111 naming the file and the
    reason, and syncdomains, which says the same while the fault lasts, finishes the job after."""
    home.control("rcpthosts", "x.example\n")
    vd = os.path.join(home.root, "control", "virtualdomains")
    os.mkdir(vd)
    r = home.run("qmail-users", "adddomain", "example.org")
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-users: the users database is changed, but not the "
                                                      "control files: %s: Is a directory (qmail-users syncdomains "
                                                      "example.org makes them follow it)\n" % vd)
    # what was done is said: the domain and the rcpthosts line written before the failure
    assert r.stdout.decode().splitlines()[1:] == ["control/rcpthosts: added example.org"]
    assert r.stdout.decode().startswith("added domain example.org (")
    assert ok(home.run("qmail-users", "list")) == "example.org\n"
    r = home.run("qmail-users", "syncdomains")
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-users: cannot change the control files: "
                                                      "%s: Is a directory\n" % vd)
    os.rmdir(vd)
    ok(home.run("qmail-users", "syncdomains"))
    with open(vd) as f:
        assert f.read() == "example.org:example.org\npostmaster@example.org:alias\n"
    with open(os.path.join(home.root, "control", "rcpthosts")) as f:
        assert f.read() == "x.example\nexample.org\n"


def test_adddomain_leaves_controls_set_in_options_to_the_admin(home):
    """rcpthosts and virtualdomains given in control/options are not edited there: adddomain
    says what to add, exit 0, and makes no control/rcpthosts or control/virtualdomains file
    (one would take the place of the options' lines)."""
    home.control("options", "rcpthosts:\n  x.example\nvirtualdomains:\n  y.example:y\n")
    r = home.run("qmail-users", "adddomain", "example.org")
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().splitlines() == [
        "note: control/rcpthosts is set in control/options: add example.org there yourself",
        "note: control/virtualdomains is set in control/options: add example.org:example.org there yourself"]
    assert sorted(os.listdir(os.path.join(home.root, "control"))) == ["options"]


def test_a_users_directory_that_cannot_be_made_is_exit_111(home):
    """A file where users/ goes: the database cannot be made; exit 111 naming it, no domain
    directory made."""
    open(os.path.join(home.root, "users"), "w").close()
    r = home.run("qmail-users", "adddomain", "example.org")
    assert (r.returncode, r.stdout, r.stderr.decode()) == (
        111, b"", "qmail-users: database unavailable: %s/users: File exists\n" % home.root)
    assert not os.path.exists(os.path.join(home.root, "vpopmail"))


def test_deluser_and_deldomain_whose_directories_are_gone_already(backend):  # noqa: F811
    """A mailbox or domain directory removed by hand before deluser/deldomain: the rows go all
    the same, exit 0 (nothing to set aside is no error)."""
    run = backend.home.run
    ok(run("qmail-users", "adddomain", "example.org"))
    ok(run("qmail-users", "adduser", "joe@example.org", "-p", "secret"))
    vdir = os.path.join(backend.home.root, "vpopmail", "domains", "example.org")
    import shutil
    shutil.rmtree(os.path.join(vdir, "joe"))
    assert ok(run("qmail-users", "deluser", "joe@example.org")) == "deleted joe@example.org\n"
    assert backend.open().lookup("joe", "example.org") is None
    shutil.rmtree(vdir)
    assert ok(run("qmail-users", "deldomain", "example.org")).splitlines()[0] == "deleted domain example.org"
    assert ok(run("qmail-users", "list")) == ""


def test_a_verb_whose_output_cannot_be_written_finishes_its_work_first(home):
    """stdout on a full disk (/dev/full: ENOSPC) ends qmail-users as qmail-qread ends, exit 111 and
    `qmail-users: fatal: unable to write output: out of disk space`, but only once the verb's work
    is whole: the database change and the control files that follow it (rcpthosts,
    virtualdomains). Printing first left a domain in the database that qmail-smtpd refused mail
    for (rcpthosts) and qmail-send delivered remotely (virtualdomains)."""
    home.control("rcpthosts", "mx.example.com\n")
    vd = os.path.join(home.root, "control", "virtualdomains")
    rh = os.path.join(home.root, "control", "rcpthosts")

    def full(*args):
        with open("/dev/full", "wb") as out:
            r = subprocess.run([program("qmail-users"), *args], stdout=out, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=home.env(), timeout=60)
        assert r.returncode == 111, (args, r.stderr)
        assert r.stderr.decode().splitlines()[-1] == "qmail-users: fatal: unable to write output: out of disk space"

    def read(path):
        with open(path) as f:
            return f.read()
    full("adddomain", "example.org")
    assert read(rh) == "mx.example.com\nexample.org\n"
    assert read(vd) == "example.org:example.org\npostmaster@example.org:alias\n"
    full("addaliasdomain", "example.org", "example.net")
    assert read(rh) == "mx.example.com\nexample.org\nexample.net\n"
    full("adduser", "postmaster@example.org", "-p", "x")
    assert "postmaster@example.org:alias" not in read(vd)
    full("deluser", "postmaster@example.org")
    assert "postmaster@example.org:alias" in read(vd)
    full("deldomain", "example.org")
    assert read(rh) == "mx.example.com\n" and read(vd) == ""
    assert ok(home.run("qmail-users", "list")) == ""


def test_a_postmaster_whose_control_line_cannot_follow_says_the_database_is_changed(home):
    """adduser/deluser of postmaster@DOMAIN edit control/virtualdomains after the commit (the
    postmaster@DOMAIN:alias line goes, or comes back): a file that cannot be changed is said as
    every verb says it, the change being kept, and syncdomains finishes it; it was a bare
    `qmail-users: FILE: reason` that read as if nothing were done."""
    vd = os.path.join(home.root, "control", "virtualdomains")
    ok(home.run("qmail-users", "adddomain", "example.org"))
    os.rename(vd, vd + ".kept")
    os.mkdir(vd)
    for verb in (["adduser", "postmaster@example.org", "-p", "x"], ["deluser", "postmaster@example.org"]):
        r = home.run("qmail-users", *verb)
        assert (r.returncode, r.stderr.decode()) == (
            111, "qmail-users: the users database is changed, but not the control files: %s: Is a directory "
                 "(qmail-users syncdomains example.org makes them follow it)\n" % vd), verb
        assert r.stdout.decode().startswith(("added postmaster@example.org (", "deleted postmaster@example.org"))
        os.rmdir(vd)
        os.rename(vd + ".kept", vd)
        ok(home.run("qmail-users", "syncdomains", "example.org"))
        with open(vd) as f:
            assert f.read() == ("example.org:example.org\n" if verb[0] == "adduser"
                                else "example.org:example.org\npostmaster@example.org:alias\n"), verb
        os.rename(vd, vd + ".kept")
        os.mkdir(vd)
