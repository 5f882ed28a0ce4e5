"""qmail-tcpserver's environment and log line built in-process (qmailpy.tcpserver.tcpenv),
exact to the entry and the byte; tests/test_tcpserver.py compares the same through the real
tcpserver and the programs, and these name each step so a mutant of it shows."""
from qmailpy.tcpserver.child import Connection
from qmailpy.tcpserver.tcpenv import environ_of, verdict_line


class Sock:
    def __init__(self, ip):
        self.ip = ip

    def getsockname(self):
        return (self.ip, 25)


def ipv4(**names):
    conn = Connection(Sock("127.0.0.1"), ("10.1.2.3", 4000))
    conn.local_host = "mx.example.org"
    for name, value in names.items():
        setattr(conn, name, value)
    return conn


def test_rule_instructions_come_after_tcpservers_own_and_replace_them_in_pathexecs_order():
    """A stale TCPREMOTEHOST of the parent removed (no name found), the rule's RELAYCLIENT
    set, a rule's TCPLOCALHOST replacing tcpserver's, each removal moving the last entry
    into its place as pathexec() does."""
    env = environ_of(["PATH=/bin", "TCPREMOTEHOST=stale", "QMAILQUEUE=x"], ipv4(),
                     {"RELAYCLIENT": "", "TCPLOCALHOST": "ruled", "DATABYTES": "a=b"})
    assert list(env.items()) == [
        ("PATH", "/bin"), ("TCPREMOTEPORT", "4000"), ("QMAILQUEUE", "x"), ("PROTO", "TCP"),
        ("TCPLOCALIP", "127.0.0.1"), ("TCPLOCALPORT", "25"), ("RELAYCLIENT", ""),
        ("TCPREMOTEIP", "10.1.2.3"), ("TCPLOCALHOST", "ruled"), ("DATABYTES", "a=b")]


def test_no_rule_and_an_ipv4_client_of_an_ipv6_listener():
    conn = Connection(Sock("::ffff:127.0.0.1"), ("::ffff:10.1.2.3", 4000))
    conn.local_host, conn.remote_host = "mx.example.org", "a:b c"
    assert list(environ_of([], conn, {}).items()) == [
        ("PROTO", "TCP"), ("TCPLOCALIP", "127.0.0.1"), ("TCP6LOCALIP", "::ffff:127.0.0.1"),
        ("TCPLOCALPORT", "25"), ("TCP6LOCALPORT", "25"), ("TCPLOCALHOST", "mx.example.org"),
        ("TCP6LOCALHOST", "mx.example.org"), ("TCPREMOTEIP", "10.1.2.3"),
        ("TCP6REMOTEIP", "::ffff:10.1.2.3"), ("TCPREMOTEPORT", "4000"), ("TCP6REMOTEPORT", "4000"),
        ("TCPREMOTEHOST", "a:b c"), ("TCP6REMOTEHOST", "a:b c")]
    # the IPv6 tcpserver's line: TCP6* addresses, colons kept, other odd bytes as '?'
    assert verdict_line("ok", 7, conn) == "tcpserver: ok 7 mx.example.org:::ffff:127.0.0.1:25 a:b?c:::ffff:10.1.2.3::4000"


def test_verdict_line_fields():
    assert verdict_line("ok", 123, ipv4()) == "tcpserver: ok 123 mx.example.org:127.0.0.1:25 :10.1.2.3::4000"
    assert verdict_line("ok", 123, ipv4(local_host=None)) == "tcpserver: ok 123 :127.0.0.1:25 :10.1.2.3::4000"
    assert verdict_line("deny", 9, ipv4(remote_host="bad:host name", remote_info="joe%x")) == \
        "tcpserver: deny 9 mx.example.org:127.0.0.1:25 bad?host?name:10.1.2.3:joe?x:4000"
    six = Connection(Sock("::1"), ("::1", 4000))
    six.remote_info = "j:o"
    assert verdict_line("ok", 7, six) == "tcpserver: ok 7 :::1:25 :::1:j:o:4000"


def test_an_entry_moved_into_a_removed_ones_place_is_found_there_by_a_later_change():
    """The index follows each move: a name moved (D, then B=x) or appended (B=x) and changed
    again later is replaced in its new place, as pathexec's scan finds it."""
    from qmailpy.tcpserver.tcpenv import _scan, pathexec_apply
    base = ["A=1", "B=2", "C=3", "D=4"]
    for changes, want in [([("B", "x"), ("D", "y")], ["A=1", "B=x", "C=3", "D=y"]),
                          ([("B", "x"), ("A", None), ("B", "y")], ["C=3", "D=4", "B=y"])]:
        assert pathexec_apply(base, changes) == want == _scan(list(base), changes)
    # tcpserver's TCPREMOTEPORT moved into the stale TCPREMOTEHOST's place, then set by a rule
    env = environ_of(["TCPREMOTEHOST=stale", "PATH=/bin"], ipv4(), {"TCPREMOTEPORT": "ruled"})
    assert list(env.items()) == [
        ("TCPREMOTEIP", "10.1.2.3"), ("PATH", "/bin"), ("PROTO", "TCP"), ("TCPLOCALIP", "127.0.0.1"),
        ("TCPLOCALPORT", "25"), ("TCPLOCALHOST", "mx.example.org"), ("TCPREMOTEPORT", "ruled")]
