"""What tcpserver asks about a client before it runs the program: host names and ident.

Host names (unless -l / -H): the first PTR name of the address, as dns_name4(),
written as djbdns writes a name (dns_domain_todot_cat: A-Z lower-cased, every byte
but a-z, 0-9, '-' and '_' as \\ooo in octal), so TCPREMOTEHOST and the `=host` rules
see `mx.example.org` for a PTR of `MX.Example.ORG`, as under tcpserver;
with -p the name stays only when one of its A (AAAA) records is the address.
Any failure leaves the name unset, as in tcpserver. Ident (unless -R): RFC 1413
from the local address to the client's port 113 within -t seconds, as
ucspi-tcp's remoteinfo.c; failure leaves TCPREMOTEINFO unset.
"""


def host_name(resolver, ip, paranoid=False):
    """The name of ip by PTR, or None."""
    answer = resolver.ptr(ip)
    if not answer.ok or not answer.values:
        return None
    name = answer.values[0]
    if paranoid:
        forward = resolver.aaaa(name) if ":" in ip else resolver.a(name)
        if not forward.ok or not _among(ip, forward.values):
            return None
    return djb_text(name)


def _among(ip, addresses):
    """Is ip one of addresses, however each is spelled (tcpserver compares the 16 bytes:
    our 2001:db8::1:2:3:4:5 is the resolver's 2001:db8:0:1:2:3:4:5)?"""
    import ipaddress
    want = ipaddress.ip_address(ip)
    return any(ipaddress.ip_address(text) == want for text in addresses)   # the resolver's texts: addresses all


DJB_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")


def djb_text(name):
    """A name (the resolver's text form) as djbdns's dns_domain_todot_cat() writes it."""
    import dns.name
    labels = [label for label in dns.name.from_text(name).labels if label]
    if not labels:
        return "."
    return ".".join("".join(chr(b) if b in DJB_KEPT else "\\%03o" % b for b in label.lower())
                    for label in labels)


def remote_info(local_ip, local_port, remote_ip, remote_port, timeout):
    """The user name the client's identd gives for this connection, or None.

    Read as remoteinfo.c reads it: spaces, tabs and CRs anywhere are dropped, the
    answer is what follows the third colon up to the newline (257 bytes at most), ""
    when nothing does (an ERROR has fewer colons): tcpserver sets TCPREMOTEINFO empty
    then, and its rules try `@ip`. No line by the deadline (refused, closed) is None.
    """
    import socket
    import time
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.bind((local_ip, 0))
            s.connect((remote_ip, 113))
            s.sendall(b"%d , %d\r\n" % (remote_port, local_port))
            data = b""
            while b"\n" not in data:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(1024)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].translate(None, b" \t\r")
    parts = line.split(b":", 3)
    return parts[3][:257].decode("latin-1") if len(parts) == 4 else ""
