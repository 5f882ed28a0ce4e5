"""vpopmail's MySQL tables, so a vpopmail database can be used as it is.

The layouts are vpopmail's own (vmysql.h, MANY_DOMAINS + CLEAR_PASS, i.e. the
one-table `vpopmail` layout with pw_domain that H-Sphere uses), with the
column widths of vpopmail 5.6 (sagredo-dev/vpopmail vmysql.h): pw_passwd is
VARCHAR(128) there so that SHA-512 crypt hashes fit; vpopmail 5.4
(brunonymous/vpopmail vmysql.h) has the same column names with char(40).
`aliasdomains` is 5.6's SQL_ALIASDOMAINS table. The same DDL creates the
SQLite file, so both backends have the same tables and columns; on MySQL the
tables get a binary collation (utf8mb4_bin), so names compare exactly.
"""

VPOPMAIL = ("pw_name VARCHAR(64) not null, pw_domain VARCHAR(96) not null, "
            "pw_passwd VARCHAR(128), pw_uid int, pw_gid int, pw_gecos VARCHAR(64), "
            "pw_dir VARCHAR(160), pw_shell VARCHAR(20), pw_clear_passwd VARCHAR(16), "
            "primary key (pw_name, pw_domain)")
RELAY = "ip_addr VARCHAR(39) not null, timestamp INT, primary key (ip_addr)"
LASTAUTH = ("user VARCHAR(32) NOT NULL, domain VARCHAR(96) NOT NULL, "
            "remote_ip VARCHAR(39) not null, timestamp INT default 0 NOT NULL, "
            "primary key (user, domain)")
DIR_CONTROL = ("domain VARCHAR(96) not null, cur_users int, level_cur int, level_max int, "
               "level_start0 int, level_start1 int, level_start2 int, "
               "level_end0 int, level_end1 int, level_end2 int, "
               "level_mod0 int, level_mod1 int, level_mod2 int, "
               "level_index0 int, level_index1 int, level_index2 int, the_dir VARCHAR(160), "
               "primary key (domain)")
ALIASDOMAINS = "alias VARCHAR(100) NOT NULL, domain VARCHAR(100) NOT NULL, PRIMARY KEY (alias)"

TABLES = {
    "vpopmail": VPOPMAIL,
    "relay": RELAY,
    "lastauth": LASTAUTH,
    "dir_control": DIR_CONTROL,
    "aliasdomains": ALIASDOMAINS,
}

# Column widths that vpopmail enforces; checked before writing so that SQLite
# (which does not enforce them) and MySQL in strict mode behave the same.
MAX_NAME = 32           # vpopmail.h MAX_PW_NAME
MAX_DOMAIN = 96         # vpopmail.h MAX_PW_DOMAIN
MAX_PASSWD = 128
MAX_GECOS = 48          # vpopmail.h MAX_PW_GECOS
MAX_DIR = 160           # vpopmail.h MAX_PW_DIR
MAX_QUOTA = 20          # vpopmail.h MAX_PW_QUOTA
MAX_CLEAR = 16          # the pw_clear_passwd column (char(16) in 5.4 and 5.6)

# vpopmail's row for a new domain in dir_control (vmysql.c vcreate_dir_control,
# with bigdir.h MAX_DIR_LEVELS 3 and MAX_DIR_LIST 62).
DIR_CONTROL_NEW = (0, 0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, "")
DIR_CONTROL_COLUMNS = ("domain, cur_users, level_cur, level_max, level_start0, level_start1, "
                       "level_start2, level_end0, level_end1, level_end2, level_mod0, level_mod1, "
                       "level_mod2, level_index0, level_index1, level_index2, the_dir")

# pw_gid flag bits (vpopmail.h "gid flags")
NO_PASSWD_CHNG = 0x01
NO_POP = 0x02
NO_WEBMAIL = 0x04
NO_IMAP = 0x08
BOUNCE_MAIL = 0x10
NO_RELAY = 0x20
NO_DIALUP = 0x40
NO_SMTP = 0x800

NOQUOTA = "NOQUOTA"


def create_statements(options=""):
    """CREATE TABLE IF NOT EXISTS for every table, in a stable order; `options` are MySQL's table
    options (the binary collation: mysql.TABLE_OPTIONS). SQLite compares bytes already."""
    tail = (" " + options) if options else ""
    return ["CREATE TABLE IF NOT EXISTS %s ( %s )%s" % (name, layout, tail) for name, layout in TABLES.items()]


def column_names(layout):
    """Column names of a layout string, in order (what the tests compare)."""
    names = []
    for part in layout.split(","):
        word = part.strip().split(" ", 1)[0]
        if word.lower() not in ("primary", "key", "index") and "(" not in word and ")" not in word and word:
            names.append(word)
    return names
