"""A checkpassword program for tests: reads user\0secret\0challenge\0 on fd 3.

Accepts good@example.org with password `secret` (or, for CRAM-MD5, the HMAC-MD5
of the challenge keyed with `secret`); exit 0 accepted, 1 refused.
"""
import hashlib
import hmac
import os
import sys

data = b""
while True:
    chunk = os.read(3, 4096)
    if not chunk:
        break
    data += chunk
user, secret, challenge = (data.split(b"\0") + [b"", b"", b""])[:3]
ok = user == b"good@example.org" and (
    secret == b"secret" or (challenge and hmac.compare_digest(
        secret, hmac.new(b"secret", challenge, hashlib.md5).hexdigest().encode())))
sys.exit(0 if ok else 1)
