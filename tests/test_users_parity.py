"""The same rows, as vpopmail or another tool wrote them, give the same answers on SQLite and
MySQL: each backend answers one list of questions, checked against one table of answers."""
import hmac

from mysql_fixture import backend  # noqa: F401 (fixture)
from qmailpy.users import admin
from qmailpy.users.auth import authenticate
from qmailpy.users.chkuser import check_recipient
from qmailpy.users.passwords import hash_password
from qmailpy.users.schema import BOUNCE_MAIL, NO_POP, NO_RELAY, NO_SMTP

MD5 = hash_password("pw", "md5", salt="abcdefgh")
SHA = hash_password("pw", "sha512", salt="abcdefghijklmnop")
ROWS = [  # pw_name, pw_domain, pw_passwd, pw_gid, pw_dir, pw_shell, pw_clear_passwd
    ("joe", "example.org", MD5, None, None, None, None),
    ("ann", "example.org", "{SHA512-CRYPT}" + SHA, NO_POP | NO_RELAY, "", "5000000S,100C", "pw"),
    ("bob", "example.org", "", 0, "", "NOQUOTA", "pw"),
    ("lock", "example.org", MD5, BOUNCE_MAIL, "", "10M", ""),
    ("nosmtp", "example.org", SHA, NO_SMTP, "", "NOQUOTA", "pw"),
    ("Upper", "example.org", MD5, 0, "", "NOQUOTA", ""),
]
CHALLENGE = "<1.2@mx.example.org>"
CRAM = hmac.new(b"pw", CHALLENGE.encode(), "md5").hexdigest()


def questions(users):
    out = {"domains": users.domains(),
           "mailboxes": [(b.name, b.quota, b.flags) for b in users.mailboxes("example.org")]}
    for login in ("joe@example.org", "JOE@Example.NET", "ann@example.net", "bob@example.org",
                  "lock@example.org", "nosmtp@example.org", "upper@example.org", "Upper@example.org",
                  "nobody@example.org", "joe@empty.test", "joe@example.org."):
        box = users.lookup(*login.split("@"))
        out[login] = (box and (box.address, box.quota, box.flags),
                      authenticate(users, "PLAIN", login, "pw", None),
                      authenticate(users, "CRAM-MD5", login, CRAM, CHALLENGE),
                      check_recipient(users, login))
    out["relay"] = [users.record_pop_login(login, ip, 1000) for login, ip in
                    (("joe@example.org", "10.0.0.1"), ("ann@example.org", "10.0.0.2"),
                     ("stranger@nowhere.test", "::ffff:10.0.0.3"))]
    out["relay allowed"] = [users.relay_allowed(ip, 1500, 600) for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3")]
    return out


EXPECTED = {
    "domains": (["empty.test", "example.org"], {"example.net": "example.org"}),
    "mailboxes": [("Upper", None, 0), ("ann", "5000000S,100C", NO_POP | NO_RELAY), ("bob", None, 0), ("joe", None, 0),
                  ("lock", "10485760S", BOUNCE_MAIL), ("nosmtp", None, NO_SMTP)],
    "joe@example.org": (("joe@example.org", None, 0), True, False, "ok"),
    "JOE@Example.NET": (("joe@example.org", None, 0), True, False, "ok"),
    "ann@example.net": (("ann@example.org", "5000000S,100C", NO_POP | NO_RELAY), True, True, "ok"),
    "bob@example.org": (("bob@example.org", None, 0), False, False, "ok"),
    "lock@example.org": (("lock@example.org", "10485760S", BOUNCE_MAIL), True, False, "nouser"),
    "nosmtp@example.org": (("nosmtp@example.org", None, NO_SMTP), False, False, "ok"),
    "upper@example.org": (None, False, False, "nouser"),
    "Upper@example.org": (None, False, False, "nouser"),
    "nobody@example.org": (None, False, False, "nouser"),
    "joe@empty.test": (None, False, False, "nouser"),
    "joe@example.org.": (("joe@example.org", None, 0), True, False, "ok"),
    "relay": [True, False, True],
    "relay allowed": [True, False, True],
}


def test_the_same_rows_give_the_same_answers(backend):  # noqa: F811
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    for name, domain, passwd, gid, pw_dir, shell, clear in ROWS:
        backend.sql("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                    "pw_shell, pw_clear_passwd) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
                    (name, domain, passwd, gid, name, pw_dir, shell, clear))
    backend.sql("INSERT INTO aliasdomains (alias, domain) VALUES ('example.net', 'example.org')")
    backend.sql("INSERT INTO dir_control (domain, cur_users) VALUES ('empty.test', 0)")
    got = questions(users)
    assert got == EXPECTED
