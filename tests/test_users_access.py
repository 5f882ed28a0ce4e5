"""The ACL grant that lets qmail-smtpd (chkuser) search domain directories and read .qmail-default."""
import os

from qmailpy.users import access


def make_domains(tmp_path):
    top = tmp_path / "vpopmail"
    for d in ("domains/v.test/joe/Maildir", "domains/w.test"):
        os.makedirs(top / d)
    for d in ("domains", "domains/v.test", "domains/w.test"):
        os.chmod(top / d, 0o750)
    os.chmod(top / "domains/v.test/joe", 0o700)
    (top / "domains/v.test/.qmail-default").write_text("| vdelivermail '' bounce-no-mailbox\n")
    (top / "domains/v.test/.qmail-info").write_text("&joe@v.test\n")
    for f in (".qmail-default", ".qmail-info"):
        os.chmod(top / "domains/v.test" / f, 0o600)
    return str(top)


def test_grants_search_on_directories_and_read_on_qmail_default_only(tmp_path):
    top = make_domains(tmp_path)
    d = os.path.join(top, "domains")
    assert access.domain_grants(top) == [
        (top, access.SEARCH), (d, access.SEARCH), (d + "/v.test", access.SEARCH),
        (d + "/v.test/.qmail-default", access.READ), (d + "/w.test", access.SEARCH)]
    assert access.let_smtpd_look(top, 40093) == []
    U = access.UNDEFINED
    assert access._entries(d + "/v.test") == {(access.USER_OBJ, U): 7, (access.USER, 40093): 1,
                                              (access.GROUP_OBJ, U): 5, (access.MASK, U): 5, (access.OTHER, U): 0}
    assert access._entries(d + "/v.test/.qmail-default") == {
        (access.USER_OBJ, U): 6, (access.USER, 40093): 4, (access.GROUP_OBJ, U): 0, (access.MASK, U): 4,
        (access.OTHER, U): 0}
    # the group keeps what it had (nothing), whatever ls -l now shows for the mask
    assert os.stat(d + "/v.test/.qmail-default").st_mode & 0o777 == 0o640
    for untouched in (d + "/v.test/.qmail-info", d + "/v.test/joe", d + "/v.test/joe/Maildir"):
        assert set(access._entries(untouched)) == {(access.USER_OBJ, U), (access.GROUP_OBJ, U), (access.OTHER, U)}
    assert not access.grant(d + "/v.test", 40093, access.SEARCH)          # already there: unchanged


def test_other_entries_stay(tmp_path):
    top = make_domains(tmp_path)
    path = os.path.join(top, "domains", "w.test")
    access.grant(path, 40001, access.READ | access.SEARCH)
    access.grant(path, 40093, access.SEARCH)
    got = access._entries(path)
    assert got[(access.USER, 40001)] == 5 and got[(access.USER, 40093)] == 1 and got[(access.MASK, access.UNDEFINED)] == 5


def test_named_domains_and_missing_files(tmp_path):
    top = make_domains(tmp_path)
    assert [p for p, _ in access.domain_grants(top, ["w.test"])] == [
        top, os.path.join(top, "domains"), os.path.join(top, "domains", "w.test")]
    assert access.let_smtpd_look(str(tmp_path / "nothing-here"), 40093) == []


def test_root_never_changes_the_acl_of_what_a_link_of_the_owners_points_to(tmp_path):
    """Run by root (the production install, qmail-users adddomain), the grants and their withdrawal
    went through links the owner of the vpopmail directory (vpopmail, whom every mailbox's
    |program runs as) put there: a .qmail-default -> /etc/shadow gave qmailu read on
    /etc/shadow. They are made as that owner now: the link's target, root's, is not touched and
    is a problem to report; the owner's own files get their entries as before."""
    if os.getuid() != 0:
        import pytest
        pytest.skip("needs root (chown)")
    top = make_domains(tmp_path)
    os.chmod(tmp_path, 0o711)                        # the qmail home above it: searchable by all
    for root, dirs, files in os.walk(top):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            os.chown(name, 65534, 65534)
    secret = tmp_path / "shadow"
    secret.write_text("root:x:\n")
    os.chmod(secret, 0o600)
    default = os.path.join(top, "domains", "w.test", ".qmail-default")
    os.symlink("../../../shadow", default)          # relative: this test's directories are root's
    assert access.let_smtpd_look(top, 40093) == [(default, "Operation not permitted")]
    assert set(access._entries(str(secret))) == {(access.USER_OBJ, access.UNDEFINED),
                                                  (access.GROUP_OBJ, access.UNDEFINED), (access.OTHER, access.UNDEFINED)}
    d = os.path.join(top, "domains", "v.test")
    assert access._entries(d)[(access.USER, 40093)] == access.SEARCH
    assert access._entries(d + "/.qmail-default")[(access.USER, 40093)] == access.READ
    changed, problems = access.withdraw(top, 40093)
    assert sorted(changed) == sorted([top, os.path.join(top, "domains"), d, d + "/.qmail-default",
                                      os.path.join(top, "domains", "w.test")])
    assert problems == []


def test_an_entry_that_cannot_be_withdrawn_is_reported_and_the_others_go(tmp_path, monkeypatch):
    """withdraw() takes qmaild's entry off every path it can; one it cannot (a file system that
    refuses xattrs, EOPNOTSUPP) is returned with the reason, for the install to say, and the
    paths that vanished meanwhile are no problem."""
    import errno
    top = make_domains(tmp_path)
    assert access.let_smtpd_look(top, 40093) == []
    stuck = os.path.join(top, "domains", "v.test")
    gone = os.path.join(top, "domains", "w.test")
    real = access.revoke

    def revoke(path, uid):
        if path == stuck:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        if path == gone:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real(path, uid)
    monkeypatch.setattr(access, "revoke", revoke)
    changed, problems = access.withdraw(top, 40093)
    assert changed == [top, os.path.join(top, "domains"), stuck + "/.qmail-default"]
    assert problems == [(stuck, "Operation not supported")]
    assert (access.USER, 40093) in access._entries(stuck)


def test_no_account_no_uid(monkeypatch):
    """Without a qmaild (or qmailu) account there is nobody to let in or take out: None."""
    import pwd

    def none(name):
        raise KeyError(name)
    monkeypatch.setattr(pwd, "getpwnam", none)
    assert access.smtpd_uid() is None
    assert access.chkuser_uid("/nonexistent/qmail") is None


def test_revoking_one_user_keeps_the_others_and_shrinks_the_mask_to_them(tmp_path):
    """qmaild's entry taken off a directory where another user has one too: that one stays, and
    the mask is what the group class still needs (the owning group and the named entries)."""
    top = make_domains(tmp_path)
    path = os.path.join(top, "domains", "w.test")
    access.grant(path, 40001, access.SEARCH)
    access.grant(path, 40093, access.READ | access.SEARCH)
    assert access.revoke(path, 40093) is True
    U = access.UNDEFINED
    assert access._entries(path) == {(access.USER_OBJ, U): 7, (access.USER, 40001): 1, (access.GROUP_OBJ, U): 5,
                                     (access.MASK, U): 5, (access.OTHER, U): 0}
    assert access.revoke(path, 40093) is False
    assert access.revoke(path, 40001) is True             # the last one: a minimal ACL, mode 0750 again
    assert set(access._entries(path)) == {(access.USER_OBJ, U), (access.GROUP_OBJ, U), (access.OTHER, U)}
    assert os.stat(path).st_mode & 0o777 == 0o750
