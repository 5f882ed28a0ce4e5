"""Verify SMTP AUTH with a checkpassword program, as qmail's AUTH patches do.

The program gets `user\\0secret\\0challenge\\0` on fd 3 (for CRAM-MD5 the
secret is the hex digest and the challenge is set); exit 0 = accepted,
1 or 2 = refused, anything else (111: temporary) = cannot tell now.
"""
import os

TIMEOUT = 30


def _onto_fd3(r):
    """In the child: the pipe's read end as fd 3, and only there."""
    if r != 3:
        os.dup2(r, 3)
        os.close(r)


def checkpassword(argv, user, secret, challenge, environ):
    """True, False, or None (temporary failure)."""
    import subprocess
    data = b"\0".join(x.encode("utf-8", "surrogateescape") for x in (user, secret, challenge or "")) + b"\0"
    try:
        r, w = os.pipe()
    except OSError:
        return None
    # r is fd 3 unless 3 is open already (the users service's socket, a database connection):
    # then 3 is kept too, or Popen's closing of other fds (after preexec_fn) would close the
    # pipe we dup2'd onto it, and the program would read nothing
    keep = (r,) if r == 3 else (r, 3)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=keep, env=dict(environ),
                                preexec_fn=lambda: _onto_fd3(r))
    except OSError:
        os.close(r)
        os.close(w)
        return None
    os.close(r)
    try:
        written = os.write(w, data)         # less than a pipe holds: all of it, or an error
    except BrokenPipeError:                 # it closed fd 3 unread: its exit code decides
        written = len(data)
    except OSError:
        written = None
    os.close(w)
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    except OSError:                         # waitpid() failed: its verdict is lost
        return None
    if written != len(data):                # our write failed (EIO...): it judged what it did not get;
        return None                         # qmail's AUTH patch's "unable to write pipe", temporary
    if code == 0:
        return True
    if code in (1, 2):
        return False
    return None
