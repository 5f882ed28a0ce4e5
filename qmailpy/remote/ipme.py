"""This host's addresses, for qmail's "I'm listed as a best-preference MX" rule (ipme.c).

Like qmail: the IPv4 addresses of the configured interfaces (SIOCGIFCONF,
asked again with a bigger buffer while the answer fills it, as ipme.c does;
only interfaces that are up; no DNS), plus 127.0.0.1 and 0.0.0.0 (netqmail adds it), plus the IPv6 addresses from /proc/net/if_inet6 and ::1, plus the
entries of control/moreipme. Cheap:
no name lookups, computed only when a delivery goes by MX.
"""
import ipaddress
import socket
import struct

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
ALWAYS = ("127.0.0.1", "0.0.0.0", "::1", "::")
MAX_IFCONF = 200000             # ipme.c gives up on a buffer larger than this


def norm(ip):
    """The canonical text of an address (so "::0001" and "::1" compare equal), else None.
    An IPv4-mapped address (::ffff:a.b.c.d, an AAAA record may hold one) is its IPv4 address:
    a connection to it goes to a.b.c.d."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def interface_ipv4():
    """IPv4 addresses of all interfaces (Linux SIOCGIFCONF). OSError when they cannot be listed
    (no socket, SIOCGIFCONF refused, an answer that never fits): ipme_init()'s -1, which
    qmail-remote turns into temp_oserr(); its own addresses unknown, no MX can be judged."""
    import array
    import fcntl
    size = 40 if struct.calcsize("P") == 8 else 32      # struct ifreq
    room = size * 128
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while True:                     # ipme.c: grow the buffer until the answer leaves room
            buf = array.array("B", bytes(room))
            req = struct.pack("iP", len(buf), buf.buffer_info()[0])
            length = struct.unpack("iP", fcntl.ioctl(s.fileno(), SIOCGIFCONF, req))[0]
            if length + size + 64 < room:
                break
            if room > MAX_IFCONF:
                raise OSError("SIOCGIFCONF: more than %d bytes of interfaces" % MAX_IFCONF)
            room += 100 + (room >> 2)
        data = buf.tobytes()[:length]
        return [socket.inet_ntoa(data[i + 20:i + 24]) for i in range(0, length - size + 1, size)
                if _up(fcntl, s, data[i:i + size])]


def _up(fcntl, s, ifreq):
    """ipme.c: an address counts only while its interface is up (SIOCGIFFLAGS, IFF_UP)."""
    try:
        flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq), 16)[0]
    except OSError:
        return False
    return bool(flags & IFF_UP)


def interface_ipv6(path="/proc/net/if_inet6"):
    """IPv6 addresses of all interfaces (Linux); empty when unavailable."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                hexaddr = line.split()[0] if line.split() else ""
                if len(hexaddr) == 32:
                    out.append(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except (OSError, ValueError):
        pass
    return out


def my_addresses(more=()):
    """frozenset of canonical address texts that are "me"; OSError from interface_ipv4()."""
    found = set()
    for ip in (*ALWAYS, *interface_ipv4(), *interface_ipv6(), *more):
        n = norm(ip)
        if n is not None:
            found.add(n)
    return frozenset(found)
