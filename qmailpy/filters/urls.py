"""badurls: the URLs of an infected message, handed to a reporting command.

H-Sphere sent them to Comodo's database, which is gone; control/badurlscommand
names what to run instead (a shell command: the URLs on stdin, one a line,
$VIRUS and $SENDER in its environment). It never decides the message's fate:
its failure or time-out is only logged.

The scanner is deliberately simple: http/https/ftp URLs in the raw message,
after undoing quoted-printable soft line breaks and =3D, plus those in
base64 text parts; duplicates dropped, at most control/urlscnt of them.
"""
import re

URL = re.compile(rb"(?:https?|ftp)://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
# What base64_blocks() finds: a text part's base64 block (group 1). Not run on messages: cubic.
BASE64_TEXT = re.compile(
    rb"Content-Type:[ \t]*text/[^\n]*\n(?:[ \t][^\n]*\n|[A-Za-z-]+:[^\n]*\n)*?"
    rb"Content-Transfer-Encoding:[ \t]*base64[^\n]*\n(?:[^\n]+\n)*?\n((?:[A-Za-z0-9+/=]+\r?\n)+)",
    re.IGNORECASE)
TRAILING = b".,;:!?)]'\""


_CT = re.compile(rb"Content-Type:[ \t]*text/", re.IGNORECASE)
_CTE = re.compile(rb"Content-Transfer-Encoding:[ \t]*base64", re.IGNORECASE)
_FIELD = re.compile(rb"[ \t]|[A-Za-z-]+:")
_B64 = re.compile(rb"[A-Za-z0-9+/=]+\r?")


def base64_blocks(message):
    """The blocks (group 1) of BASE64_TEXT.finditer(message), found in linear time. The regex
    tries every later Content-Transfer-Encoding line of a header, and every later header,
    again (cubic: 45 s for 60 KB of "Content-Type: text/a" headers, from anyone who sends an
    infected message); its match depends only on facts about lines, computed once from the
    end: the first such line in the fields after line L, the first empty line from L, where a
    run of base64 lines from L ends."""
    from bisect import bisect_right
    lines = message.split(b"\n")
    n = len(lines) - 1                      # complete lines; lines[n] has no LF
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    cte, blank, b64 = [None] * (n + 1), [None] * (n + 1), [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        line = lines[i]
        cte[i] = i if _CTE.match(line) else cte[i + 1] if _FIELD.match(line) else None
        blank[i] = i if not line else blank[i + 1]
        b64[i] = b64[i + 1] if _B64.fullmatch(line) else i
    m = _CT.search(message)
    while m:
        nl = message.find(b"\n", m.end())
        if nl < 0:
            return
        c = cte[bisect_right(starts, nl)]           # the line after the Content-Type line
        e = b = None
        if c is not None:
            b = blank[c + 1]
            if b is not None and b64[b + 1] > b + 1:
                e = b64[b + 1]
        if e is None:
            m = _CT.search(message, m.start() + 1)
            continue
        yield message[starts[b + 1]:starts[e]]
        m = _CT.search(message, starts[e])


def _texts(message):
    yield message.replace(b"=\r\n", b"").replace(b"=\n", b"").replace(b"=3D", b"=").replace(b"=3d", b"=")
    import binascii
    for block in base64_blocks(message):
        try:
            yield binascii.a2b_base64(block)
        except (binascii.Error, ValueError):
            continue


def find_urls(message, limit):
    """At most `limit` distinct URLs (str), in the order they first appear."""
    found = []
    if limit <= 0:
        return found
    for text in _texts(message):
        for m in URL.finditer(text):
            url = m.group(0).rstrip(TRAILING).decode("ascii", "replace")
            if url not in found and len(url) > len("http://"):
                found.append(url)
                if len(found) >= limit:
                    return found
    return found


def report(command, urls, virus, sender, timeout, log):
    """Run the reporting command; its trouble is logged, never raised."""
    import os
    import subprocess
    env = dict(os.environ, VIRUS=virus, SENDER=sender.decode("utf-8", "replace"))
    data = "".join(u + "\n" for u in urls).encode()
    try:
        got = subprocess.run(["/bin/sh", "-c", command], input=data, env=env, timeout=timeout,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True)
    except subprocess.TimeoutExpired:
        log("badurlscommand timed out after %d seconds" % timeout)
        return False
    except OSError as e:
        log("badurlscommand: cannot run: %s" % e)
        return False
    if got.returncode != 0:
        err = got.stderr.decode("utf-8", "replace").strip().splitlines()
        log("badurlscommand exited %d%s" % (got.returncode, (": " + err[-1]) if err else ""))
        return False
    return True
