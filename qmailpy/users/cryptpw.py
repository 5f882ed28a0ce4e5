"""MD5-crypt ($1$) and SHA-crypt ($5$, $6$) in pure Python.

vpopmail stores crypt(3) hashes in pw_passwd. Python's `crypt` module is
deprecated (gone in 3.13), so the schemes vpopmail writes are computed here
(PHK's MD5-crypt; Drepper's SHA-crypt specification) and checked against
crypt(3) and `openssl passwd` in the tests.
"""
import hashlib

ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999999999

# Byte triples in the order SHA-crypt encodes them (from the specification).
SHA256_ORDER = ((0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
                (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29))
SHA512_ORDER = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4),
                (47, 5, 26), (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51),
                (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35),
                (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19),
                (62, 20, 41))
MD5_ORDER = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))


def _to64(value, n):
    out = bytearray()
    for _ in range(n):
        out.append(ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


def _encode(digest, order):
    return b"".join(_to64(digest[a] << 16 | digest[b] << 8 | digest[c], 4) for a, b, c in order)


def md5_crypt(password, salt):
    """'$1$salt$hash' for bytes `password` and `salt` (at most 8 bytes used)."""
    magic = b"$1$"
    salt = salt.split(b"$", 1)[0][:8]
    ctx = hashlib.md5(password + magic + salt)
    alt = hashlib.md5(password + salt + password).digest()
    n = len(password)
    while n > 0:
        ctx.update(alt[:min(16, n)])
        n -= 16
    n = len(password)
    while n:
        ctx.update(b"\0" if n & 1 else password[:1])
        n >>= 1
    final = ctx.digest()
    for i in range(1000):
        c = hashlib.md5(password if i & 1 else final)
        if i % 3:
            c.update(salt)
        if i % 7:
            c.update(password)
        c.update(final if i & 1 else password)
        final = c.digest()
    text = _encode(final, MD5_ORDER) + _to64(final[11], 2)
    return magic + salt + b"$" + text


def sha_crypt(password, setting, variant):
    """'$5$...' or '$6$...' (variant 5 or 6); `setting` is the part after '$N$'."""
    H = hashlib.sha256 if variant == 5 else hashlib.sha512
    size = 32 if variant == 5 else 64
    rounds, explicit = ROUNDS_DEFAULT, False
    if setting.startswith(b"rounds="):
        head, _, rest = setting[7:].partition(b"$")
        if head.isdigit():
            rounds = min(max(int(head), ROUNDS_MIN), ROUNDS_MAX)
            explicit, setting = True, rest
    salt = setting.split(b"$", 1)[0][:16]
    n = len(password)
    alt = H(password + salt + password).digest()
    ctx = H(password + salt)
    i = n
    while i > size:
        ctx.update(alt)
        i -= size
    ctx.update(alt[:i])
    i = n
    while i:
        ctx.update(alt if i & 1 else password)
        i >>= 1
    final = ctx.digest()
    dp = H(password * n).digest()
    p = (dp * (n // size + 1))[:n]
    ds = H(salt * (16 + final[0])).digest()
    s = (ds * (len(salt) // size + 1))[:len(salt)]
    for r in range(rounds):
        c = H(p if r & 1 else final)
        if r % 3:
            c.update(s)
        if r % 7:
            c.update(p)
        c.update(final if r & 1 else p)
        final = c.digest()
    if variant == 5:
        text = _encode(final, SHA256_ORDER) + _to64(final[31] << 8 | final[30], 3)
    else:
        text = _encode(final, SHA512_ORDER) + _to64(final[63], 2)
    prefix = b"$%d$" % variant + (b"rounds=%d$" % rounds if explicit else b"")
    return prefix + salt + b"$" + text


def new_salt(length, randbytes):
    """`length` salt characters from crypt's alphabet, from the bytes source `randbytes(n)`."""
    return bytes(ITOA64[b & 0x3F] for b in randbytes(length))
