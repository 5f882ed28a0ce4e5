"""qmailpy.addr.keys: the keys of a recipient, as qmail-send's rewriting and qmail-lspawn's mailbox
lookup see it (pure: a Rewriter and a stand-in for the users database)."""
from hypothesis import given, strategies as st

from qmailpy.addr.keys import RecipientKeys, longest_mailbox, mailbox_names
from qmailpy.addr.rewrite import Rewriter

REW = Rewriter(["mx.example.net", "LocalHost", "[192.0.2.1]"],
               ["example.com:example.com", "Alias.Example:example.com", "old.example:joe"],
               ["relay.example.net"], "mx.example.net")
BOXES = {(b"bob", b"example.com"): b"bob@example.com", (b"bob", b"alias.example"): b"bob@example.com",
         (b"y", b"example.com"): b"y@example.com", (b"y-foo", b"other.example"): b"y-foo@other.example"}


def find(name, domain):
    return BOXES.get((name, domain))


def keys(recip, finder=find, localiphost="mx.example.net"):
    return RecipientKeys(REW, localiphost, finder).keys(recip)


def test_no_at_is_completed_with_envnoathost():
    """<bob>, <"bob">, <@x:bob> all reach qmail-queue as `bob`: it is bob@mx.example.net's key."""
    k = keys(b"bob")
    assert k.key == b"bob@mx.example.net"
    assert k.addresses == (b"bob@mx.example.net", b"bob@localhost", b"bob@[192.0.2.1]", b"bob")
    assert k.all()[-3:] == [b"@mx.example.net", b"@localhost", b"@[192.0.2.1]"]


def test_every_locals_name_is_one_mailbox():
    for recip in (b"Bob@LOCALHOST", b"bob@mx.example.net", b"bob@[192.0.2.1]"):
        assert keys(recip).key == b"bob@mx.example.net"
        assert b"bob@localhost" in keys(recip).addresses


def test_local_extension_tries_each_shorter_name():
    k = keys(b"bob-foo-bar@localhost")
    assert k.key == b"bob-foo-bar@mx.example.net"
    assert [a for a in k.addresses if a.endswith(b"@mx.example.net")] == [
        b"bob-foo-bar@mx.example.net", b"bob-foo@mx.example.net", b"bob@mx.example.net"]


def test_ip_literal_is_tried_as_localiphost():
    k = keys(b"bob@[203.0.113.9]")                        # not ours: remote, but also tried as localiphost
    assert k.key == b"bob@[203.0.113.9]" and b"bob@mx.example.net" in k.addresses
    assert keys(b"bob@[203.0.113.9]", localiphost=None).addresses == (b"bob@[203.0.113.9]",)


def test_alias_domain_is_the_mailbox_of_the_real_domain():
    assert keys(b"Bob@Alias.Example").key == b"bob@example.com"
    assert keys(b"bob@alias.example").all() == [b"bob@example.com", b"bob@alias.example", b"@example.com",
                                                b"@alias.example"]
    assert keys(b"bob@alias.example", finder=None).key == b"bob@example.com"     # the prefix names it


def test_extension_is_stripped_to_the_mailbox_the_database_has():
    k = keys(b"y-foo@example.com")
    assert k.key == b"y@example.com" and k.addresses == (b"y@example.com", b"y-foo@example.com")
    k = keys(b"y-foo@other.example")                      # not virtual here: remote, as written
    assert k.addresses == (b"y-foo@other.example",)
    BOXES[(b"y-foo", b"example.com")] = b"y-foo@example.com"
    try:
        k = keys(b"y-foo@example.com")                    # y-foo is a mailbox of its own: not y's
        assert k.key == b"y-foo@example.com" and b"y@example.com" not in k.addresses
    finally:
        del BOXES[(b"y-foo", b"example.com")]
    k = keys(b"y-foo@example.com", finder=None)           # no database: every name is tried
    assert k.addresses == (b"y-foo@example.com", b"y@example.com")


def test_percenthack_is_followed():
    assert keys(b"bob%example.com@relay.example.net").key == b"bob@example.com"
    assert keys(b"bob%alias.example@relay.example.net").key == b"bob@example.com"
    k = keys(b"bob%far.example@Relay.Example.NET")
    assert k.key == b"bob@far.example" and k.addresses[-1] == b"bob%far.example@relay.example.net"


def test_virtual_prefix_that_is_no_domain():
    """old.example:joe delivers to local user joe: no users-database domain to guess."""
    assert keys(b"ann@old.example").addresses == (b"ann@old.example",)


def test_remote_and_unknown():
    assert keys(b"Joe@Far.Example").all() == [b"joe@far.example", b"@far.example"]
    assert keys(b"nobody@example.com").addresses == (b"nobody@example.com",)


@given(st.binary(max_size=30).map(lambda b: b.replace(b"@", b"")))
def test_mailbox_names(local):
    names = list(mailbox_names(local))
    assert names[0] == (local, None)
    for name, ext in names[1:]:
        assert name + b"-" + ext == local and name
    assert [len(n) for n, _ in names] == sorted((len(n) for n, _ in names), reverse=True)
    assert len(names) == 1 + local[1:].count(b"-")


def test_longest_mailbox():
    assert longest_mailbox(b"a-b-c", {b"a": 1, b"a-b": 2}.get) == (2, b"a-b", b"c")
    assert longest_mailbox(b"a-b-c", {}.get) == (None, None, None)
    assert longest_mailbox(b"a-", {b"a-": 1}.get) == (1, b"a-", None)
