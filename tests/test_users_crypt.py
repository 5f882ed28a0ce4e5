"""crypt(3) schemes in pure Python against known vectors, openssl and the crypt module;
CRAM-MD5 (RFC 2195); vpopmail's quota strings."""
import shutil
import subprocess
import warnings

import pytest
from hypothesis import given, settings, strategies as st

from qmailpy import maildirpp
from qmailpy.users import cryptpw, passwords

# Vectors: Drepper's SHA-crypt specification and `openssl passwd -1/-5/-6 -salt`.
VECTORS = [
    ("pw", "$1$X$", "$1$X$cVCRz773kZlpIlgDZ.0PV."),
    ("Hello world!", "$1$saltstring$", "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"),
    ("Hello world!", "$5$saltstring", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("Hello world!", "$6$saltstring", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
                                      "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "$6$rounds=10000$saltstringsaltstring",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/Y"
     "TBmSK6H9qs/y3RnOaw5v."),
]


@pytest.mark.parametrize("password,setting,expected", VECTORS)
def test_vectors(password, setting, expected):
    assert passwords.crypt_with(password, setting).decode() == expected
    assert passwords.verify(expected, password)
    assert not passwords.verify(expected, password + "x")


def system_crypt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.text(alphabet=cryptpw.ITOA64.decode(), min_size=1, max_size=16),
       st.sampled_from(["$1$", "$5$", "$6$"]))
def test_same_as_crypt3(password, salt, prefix):
    crypt = system_crypt()
    if crypt is None:
        pytest.skip("no crypt module")
    password = password.replace("\0", "")
    assert passwords.crypt_with(password, prefix + salt).decode() == crypt.crypt(password, prefix + salt)


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl")
@pytest.mark.parametrize("flag,scheme", [("-1", "md5"), ("-5", "sha256"), ("-6", "sha512")])
def test_same_as_openssl(flag, scheme):
    for password in ("secret", "p@ss word", "x" * 70):
        hashed = passwords.hash_password(password, scheme)
        salt = hashed.split("$")[2]
        out = subprocess.run(["openssl", "passwd", flag, "-salt", salt, password],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == hashed


def test_hash_password():
    for scheme, prefix, salt_len in (("md5", "$1$", 8), ("sha256", "$5$", 16), ("sha512", "$6$", 16)):
        hashed = passwords.hash_password("pw", scheme)
        assert hashed.startswith(prefix) and len(hashed.split("$")[2]) == salt_len
        assert passwords.verify(hashed, "pw")
    assert passwords.hash_password("pw") != passwords.hash_password("pw")        # fresh salts
    with pytest.raises(ValueError):
        passwords.hash_password("pw", "plain")


def test_verify_refuses_empty_and_unknown():
    assert not passwords.verify("", "pw")
    assert not passwords.verify("$1$X$cVCRz773kZlpIlgDZ.0PV.", "")
    assert not passwords.verify("*", "pw")             # a locked account
    assert not passwords.verify("!", "")
    assert not passwords.verify("\u00e9tranger", "pw")    # a setting crypt(3) cannot take: no match, no error


def test_without_the_crypt_module_only_the_computed_schemes_verify(monkeypatch):
    """Python 3.13 has no crypt module: a DES row then matches no password (never an error);
    $1$, $5$ and $6$ are computed here and still verify."""
    import sys
    monkeypatch.setitem(sys.modules, "crypt", None)          # import crypt: ImportError
    assert passwords.crypt_with("secret", "saHW9GdxihkGQ") is None
    assert not passwords.verify("saHW9GdxihkGQ", "secret")
    assert passwords.verify("$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1", "Hello world!")


def test_cram_md5_rfc2195():
    challenge = "<1896.697170952@postoffice.reston.mci.net>"
    assert passwords.cram_md5_ok("tanstaaftanstaaf", challenge, "b913a602c7eda7a495b4e6e7334d3890")
    assert not passwords.cram_md5_ok("tanstaaftanstaaf", challenge, "b913a602c7eda7a495b4e6e7334d389")
    assert not passwords.cram_md5_ok("", challenge, "b913a602c7eda7a495b4e6e7334d3890")
    assert not passwords.cram_md5_ok("tanstaaftanstaaf", None, "b913a602c7eda7a495b4e6e7334d3890")


@pytest.mark.parametrize("text,quota", [
    ("NOQUOTA", None), ("", None), ("noquota", None), ("10M", "10485760S"), ("512k", "524288S"),
    ("1000", "1000S"), ("10000000S", "10000000S"), ("10000000S,1000C", "10000000S,1000C"),
])
def test_vpopmail_quota_strings(text, quota):
    assert (maildirpp.normalize(text) or None) == quota
    assert maildirpp.valid(text)


@pytest.mark.parametrize("text", ["lots", "10G", "S", "10X,5C", "-5"])
def test_bad_quota_strings(text):
    assert not maildirpp.valid(text)
