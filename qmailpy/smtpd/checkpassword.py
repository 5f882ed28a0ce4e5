"""Verify SMTP AUTH with a checkpassword program, as qmail's AUTH patches do.

The program gets `user\\0secret\\0challenge\\0` on fd 3 (for CRAM-MD5 the
secret is the hex digest and the challenge is set); exit 0 = accepted,
1 or 2 = refused, anything else (111: temporary) = cannot tell now.
"""
import os

TIMEOUT = 30


def checkpassword(argv, user, secret, challenge, environ):
    """True, False, or None (temporary failure)."""
    import subprocess
    data = b"\0".join(x.encode("utf-8", "surrogateescape") for x in (user, secret, challenge or "")) + b"\0"
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(r,), env=dict(environ),
                                preexec_fn=lambda: os.dup2(r, 3))
    except OSError:
        os.close(r)
        os.close(w)
        return None
    os.close(r)
    try:
        os.write(w, data)
    except OSError:
        pass
    os.close(w)
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    if code == 0:
        return True
    if code in (1, 2):
        return False
    return None
