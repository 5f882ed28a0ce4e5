"""The environment tcpserver gives a program, entry for entry and in tcpserver's order.

tcpserver notes each change with pathexec_env() (name and value, or name alone
to remove it) and pathexec() applies them over its own environment in turn:
an existing entry of that name is removed by moving the last entry into its
place, then a set one is appended. Doing the same here makes `env` under
qmail-tcpserver print byte for byte what it prints under tcpserver.
Also the `tcpserver: ok|deny ...` line, whose fields go through safecats().
"""
from qmailpy.log import ucspi_safe


def pathexec_apply(base, changes):
    """base: the parent's entries ("NAME=value", in order); changes: (name, value or None),
    in order. The entries the program gets, as ucspi-tcp's pathexec() builds them.

    Each entry's place is kept in a dict, so a session's dozen changes cost a lookup each
    rather than a scan of the whole environment (37 µs a session, 300 startswith calls).
    A base with a repeated name or an entry without "=", or a change whose name holds "=",
    goes through pathexec's own scan (_scan), whose first match such cases depend on."""
    e = list(base)
    names = [entry.partition("=")[0] for entry in e]
    where = {name: t for t, name in enumerate(names)}
    if len(where) != len(e) or any("=" not in entry for entry in e) or \
            any("=" in name for name, _ in changes):
        return _scan(e, changes)
    for name, value in changes:
        t = where.pop(name, None)
        if t is not None:                 # its place goes to the last entry
            last, last_name = e.pop(), names.pop()
            if t < len(e):
                e[t], names[t] = last, last_name
                where[last_name] = t
        if value is not None:
            where[name] = len(e)
            e.append(name + "=" + value)
            names.append(name)
    return e


def _scan(e, changes):
    """pathexec() as written: each change scans the entries for its first "NAME=" entry."""
    for name, value in changes:
        prefix = name + "="
        for t, entry in enumerate(e):
            if entry.startswith(prefix):
                last = e.pop()
                if t < len(e):
                    e[t] = last
                break
        if value is not None:
            e.append(prefix + value)
    return e


def tcp_changes(conn):
    """tcpserver's own variables for a connection (a Connection), in doit()'s order.
    A connection to an IPv6 listener has each TCP* name followed by its TCP6* twin, as the
    IPv6 patch's tcpserver (Debian's ucspi-tcp-ipv6) sets them: an IPv6 client PROTO=TCP6
    and the same addresses in both, an IPv4 one PROTO=TCP, its addresses as a.b.c.d in the
    TCP* names (which qmail-smtpd reads) and as ::ffff:a.b.c.d in the TCP6* ones. A
    connection to an IPv4 listener has ucspi-tcp 0.88's."""
    changes = [("PROTO", conn.proto),
               ("TCPLOCALIP", conn.local_ip), ("TCPLOCALPORT", str(conn.local_port)),
               ("TCPLOCALHOST", conn.local_host),
               ("TCPREMOTEIP", conn.remote_ip), ("TCPREMOTEPORT", str(conn.remote_port)),
               ("TCPREMOTEHOST", conn.remote_host),
               ("TCPREMOTEINFO", conn.remote_info)]
    if conn.remote_ip6 is None:
        return changes
    six = {"TCPLOCALIP": conn.local_ip6, "TCPREMOTEIP": conn.remote_ip6}
    return [changes[0]] + [c for name, value in changes[1:]
                           for c in ((name, value), ("TCP6" + name[3:], six.get(name, value)))]


def environ_of(base, conn, rule_env):
    """{name: value} in pathexec's order: the parent's environment, tcpserver's variables,
    then the matching rule's VAR="value" instructions."""
    entries = pathexec_apply(base, tcp_changes(conn) + list(rule_env.items()))
    return dict(entry.split("=", 1) for entry in entries)


def verdict_line(verdict, pid, conn):
    """`tcpserver: ok PID localhost:localip:localport remotehost:remoteip:info:remoteport`;
    on an IPv6 listener as the IPv6 tcpserver writes it: its colons kept (`:::1:`), an IPv4
    client's addresses as ::ffff:a.b.c.d."""
    local_ip, remote_ip = conn.local_ip, conn.remote_ip
    if conn.remote_ip6 is not None:
        local_ip, remote_ip = conn.local_ip6, conn.remote_ip6

        def s(text):
            return ucspi_safe(text, colons=True)
    else:
        s = ucspi_safe
    return "tcpserver: %s %s %s:%s:%s %s:%s:%s:%s" % (
        s(verdict), s(str(pid)),
        s(conn.local_host) if conn.local_host is not None else "", s(local_ip), s(str(conn.local_port)),
        s(conn.remote_host) if conn.remote_host is not None else "", s(remote_ip),
        s(conn.remote_info) if conn.remote_info is not None else "", s(str(conn.remote_port)))
