"""Open the TCP connection to one address: optional source address, bounded wait.

The outgoingip patch binds the socket to control/outgoingip before
connect(); a bind failure counts like a failed connection, so the next
address is tried. outgoingip is one address of one family: a peer of the
other family (an IPv4 outgoingip and an MX with AAAA records) is reached
from any source address rather than not at all. timeoutconnect bounds the
connect() itself.
"""
import socket


def source_address(text):
    """control/outgoingip as an address to bind, None for "any"; ValueError when malformed."""
    import ipaddress
    text = text.strip()
    if not text:
        return None
    ip = ipaddress.ip_address(text)
    return None if ip.is_unspecified else str(ip)


def connect(ip, port, timeout, source=None):
    """(socket or None, timed_out): timed_out says the failure was a time-out (qmail-tcpto counts those)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None, False
    try:
        if source is not None and (":" in source) == (":" in ip):
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((ip, port))
        return sock, False
    except socket.timeout:
        sock.close()
        return None, True
    except OSError:
        sock.close()
        return None, False
