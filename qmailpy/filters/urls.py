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
_RUN = re.compile(rb"(?:[A-Za-z0-9+/=]+\r?\n)+")


def base64_blocks(message):
    """The blocks (group 1) of BASE64_TEXT.finditer(message), found in linear time and constant
    memory beside the message. The regex tries every later Content-Transfer-Encoding line of a
    header, and every later header, again (cubic: 45 s for 60 KB of "Content-Type: text/a"
    headers, from anyone who sends an infected message). Its match depends on few facts: from
    a Content-Type line, the lines after it are header fields up to a Content-Transfer-Encoding
    one; the first empty line after that; a run of base64 lines after it. Every Content-Type
    line of one block of non-empty lines shares that empty line and that run, and those whose
    fields die on the same line die together, so one walk forward over the lines decides for
    all of them: no line is looked at twice, and no list of the lines is made (that cost a
    hundred times the message in memory)."""
    pos = 0
    while True:
        m = _CT.search(message, pos)
        if m is None:
            return
        q = message.find(b"\n", m.end()) + 1          # the line after the Content-Type line
        if not q:
            return
        while True:                                  # its fields, up to the first CTE line
            r = message.find(b"\n", q)
            if r < 0:
                return                               # no complete line left: nothing can match
            if r == q or not _FIELD.match(message, q, r):
                cte = False                          # an empty line, or no field
                break
            cte = _CTE.match(message, q, r) is not None
            if cte:
                break
            q = r + 1
        if not cte:
            pos = q                                  # the walk died here; this line may start one
            continue
        k = message.find(b"\n\n", r)                 # the first empty line after the CTE line: k + 1
        if k < 0:
            return
        run = _RUN.match(message, k + 2)
        if run is None:
            pos = k + 1                              # no Content-Type line before it can match
            continue
        yield message[k + 2:run.end()]
        pos = run.end()


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
