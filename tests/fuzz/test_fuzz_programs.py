"""Every program in bin/ under hostile argv, environment, stdin and control files.

Each program runs as a process on a qmail home laid out by tools/install.py (single-user,
as the rest of the suite), with generated arguments (its own options, unknown ones, odd
bytes, very long ones), the environment variables its docs page names (empty, huge,
not UTF-8, not a number), stdin (random bytes, empty, closed) and the control files it
reads (random, malformed, not UTF-8, huge, a directory, a symlink loop). Whatever it is
given: no Python traceback, an exit code its docs page lists (CODES, each checked against
docs/<program>.md below), and stderr lines in the program's own format (qmail's
`program: ...`, or the log lines docs/<program>.md shows).

The daemons (qmail-send, qmail-queued, qmail-tcpserver, qmail-usersd) start once per
broken control: they must say so in one line and exit 111, never traceback.
Brief in `make test` (a few derandomized examples a program), at length in `make fuzz`.
What it found is pinned in the programs' own tests (test_programs_start.py: started with
fd 0 closed; test_showctl.py: a NUL in doublebounceto).
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import Phase, given, strategies as st

from conftest import ROOT, program
from fuzz.profile import fuzz_settings
from qmailpy.ctl.registry import CONTROLS

PYTHON = os.path.join(ROOT, ".venv", "bin", "python3")

# program -> documented exit codes (docs/<program>.md), arguments that make a normal run
# (where a run needs some), the first words its stderr lines may start with.
QQ_CODES = {0, 11, 31, 51, 52, 53, 54, 55, 56, 61, 62, 63, 64, 65, 66, 71, 72, 73, 74, 81, 91}
# qmail-remote's host: routed by the template's smtproutes to a port where nothing listens (and,
# when the fuzz replaces that file, looked up on the suite's dead DNS server), never to port 25,
# where this host's own MTA may listen.
REMOTE = "fuzz.invalid"
CLICK = ("Usage:", "Try ", "Error:", "Options:", "Commands:")   # a click program's usage error (exit 2)
SPECS = {
    "bouncesaying": ({0, 100, 111}, ["error", "true"], ("",)),      # its error text, verbatim
    "condredirect": ({0, 99, 100, 111}, ["a@b.example", "true"], ("qmail-queue:",)),
    "except": ({0, 100, 111}, ["true"], ()),
    "forward": ({0, 100, 111}, ["a@b.example"], ("qmail-queue:",)),
    "maildirmake": ({0, 100, 111}, ["{home}/md"], ()),
    "preline": ({0, 100, 111}, ["true"], ()),
    "qmail-clean": ({0, 111}, [], ()),
    "qmail-config": ({0, 1, 2, 111}, ["--missing", "fuzz.example"], CLICK),
    "qmail-inject": ({0, 100, 111}, ["a@b.example"], ("qmail-queue:",)),
    "qmail-local": ({0, 99, 100, 111}, ["u", "{home}", "u", "-", "", "d.example", "s@x.example", "./Maildir/"],
                    ("Unable", "Uh-oh", "Sorry", "This message", "User over", "did ")),
    "qmail-lspawn": ({0, 111}, ["./Maildir/"], ("alert:",)),
    "qmail-newfilters": ({0, 2, 111}, [], CLICK),
    "qmail-newmrh": ({0, 100, 111}, [], ()),
    "qmail-newu": ({0, 100, 111}, [], ()),
    "qmail-policytest": ({0, 1, 2, 3, 111}, ["--ip", "127.0.0.1", "--no-tcprules"], CLICK),
    "qmail-qread": ({0, 2, 111}, [], CLICK),
    "qmail-qstat": ({0, 2, 111}, [], CLICK),
    "qmail-queue": (QQ_CODES, [], ()),
    "qmail-remote": ({0, 111}, [REMOTE, "s@x.example", "r@y.example"], ()),     # the template's route
    "qmail-rspawn": ({0, 111}, [], ("alert:",)),
    "qmail-showctl": ({0, 1, 2, 111}, [], CLICK + ("control/", "users/", "alias/")),
    "qmail-smtpd": ({0, 1}, [], ()),
    "qmail-tcpok": ({0, 100, 111}, [], ()),
    "qmail-todo": ({0, 111}, [], ("alert:",)),
    "qmail-users": ({0, 1, 2, 111}, ["list"], CLICK),
    "sendmail": ({0, 1, 2, 100, 111}, ["a@b.example"], ("qmail-inject:", "qmail-smtpd:", "qmail-queue:")),
    "setsrssecret": ({0, 2, 111}, [], CLICK),
}
DAEMONS = {"qmail-send": ["./Maildir/"], "qmail-queued": [], "qmail-usersd": [],
           "qmail-tcpserver": ["127.0.0.1", "0", "qmail-smtpd"]}
DAEMON_CODES = {"qmail-send": {0, 111}, "qmail-queued": {0, 100, 111}, "qmail-usersd": {0, 100, 111},
                "qmail-tcpserver": {0, 100, 111}}

OPTIONS = {
    "maildirmake": ["-q", "-f", "1000S", "folder"],
    "preline": ["-f", "-r", "-d", "-F", "-R", "-D"],
    "qmail-inject": ["-a", "-A", "-h", "-H", "-n", "-N", "-f", "-fs@x.example"],
    "qmail-local": ["-n", "-N"],
    "qmail-policytest": ["--ip", "--host", "--helo", "--from", "--rcpt", "--auth", "--env", "--local-ip",
                         "--dns", "--answers", "X=1", "example.com A 1.2.3.4"],
    "qmail-qread": ["--json"], "qmail-qstat": ["--json"], "qmail-showctl": ["--check", "--json"],
    "qmail-config": ["--force", "--missing"], "qmail-newfilters": ["-v", "clamavclients", "spamdclients"],
    "qmail-users": ["list", "info", "adddomain", "setquota", "relays", "a@b.example", "10M"],
    "setsrssecret": ["--show", "-v"],
    "sendmail": ["-t", "-f", "-F", "-bp", "-bs", "-oi", "-q", "-i", "-Fname"],
}
ODD = ["-Z", "--bogus", "-", "--", "", "--help=x", b"\xff\xfe", b"-\xff", "x" * 5000, "a@b@c", "%s", "\n"]

# The environment variables a program reads, as its docs page names them.
ENVIRONMENT = {
    "qmail-smtpd": ["TCPREMOTEIP", "TCPLOCALIP", "TCPREMOTEHOST", "TCPLOCALHOST", "TCPREMOTEINFO",
                    "RELAYCLIENT", "DATABYTES", "MAXRECIPIENTS", "TARPITCOUNT", "TARPITDELAY",
                    "AUTHFAILDELAY", "SMTPS", "TLSCIPHERS", "SPFBEHAVIOR", "QMAILQUEUE", "DNSTIMEOUT"],
    "qmail-inject": ["QMAILUSER", "QMAILNAME", "QMAILHOST", "QMAILSUSER", "QMAILSHOST", "QMAILINJECT",
                     "QMAILMFTFILE", "QMAILDEFAULTDOMAIN", "QMAILDEFAULTHOST", "QMAILPLUSDOMAIN",
                     "QMAILIDHOST", "MAILUSER", "MAILNAME", "MAILHOST", "USER", "LOGNAME", "NAME",
                     "QMAILQUEUE"],
    "qmail-local": ["QMAILQUEUE", "MAILDIRQUOTA"],
    "preline": ["UFLINE", "RPLINE", "DTLINE"],
    "forward": ["NEWSENDER", "DTLINE", "QMAILQUEUE"],
    "condredirect": ["NEWSENDER", "DTLINE", "QMAILQUEUE"],
    "bouncesaying": ["SENDER"], "except": ["SENDER"],
    "qmail-queue": ["TCPREMOTEIP", "SPFRESULT", "DNSCACHEIP"],
    "qmail-remote": ["DNSCACHEIP", "DNSTIMEOUT"],
    "qmail-lspawn": ["QMAILLOCAL", "QMAILPY_PASSWD"], "qmail-rspawn": ["QMAILREMOTE"],
    "qmail-policytest": ["DNSCACHEIP", "DNSTIMEOUT"],
}
ENVIRONMENT["sendmail"] = ENVIRONMENT["qmail-inject"]
NASTY_VALUES = [b"", b"\xff\xfe", b"x" * 100000, b"-1", b"abc", b"99999999999999999999999", b"nan",
                b"1.2.3.4:99999", b"::", b"/nonexistent"]

# Which controls a program reads: the registry's readers (sendmail is qmail-inject's,
# qmail-policytest reads as qmail-smtpd; qmail-showctl reads them all).
AS_READER = {"sendmail": "qmail-inject", "qmail-policytest": "qmail-smtpd", "qmail-tcpserver": "qmail-smtpd"}


def controls_of(name):
    reader = AS_READER.get(name, name)
    found = [c.name for c in CONTROLS if name == "qmail-showctl" or reader in c.readers or name in c.readers]
    return sorted(set(found)) + ["options"]


CONTROL_VALUES = st.one_of(
    st.sampled_from([b"\xff\xfe\x00\n", b"", b"\n\n", b"abc\n", b"-5\n", b"99999999999999999999999999\n",
                     b"1 2\n", b":::\n", b"[\n", b"\\\n", b"x" * 300000, "directory", "loop"]),
    st.binary(max_size=200))


def token(name):
    return st.one_of(st.sampled_from(OPTIONS.get(name, []) + ODD), st.binary(min_size=1, max_size=12).filter(
        lambda b: b"\0" not in b and not b.startswith((b"|", b"/", b"."))))


def case(name):
    envs = ENVIRONMENT.get(name, []) + ["QMAILHOME_SUB"]
    return st.fixed_dictionaries({
        "argv": st.tuples(st.booleans(), st.lists(token(name), max_size=4)),
        "env": st.dictionaries(st.sampled_from(envs), st.one_of(st.sampled_from(NASTY_VALUES),
                               st.binary(max_size=20).filter(lambda b: b"\0" not in b)), max_size=3),
        "stdin": st.one_of(st.none(), st.just(b""), st.binary(max_size=2000)),
        "controls": st.dictionaries(st.sampled_from(controls_of(name)), CONTROL_VALUES, max_size=2),
    })


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One qmail home laid out by tools/install.py; each program gets a copy."""
    top = tmp_path_factory.mktemp("fuzzhome")
    home = str(top / "qmail")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), home, ROOT, PYTHON,
                        "--me", "fuzz.example"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(home, "control", "smtproutes"), "w") as f:
        f.write("%s:127.0.0.1:1\n" % REMOTE)
    return home


def copy_home(template, where):
    dest = os.path.join(str(where), "qmail")
    subprocess.run(["cp", "-a", template, dest], check=True)
    return dest


def put_control(home, name, value):
    """Write control/name as `value` ("directory", "loop" or bytes); return how to undo it."""
    path = os.path.join(home, "control", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    saved = None
    if os.path.lexists(path) and not os.path.isdir(path):
        with open(path, "rb") as f:
            saved = f.read()
    remove(path)
    if value == "directory":
        os.mkdir(path)
    elif value == "loop":
        os.symlink(os.path.basename(path), path)
    else:
        with open(path, "wb") as f:
            f.write(value)
    return path, saved


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)


def restore(path, saved):
    remove(path)
    if saved is not None:
        with open(path, "wb") as f:
            f.write(saved)


def environment(home, extra):
    env = {k.encode(): v.encode() for k, v in os.environ.items()}
    env[b"QMAILHOME"] = home.encode()
    for key, value in extra.items():
        if key == "QMAILHOME_SUB":            # a home that is not there, or not a directory
            env[b"QMAILHOME"] = home.encode() + b"/" + value.replace(b"/", b"_")[:50]
        elif key == "DNSCACHEIP":             # after the suite's dead local server (conftest): a value
            env[b"DNSCACHEIP"] = os.environb[b"DNSCACHEIP"] + b" " + value  # naming none is resolv.conf's
        else:
            env[key.encode()] = value
    return env


def run(name, home, argv, env, stdin, timeout=20):
    """The program's (exit code, stderr); stdin None: started with fd 0 closed."""
    args = [a.replace("{home}", home) if isinstance(a, str) else a for a in argv]
    closed = stdin is None
    proc = subprocess.Popen([program(name), *args], stdin=subprocess.DEVNULL if closed else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=home,
                            start_new_session=True, preexec_fn=(lambda: os.close(0)) if closed else None)
    try:
        _, err = proc.communicate(None if closed else stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # and whatever it started, holding the pipes
        proc.communicate()
        raise AssertionError("%s did not end in %d s" % (name, timeout)) from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a child it left behind
        except ProcessLookupError:
            pass
    return proc.returncode, err


QQ_INJECT_NO_HOME = "qmail-inject: fatal: internal bug\n"   # qmail's die_chdir(): the home is not there
QUOTES_A_LINE = {"qmail-inject", "sendmail"}   # `unable to parse this line:` and the line


def check(name, code, err, codes, prefixes, given_input, argv=()):
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text, (given_input, text)
    assert "internal bug" not in text.replace(QQ_INJECT_NO_HOME, ""), (given_input, text)
    assert code in codes, (code, given_input, text[-2000:])
    lines = text.split("\n")
    if name in QUOTES_A_LINE or any(b"\n" in os.fsencode(a) for a in argv):
        lines = lines[:1]                     # the rest is the line, or the argument, quoted
    for line in lines:
        if not line.strip() or line.startswith((" ", "\t")):
            continue
        assert line.startswith((name + ":", "fatal:", "warning:") + prefixes), (line, given_input)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_program_never_tracebacks(name, template, tmp_path):
    codes, base, prefixes = SPECS[name]
    home = copy_home(template, tmp_path)

    @fuzz_settings(6, derandomize=True, phases=(Phase.explicit, Phase.generate))
    @given(case(name))
    def one(c):
        with_base, extra = c["argv"]
        argv = (list(base) if with_base else []) + extra
        undo = [put_control(home, n, v) for n, v in c["controls"].items()]
        try:
            code, err = run(name, home, argv, environment(home, c["env"]), c["stdin"])
        finally:
            for path, saved in reversed(undo):
                restore(path, saved)
        check(name, code, err, codes, prefixes, c, argv)
    one()


def test_a_fuzzed_dnscacheip_keeps_the_lookups_on_this_host(tmp_path):
    """A DNSCACHEIP that names no server (empty, `abc`, a bad port) makes the programs ask
    /etc/resolv.conf's name servers, off this host, and wait on them: the fuzzed value comes
    after the suite's dead local server (conftest), so its junk is still parsed and skipped."""
    import ipaddress
    from qmailpy.dns import servers
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    for value in NASTY_VALUES + [b"\x01", b"1.2.3.4:0"]:
        env = environment(str(tmp_path), {"DNSCACHEIP": value})
        asked = servers.load({"DNSCACHEIP": os.fsdecode(env[b"DNSCACHEIP"])}, str(resolv)).servers
        assert asked and all(ipaddress.ip_address(ip).is_loopback or ip == "::" for ip, _ in asked), (value, asked)


def test_every_program_is_covered():
    """A new program in bin/ joins this module: SPECS or DAEMONS names it."""
    launchers = {n for n in os.listdir(os.path.join(ROOT, "bin")) if n != "README.md"}
    assert launchers == set(SPECS) | set(DAEMONS)


@pytest.mark.parametrize("name", sorted(set(SPECS) | set(DAEMONS)))
def test_documented_exit_codes_are_in_the_docs(name):
    """Each code CODES accepts is written in docs/<program>.md (or the page it defers to)."""
    codes = SPECS[name][0] if name in SPECS else DAEMON_CODES[name]
    with open(os.path.join(ROOT, "docs", name + ".md")) as f:
        text = f.read()
    if name == "sendmail":                    # "qmail-inject's, qmail-smtpd's, qmail-qread's"
        for other in ("qmail-inject", "qmail-smtpd", "qmail-qread"):
            with open(os.path.join(ROOT, "docs", other + ".md")) as f:
                text += f.read()
    written = {int(n) for n in re.findall(r"(?<![\d.-])(\d+)(?![\d.])", text)}
    for low, high in re.findall(r"(?<![\d.])(\d+)-(\d+)(?![\d.])", text):     # "62-66"
        written.update(range(int(low), int(high) + 1))
    assert codes <= written, (name, sorted(codes - written))


# -- the daemons: a broken control at start-up ----------------------------------------------

BROKEN = [b"\xff\xfe\x00\n", b"abc\n", "directory", "loop"]
# Controls each daemon reads at start (qmail-send: each must stop it, naming the file; in
# control/options only an unreadable file does, its bad lines are qmail-showctl's findings) or
# later, per message or per connection (the others: they start, and stop at SIGTERM).
DAEMON_CONTROLS = {"qmail-send": ["concurrencylocal", "queuelifetime", "bouncemaxbytes", "options"],
                   "qmail-queued": ["options", "timeoutqueue"],
                   "qmail-usersd": ["options", "srs/srs_secrets"],
                   "qmail-tcpserver": ["databytes", "servercert.pem", "options"]}


def must_stop(name, control, value):
    """qmail-send stops on each broken control it reads at start (in control/options only
    on an unreadable file)."""
    return name == "qmail-send" and (control != "options" or value in ("directory", "loop"))


@pytest.mark.parametrize("name", sorted(DAEMONS))
def test_daemon_start_with_broken_controls(name, template, tmp_path):
    """Started on a home with a broken control, a daemon logs one line and exits with a
    documented code (qmail-send: 111, the line naming the file), or keeps running until
    SIGTERM when it reads that control later; never a traceback. All cases run at once,
    each on its own copy of the home."""
    argv = DAEMONS[name]
    if name == "qmail-tcpserver":
        argv = argv[:2] + [program("qmail-smtpd")]
    procs = []
    for i, control in enumerate(DAEMON_CONTROLS[name]):
        for j, value in enumerate(BROKEN):
            where = tmp_path / ("%d-%d" % (i, j))
            where.mkdir()
            home = copy_home(template, where)
            put_control(home, control, value)
            proc = subprocess.Popen([program(name), *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=environment(home, {}), cwd=home, start_new_session=True)
            procs.append(((control, value), proc))
    deadline = time.time() + 2
    results = []
    for given_input, proc in procs:
        try:        # one that must stop by itself is waited for: under load 2 s may not start it
            timeout = 60 if must_stop(name, *given_input) else max(0.1, deadline - time.time())
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()                  # svc -d
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                code = "did not stop at SIGTERM"
            if code == -signal.SIGTERM:       # still starting, before its handler was set (under
                code = 0                      # load): the default action, as for a C daemon
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        results.append((given_input, code, proc.stderr.read().decode("utf-8", "replace")))
        proc.stderr.close()
    for (control, value), code, text in results:
        assert "Traceback" not in text and "internal bug" not in text, (control, value, text)
        assert code in DAEMON_CODES[name], (control, value, code, text[-2000:])
        if must_stop(name, control, value):
            assert code == 111 and "alert: cannot start: unable to read controls: control/%s" % control \
                in text, (control, value, code, text)

