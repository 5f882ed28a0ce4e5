"""Make and check vpopmail's pw_passwd values (crypt(3) strings).

vpopmail 5.4 writes MD5-crypt (`$1$`, its default), 5.6 SHA-512 (`$6$`).
Checking accepts `$1$`, `$5$`, `$6$` (computed here) and anything else
crypt(3) knows, traditional DES included, through the deprecated `crypt`
module while Python still has it. A leading `{SCHEME}` (Dovecot's spelling,
`{SHA512-CRYPT}$6$...`) is dropped first, as vpopmail 5.6's vauth_crypt()
does. Comparisons are constant-time.
"""
import hmac
import os

from qmailpy.users import cryptpw

SCHEMES = {"md5": b"$1$", "sha256": b"$5$", "sha512": b"$6$"}
DEFAULT_SCHEME = "md5"

# Hashed when the user is unknown, so that a miss costs what a hit costs.
DUMMY_HASH = "$1$qmailpy$Ks6Dk6yd9XBTYvo0/2ocO1"


def _bytes(text):
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


def hash_password(password, scheme=DEFAULT_SCHEME, salt=None):
    """The crypt string for `password` in `scheme` ('md5', 'sha256' or 'sha512')."""
    pw = _bytes(password)
    if scheme == "md5":
        salt = salt or cryptpw.new_salt(8, os.urandom)
        return cryptpw.md5_crypt(pw, _bytes(salt)).decode("ascii")
    if scheme in ("sha256", "sha512"):
        salt = salt or cryptpw.new_salt(16, os.urandom)
        return cryptpw.sha_crypt(pw, _bytes(salt), 5 if scheme == "sha256" else 6).decode("ascii")
    raise ValueError("unknown password scheme %r (md5, sha256, sha512)" % scheme)


def crypt_with(password, hashed):
    """crypt(password, setting taken from `hashed`), or None when the scheme is unknown."""
    pw, setting = _bytes(password), _bytes(hashed)
    if setting.startswith(b"$1$"):
        return cryptpw.md5_crypt(pw, setting[3:])
    if setting.startswith(b"$5$") or setting.startswith(b"$6$"):
        return cryptpw.sha_crypt(pw, setting[3:], int(setting[1:2]))
    return _system_crypt(pw, setting)


def _system_crypt(pw, setting):
    """crypt(3) for other schemes (DES, bcrypt...), when the crypt module exists."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    try:
        out = crypt.crypt(pw.decode("utf-8", "surrogateescape"), setting.decode("ascii"))
    except (UnicodeError, ValueError, OSError):
        return None
    return out.encode("ascii", "replace") if out else None


def scheme_stripped(hashed):
    """`hashed` without a leading Dovecot-style scheme name ('{SHA512-CRYPT}$6$...'), which
    vpopmail 5.6's vauth_crypt() drops before crypt(3) ("remove {XXX-CRYPT}")."""
    end = hashed.find("}") if hashed.startswith("{") else -1
    return hashed[end + 1:] if end > 0 else hashed


def verify(hashed, password):
    """True when `password` matches the crypt string `hashed` (a {SCHEME} prefix dropped, as
    vpopmail does); False for empty ones."""
    hashed = scheme_stripped(hashed or "")
    if not hashed or not password:
        crypt_with(password or "x", DUMMY_HASH)
        return False
    computed = crypt_with(password, hashed)
    if computed is None:
        return False
    return hmac.compare_digest(computed, _bytes(hashed))


def cram_md5_ok(clear, challenge, hexdigest):
    """CRAM-MD5 (RFC 2195): `hexdigest` is HMAC-MD5 of `challenge` keyed with `clear`."""
    if not clear or not challenge or not hexdigest:
        return False
    expected = hmac.new(_bytes(clear), _bytes(challenge), "md5").hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), _bytes(hexdigest.strip().lower()))
