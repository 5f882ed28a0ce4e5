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
BASE64_TEXT = re.compile(
    rb"Content-Type:[ \t]*text/[^\n]*\n(?:[ \t][^\n]*\n|[A-Za-z-]+:[^\n]*\n)*?"
    rb"Content-Transfer-Encoding:[ \t]*base64[^\n]*\n(?:[^\n]+\n)*?\n((?:[A-Za-z0-9+/=]+\r?\n)+)",
    re.IGNORECASE)
TRAILING = b".,;:!?)]'\""


def _texts(message):
    yield message.replace(b"=\r\n", b"").replace(b"=\n", b"").replace(b"=3D", b"=").replace(b"=3d", b"=")
    import binascii
    for m in BASE64_TEXT.finditer(message):
        try:
            yield binascii.a2b_base64(m.group(1))
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
