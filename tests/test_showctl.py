"""qmail-showctl, run as the real program: exact output, --check, --json, docs in sync."""
import json
import os

import pytest

from qmailpy import docgen
from qmailpy.ctl import registry as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def postmaster_reachable(home):
    """users/cdb's catch-all (qmail-newu's `+:...`, looked up before passwd, so the host's users
    do not matter): every local address is the user `pm` with ext = the local part, whose
    .qmail-postmaster delivers to pm/Maildir/. Returns pm's directory."""
    from test_send_support import write_users_cdb
    pm = os.path.join(home.root, "pm")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(pm, "Maildir", sub), exist_ok=True)
    with open(os.path.join(pm, ".qmail-postmaster"), "w") as f:
        f.write("./Maildir/\n")
    write_users_cdb(home.root, {b"!": (b"pm", os.getuid(), os.getgid(), pm.encode(), b"-", b"")})
    return pm


def lines_of(result):
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def test_empty_home_prints_defaults(home):
    out = lines_of(home.run("qmail-showctl"))
    assert "concurrencyremote: (Default.) 100" in out
    assert "concurrencylocal: (Default.) 50" in out
    assert "rcpthosts: (Default.) absent" in out
    assert "me: (Default.) %s" % os.uname().nodename in out
    # one head line per registry parameter, in registry order
    heads = [line.split(":")[0] for line in out if not line.startswith("  ")]
    assert heads == [c.name for c in R.CONTROLS]


def test_clamped_value(home):
    home.control("concurrencyremote", "900\n")
    assert "concurrencyremote: 500" in lines_of(home.run("qmail-showctl"))


def test_options_gives_the_same_output_as_files(tmp_path):
    from conftest import Home
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    a.control("concurrencyremote", "900\n")
    a.control("badmailfrom", "@spam.example\nx@y.example\n")
    a.control("me", "mx.example.org\n")
    b.control("options", "concurrencyremote: 900\nbadmailfrom:\n  @spam.example\n  x@y.example\n"
                         "me: mx.example.org\n")
    out_a, out_b = lines_of(a.run("qmail-showctl")), lines_of(b.run("qmail-showctl"))
    assert out_a == out_b
    assert "concurrencyremote: 500" in out_a
    i = out_a.index("badmailfrom:")
    assert out_a[i:i + 3] == ["badmailfrom:", "  @spam.example", "  x@y.example"]


def test_output_is_a_valid_options_file(tmp_path):
    from conftest import Home
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    a.control("me", "mx.example.org\n")
    a.control("databytes", "1000\n")
    a.control("rcpthosts", "example.org\n.example.org\n")
    a.control("smtpgreeting", "hello there\n")
    a.control("spfbehavior", "9\n")
    first = a.run("qmail-showctl").stdout
    b.control("options", first.decode())
    assert b.run("qmail-showctl").stdout == first
    postmaster_reachable(b)
    assert b.run("qmail-showctl", "--check").stdout.decode().splitlines() == []


def test_output_keeps_a_text_value_whole_as_options(tmp_path):
    """A bouncemessage with a blank line and an indented line reads back from the output, put
    into control/options, as the same value (the blank line was dropped, the indent lost)."""
    from conftest import Home
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    a.control("me", "mx.example.org\n")
    a.control("bouncemessage", "Sorry.\n\n  - indented\nEnd.\n")
    first = a.run("qmail-showctl").stdout
    lines = first.decode().splitlines()
    i = lines.index("bouncemessage:")
    assert lines[i:i + 5] == ["bouncemessage:", "  Sorry.", "", "    - indented", "  End."]
    b.control("options", first.decode())
    assert b.run("qmail-showctl").stdout == first


def test_check_flags_number_file_holding_text(home):
    home.control("rcpthosts", "example.org\n")
    home.control("databytes", "ten megabytes\n")
    home.control("mystery", "?\n")
    home.control("options", "frobnicate: 1\n")
    postmaster_reachable(home)
    r = home.run("qmail-showctl", "--check")
    assert r.returncode == 1
    assert r.stdout.decode().splitlines() == [
        "control/databytes:1: not a number: 'ten megabytes'",
        "control/mystery: unknown control file",
        "control/options:1: unknown parameter 'frobnicate'",
    ]


def test_check_clean_home_and_open_relay_warning(home):
    postmaster_reachable(home)
    r = home.run("qmail-showctl", "--check")
    assert r.returncode == 1
    assert r.stdout.decode().splitlines() == [
        "control/rcpthosts: absent: qmail-smtpd accepts mail for any domain (open relay)"]
    home.control("rcpthosts", "example.org\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


@pytest.mark.parametrize("name,text,finding", [
    ("outgoingip", "mx.example.org\n", "control/outgoingip:1: 'mx.example.org' does not appear to be an IPv4 "
                                        "or IPv6 address: qmail-remote defers every delivery"),
    ("clamdsocket", "clamd:port\n", "control/clamdsocket:1: not a socket path or host:port: 'clamd:port': "
                                     "qmail-queue refuses the mail it would filter (exit 55)"),
    ("options", "# sockets\nspamdsocket: ::1:783\n", "control/options:2: spamdsocket: write an IPv6 address as "
     "[address]:port: '::1:783': qmail-queue refuses the mail it would filter (exit 55)"),
])
def test_check_reports_addresses_the_programs_refuse(home, name, text, finding):
    """qmail-remote (outgoingip) and qmail-queue's filters (clamdsocket, spamdsocket) parse these
    with their own rule and stop; --check asks the same rule."""
    postmaster_reachable(home)
    home.control("rcpthosts", "example.org\n")
    home.control(name, text)
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [finding])
    home.control(name, "# sockets\nspamdsocket: [::1]:783\n" if name == "options" else
                 {"outgoingip": "127.0.0.1\n", "clamdsocket": "/run/clamd.ctl\n"}[name])
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


def test_check_reports_smtproutes_ports_read_otherwise_than_written(home):
    """qmail-remote takes an smtproutes port as qmail-remote.c does (scan_ulong, 16 bits): it
    runs on `:smtp` as port 0 and on `:99999` as 34463. The programs keep qmail's reading;
    --check names each such line."""
    postmaster_reachable(home)
    home.control("rcpthosts", "example.org\n")
    home.control("smtproutes", "a.example:relay.example:smtp\n# fine:\nb.example:relay.example:2525\n"
                 ":[IPv6:2001:db8::25]:99999\nc.example:relay.example:25x\nd.example:\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
        "control/smtproutes:1: a.example:relay.example:smtp: port 'smtp' is read as 0: qmail-remote connects there",
        "control/smtproutes:4: :[IPv6:2001:db8::25]:99999: port '99999' is read as 34463: qmail-remote connects there",
        "control/smtproutes:5: c.example:relay.example:25x: port '25x' is read as 25: qmail-remote connects there"])
    home.control("smtproutes", "b.example:relay.example:2525\n:[IPv6:2001:db8::25]\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


def test_check_follows_postmaster_and_double_bounces_to_a_mailbox(home):
    """Issue 24: postmaster@me, postmaster@ of each virtual domain and the double-bounce address
    must reach a mailbox; --check follows them as qmail-send, qmail-lspawn and qmail-local would."""
    home.control("me", "mx.example.org\n")
    home.control("rcpthosts", "mx.example.org\nvirt.example\n")
    home.control("virtualdomains", "virt.example:virt.example\n")
    home.control("doublebounceto", "nobody-here\n")
    pm = postmaster_reachable(home)
    os.rename(os.path.join(pm, "Maildir"), os.path.join(pm, "gone"))

    def check():
        r = home.run("qmail-showctl", "--check")
        return r.returncode, r.stdout.decode().splitlines()
    no_box = "Sorry, no mailbox here by that name. (#5.1.1)"
    assert check() == (1, [
        "control/me: postmaster@mx.example.org reaches no mailbox: Maildir %s/Maildir does not exist" % pm,
        "control/virtualdomains: postmaster@virt.example reaches no mailbox: " + no_box,
        "control/doublebounceto: double bounces to nobody-here@mx.example.org reach no mailbox: " + no_box])
    os.rename(os.path.join(pm, "gone"), os.path.join(pm, "Maildir"))
    # qmail's way for a virtual domain's postmaster (what qmail-users adddomain writes): the
    # address becomes pm-postmaster@virt.example, i.e. ext pm-postmaster, which forwards
    home.control("virtualdomains", "virt.example:virt.example\npostmaster@virt.example:pm\n")
    with open(os.path.join(pm, ".qmail-pm-postmaster"), "w") as f:
        f.write("&postmaster@mx.example.org\n")
    home.control("doublebounceto", "postmaster\n")
    assert check() == (0, [])
    with open(os.path.join(pm, ".qmail-pm-postmaster"), "w") as f:
        f.write("&postmaster@virt.example\n")                 # a loop
    assert check() == (1, ["control/virtualdomains: postmaster@virt.example reaches no mailbox: forwarded to "
                           "postmaster@virt.example: forwarded more than 10 times"])


def test_malformed_value_is_shown_as_trouble_not_as_the_default(home):
    home.control("databytes", "x\n")
    home.control("options", "timeoutsmtpd: soon\n")
    out = lines_of(home.run("qmail-showctl"))
    assert "databytes: (Oops! Trouble reading this file: control/databytes:1: not a number: 'x')" in out
    assert ("timeoutsmtpd: (Oops! Trouble reading this file: control/options:1: timeoutsmtpd: "
            "not a number: 'soon')") in out
    rows = {r["name"]: r for r in json.loads(home.run("qmail-showctl", "--json").stdout)}
    assert rows["databytes"] == {"name": "databytes", "kind": "number",
                                 "error": "control/databytes:1: not a number: 'x'"}


def test_check_reports_malformed_options_and_unreadable_files_once(home):
    home.control("rcpthosts", "example.org\n")
    postmaster_reachable(home)
    home.control("options", "databytes: big\n")
    os.makedirs(os.path.join(home.root, "control", "badmailfrom"))
    r = home.run("qmail-showctl", "--check")
    assert r.returncode == 1
    assert r.stdout.decode().splitlines() == [
        "control/badmailfrom: unable to read: Is a directory",
        "control/options:1: databytes: not a number: 'big'",
    ]


def test_cdbs_and_key_ages_are_summed_up(home):
    """A cdb is shown by its number of keys, or why it cannot be read; the SRS key ages by
    their count and span in days (a line without a time counts as a key, not as an age)."""
    import time
    write_cdb(os.path.join(home.root, "control", "morercpthosts.cdb"), [b"a.example", b"b.example"])
    home.control("spamdclients.cdb", "junk\n")
    now = int(time.time())
    home.control("srs/srs_secrets_age", "k1 %d\nk2 %d\nk3 sometime\n" % (now - 3 * 86400 - 60, now - 10 * 86400 - 60))
    out = lines_of(home.run("qmail-showctl"))
    assert "morercpthosts.cdb: (2 keys)" in out
    assert "clamavclients.cdb: (Default.) absent" in out
    assert "spamdclients.cdb: (unreadable: corrupt cdb: truncated: 5 bytes, shorter than the header)" in out
    assert "srs/srs_secrets_age: (3 keys, newest 3 days, oldest 10 days)" in out
    home.control("srs/srs_secrets_age", "k3 sometime\n")
    assert "srs/srs_secrets_age: (1 keys)" in lines_of(home.run("qmail-showctl"))


def test_options_lines_it_ignores_are_warned_on_stderr(home):
    home.control("options", "concurrencyremote: 20\nnosuchparameter: 1\nconcurrencyremote: 30\n")
    r = home.run("qmail-showctl")
    assert "concurrencyremote: 30" in lines_of(r)
    assert r.stderr.decode().splitlines() == [
        "qmail-showctl: warning: control/options:2: unknown parameter 'nosuchparameter'",
        "qmail-showctl: warning: control/options:3: concurrencyremote given again; this line wins",
    ]


def test_check_says_a_control_it_cannot_read_once_and_never_as_absent(home):
    """rcpthosts, authfailshared, a control of postmaster's route or one a program's own rule
    asks again that cannot be read is reported once, as unreadable, not as the open relay or
    the default it is not; AUTH offered only over TLS without a certificate is said."""
    postmaster_reachable(home)
    os.makedirs(os.path.join(home.root, "control", "rcpthosts"))
    home.control("authfailshared", "maybe\n")
    home.control("smtpauth", "1\n")
    os.makedirs(os.path.join(home.root, "control", "locals"))
    for name in ("outgoingip", "badhelo"):         # asked again by qmail-remote's, qmail-smtpd's rules
        os.makedirs(os.path.join(home.root, "control", name))
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
        "control/authfailshared:1: not a number: 'maybe'",
        "control/badhelo: unable to read: Is a directory",
        "control/locals: unable to read: Is a directory",
        "control/outgoingip: unable to read: Is a directory",
        "control/rcpthosts: unable to read: Is a directory",
        "control/smtpauth: AUTH is offered only over TLS and there is no control/servercert.pem "
        "(set control/smtpauthplaintext for clients without TLS)",
        "control: cannot follow postmaster's route: control/locals: unable to read: Is a directory",
    ])


def test_check_says_why_a_servercert_cannot_be_read(home):
    """A servercert.pem that cannot be read (here a directory in its place) is said so, with
    the reason, not as a file without a certificate; qmail-smtpd offers no STARTTLS then."""
    os.makedirs(os.path.join(home.root, "control", "servercert.pem"))
    r = home.run("qmail-showctl", "--check")
    assert ("control/servercert.pem: unreadable: Is a directory: qmail-smtpd offers no STARTTLS"
            in r.stdout.decode().splitlines()), r.stdout


def test_json(home):
    home.control("databytes", "1000\n")
    rows = json.loads(home.run("qmail-showctl", "--json").stdout)
    by = {r["name"]: r for r in rows}
    assert by["databytes"] == {"name": "databytes", "kind": "number", "default": False,
                               "source": "control/databytes", "value": 1000}
    assert by["concurrencyremote"]["default"] is True


def test_secrets_are_never_printed(home):
    home.control("srs/srs_secrets", "topsecret1\ntopsecret2\n")
    home.control("srs/srs_secrets_age", "topsecret1 %d\n" % 0)
    r = home.run("qmail-showctl")
    out = lines_of(r)
    assert "srs/srs_secrets: (2 keys)" in out
    assert b"topsecret" not in r.stdout + home.run("qmail-showctl", "--json").stdout


def test_docs_are_generated_from_the_registry():
    stale = []
    for path, text in docgen.pages(os.path.join(ROOT, "docs")).items():
        with open(path) as f:
            if f.read() != text:
                stale.append(path)
    assert stale == [], "run `make docs`"


CDBS = ["control/morercpthosts.cdb", "control/clamavclients.cdb", "control/spamdclients.cdb",
        "control/tcp.smtp.cdb", "users/cdb"]


def write_cdb(path, keys):
    import cdblib
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        for k in keys:
            w.put(k, b"")


@pytest.mark.parametrize("name", CDBS)
@pytest.mark.parametrize("damage", ["truncated", "text", "table", "directory"])
def test_check_opens_every_cdb_and_reports_a_corrupt_one(home, name, damage):
    home.control("rcpthosts", "example.org\n")
    postmaster_reachable(home)            # writes users/cdb: damaged below in its turn
    path = os.path.join(home.root, name)
    if name != "users/cdb":
        write_cdb(path, [b"example.net", b"@example.com", b"bob@example.org"])
    assert home.run("qmail-showctl", "--check").stdout == b""
    data = open(path, "rb").read()
    if damage == "truncated":
        data = data[:-5]
    elif damage == "text":
        data = b"example.net\n" * 300
    elif damage == "table":              # a hash table slot pointing into the middle of a record
        data = data[:-4] + (2049).to_bytes(4, "little")
    os.unlink(path)
    if damage == "directory":
        os.mkdir(path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    r = home.run("qmail-showctl", "--check")
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    if name == "users/cdb":              # postmaster's way goes through users/cdb too
        assert lines[1:] and all(x.startswith(("control/me: postmaster@", "control/doublebounceto: "))
                                 and x.endswith("Trouble reading users/cdb in qmail-lspawn.")
                                 for x in lines[1:]), lines
        lines = lines[:1]
    [line] = lines
    expected = {"truncated": "corrupt cdb: truncated: hash table", "text": "corrupt cdb: truncated: hash table",
                "table": "corrupt cdb: hash table", "directory": "unable to read: Is a directory"}[damage]
    assert line.startswith("%s: %s" % (name, expected)), line


def test_check_reports_route_and_tls_keys_that_are_no_valid_idn(home):
    """qmail-remote looks smtproutes and tlsdestinations up by a host's A-labels; a non-ASCII key
    that is no valid IDN (here a label starting with a hyphen, and a Latin-1 byte that is not
    UTF-8) is kept as written and so matches no host. The programs run on; --check names the line."""
    postmaster_reachable(home)
    home.control("rcpthosts", "example.org\n")
    with open(os.path.join(home.root, "control", "smtproutes"), "wb") as f:
        f.write("bücher.example:relay.example\n-bücher.example:relay.example\n".encode()
                + b"caf\xe9.example:relay.example:smtp\n")
    with open(os.path.join(home.root, "control", "tlsdestinations"), "wb") as f:
        f.write("-bücher.example\n!-bücher.example\n.bücher.example\n".encode())
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode("utf-8", "surrogateescape").splitlines()) == (1, [
        "control/smtproutes:2: -bücher.example:relay.example: not a valid internationalized domain name "
        "(Label must not start or end with a hyphen): qmail-remote routes no host by it",
        "control/smtproutes:3: caf\udce9.example:relay.example:smtp: port 'smtp' is read as 0: "
        "qmail-remote connects there",
        "control/smtproutes:3: caf\udce9.example:relay.example:smtp: not a valid internationalized domain name "
        "('utf-8' codec can't decode byte 0xe9 in position 3: invalid continuation byte): "
        "qmail-remote routes no host by it",
        "control/tlsdestinations:2: !-bücher.example: not a valid internationalized domain name "
        "(Label must not start or end with a hyphen): qmail-remote applies it to no host"])
    home.control("smtproutes", "bücher.example:relay.example\n")
    home.control("tlsdestinations", "-bücher.example\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


def test_check_reports_relayclients_lines_no_client_matches(home):
    """qmail-smtpd compares the client's IP with each relayclients line as tcpserver writes it
    (an address, or a prefix ending in '.' or ':'): a CIDR, a tcprules rule or a host name
    there lets nobody relay, silently; --check names each such line."""
    postmaster_reachable(home)
    home.control("rcpthosts", "example.org\n")
    home.control("relayclients", "10.0.0.0/8\n192.168.1.\n# office\n1.2.3.4:allow\n127.0.0.1:\n"
                                 "2001:db8::\nmail.example.org\n2001:DB8::25\n")
    r = home.run("qmail-showctl", "--check")
    why = ": no IP address or prefix ('192.0.2.7', '192.168.1.', '2001:db8::'): qmail-smtpd lets no client relay by it"
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
        "control/relayclients:1: 10.0.0.0/8" + why,
        "control/relayclients:4: 1.2.3.4:allow" + why,
        "control/relayclients:7: mail.example.org" + why])
    home.control("relayclients", "10.\n192.168.1.\n127.0.0.1:\n2001:db8::\n2001:DB8::25\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (chown)")
def test_check_reports_a_users_cdb_root_does_not_own(home):
    """qmail-lspawn, as root, defers every delivery users/cdb would answer when root does not own
    it (users/ is qmailu's); --check, run by root, names the file and why."""
    from test_send_support import write_users_cdb
    home.control("rcpthosts", "example.org\n")
    write_users_cdb(home.root, {b"!joe\0": (b"joe", 65534, 65534, b"/home/joe", b"", b"")})
    path = os.path.join(home.root, "users", "cdb")
    assert b"users/cdb" not in home.run("qmail-showctl", "--check").stdout
    os.chown(path, 65534, 65534)
    lines = home.run("qmail-showctl", "--check").stdout.decode().splitlines()
    assert ("users/cdb: belongs to uid 65534, not root: qmail-lspawn defers the deliveries it would "
            "assign (chown root users/cdb if it is yours)") in lines, lines


def test_check_reports_pattern_lines_that_never_match(home):
    """spamcontrol's wildmat matches nothing by a pattern with an unclosed '[' or a final
    backslash, so such a badmailpatterns (badrcptpatterns, badhelo, blackholedsender) line
    refuses nobody, silently; --check names each, parsed by qmail-smtpd's PatternList."""
    postmaster_reachable(home)
    home.control("rcpthosts", "example.org\n")
    home.control("badmailpatterns", "*@[spam.example\n# note\n!ok@[x].example\n*@spam.example\n")
    home.control("badrcptpatterns", "!*\\\n[a-\n")
    home.control("badhelo", "[]\n[!]]x\n")
    home.control("blackholedsender", "*@[1-9\n")
    r = home.run("qmail-showctl", "--check")
    why = ": an unclosed '[' or a final backslash: qmail-smtpd's wildmat matches nothing by it"
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
        "control/badmailpatterns:1: *@[spam.example" + why,
        "control/badhelo:1: []" + why,
        "control/badrcptpatterns:1: !*\\" + why,
        "control/badrcptpatterns:2: [a-" + why,
        "control/blackholedsender:1: *@[1-9" + why])
    home.control("badmailpatterns", "*@\\[spam.example\n[[]x\n*@[!a-z]*\n")
    home.control("badrcptpatterns", "!*\\\\\n")
    home.control("badhelo", "[]]\n")
    home.control("blackholedsender", "*@[1-9]\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout) == (0, b"")


def test_check_with_a_nul_in_doublebounceto(home):
    """The double-bounce address followed to a mailbox held a NUL: pwd.getpwnam() raised
    ValueError and --check ended in `internal bug` (exit 111). Such an address reaches
    no mailbox: no queue entry can hold it (its records end at NUL). Once the route went on
    to the alias user's .qmail files (where a test before had made alias), open() of a name
    with the NUL raised ValueError too. (Found by tests/fuzz/test_fuzz_programs.py.)"""
    home.control("me", "fuzz.example\n")
    with open(os.path.join(home.root, "control", "doublebounceto"), "wb") as f:
        f.write(b"\xff\xfe\x00\n")
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stderr) == (1, b"")
    assert (b"\ncontrol/doublebounceto: double bounces to \xff\xfe\x00@fuzz.example reach no mailbox: "
            b"a NUL in the address, which no queue entry can hold\n") in r.stdout


@pytest.mark.parametrize("dotqmail,mode,finding", [
    ("./Mailbox\n", 0o644, None),                                     # an mbox that may be made
    ("./nodir/Mailbox\n", 0o644, "mbox {pm}/nodir/Mailbox: no such directory"),
    ("|/usr/bin/procmail\n", 0o644, None),                            # what a program does is its own
    ("+list\n", 0o644, "a mailing-list line (+list) only"),
    ("./Maildir/\n", 0o666, "Uh-oh: .qmail file is writable. (#4.7.0)"),   # qmail-local defers it
])
def test_check_follows_each_kind_of_dotqmail_line(home, dotqmail, mode, finding):
    home.control("me", "mx.example.org\n")
    home.control("rcpthosts", "mx.example.org\n")
    home.control("doublebounceto", "postmaster\n")
    pm = postmaster_reachable(home)
    path = os.path.join(pm, ".qmail-postmaster")
    with open(path, "w") as f:
        f.write(dotqmail)
    os.chmod(path, mode)
    r = home.run("qmail-showctl", "--check")
    if finding is None:
        assert (r.returncode, r.stdout) == (0, b"")
    else:
        finding = finding.format(pm=pm)
        assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
            "control/me: postmaster@mx.example.org reaches no mailbox: " + finding,
            "control/doublebounceto: double bounces to postmaster@mx.example.org reach no mailbox: " + finding])


def test_check_says_when_postmasters_route_cannot_be_followed(home):
    home.control("me", "mx.example.org\n")
    home.control("rcpthosts", "mx.example.org\n")
    postmaster_reachable(home)
    os.makedirs(os.path.join(home.root, "control", "virtualdomains"))        # unreadable
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode().splitlines()) == (1, [
        "control/virtualdomains: unable to read: Is a directory",
        "control: cannot follow postmaster's route: control/virtualdomains: unable to read: Is a directory"])


def test_check_with_a_doublebounceto_it_cannot_read(home):
    """The route is followed only as far as the controls can be read: an unreadable
    doublebounceto is named, and so is the route it stops, never a traceback."""
    home.control("rcpthosts", "example.org\n")
    os.makedirs(os.path.join(home.root, "control", "doublebounceto"))
    r = home.run("qmail-showctl", "--check")
    assert (r.returncode, r.stdout.decode().splitlines(), r.stderr) == (1, [
        "control/doublebounceto: unable to read: Is a directory",
        "control: cannot follow postmaster's route: control/doublebounceto: unable to read: Is a directory"], b"")
