"""End to end: qmail-send -> qmail-rspawn -> qmail-remote over STARTTLS, and what qmail-send logs.

The verification result is part of qmail-remote's report, so qmail-send's log line of the
delivery says how the message left; a destination that control/tlsdestinations requires TLS
for and whose peer lacks it is deferred, the message stays queued, nothing goes in plaintext.
"""
import pytest

from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import sinks  # noqa: F401  (fixture)
from test_e2e_remote import PLAIN, queue_one
from test_e2e_support import Routes, world  # noqa: F401
from tlspeer import tls_certs, tls_sinks  # noqa: F401  (fixtures)


@pytest.fixture
def routes(world, dns_server, sinks):  # noqa: F811
    return Routes(world, dns_server, sinks)


def test_tls_delivery_is_logged_with_its_verification(world, routes, tls_certs, tls_sinks):
    sink = tls_sinks(cert=tls_certs.server("mx.tls.example"))
    routes.route("tls.example", sink.port)
    msgid, _ = queue_one(world, PLAIN, ["carol@tls.example"])
    send = world.send(SSL_CERT_FILE=tls_certs.ca)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    assert ("delivery 1: success: 127.0.0.1_accepted_message./TLS:_TLSv1.3_TLS_AES_256_GCM_SHA384,"
            "_certificate_verified_for_127.0.0.1./Remote_host_said:_250_ok_queued/") in send.lines()
    assert len(sink.messages) == 1 and sink.tls[0] is not None
    assert world.queue_files() == []


def test_required_tls_without_starttls_is_deferred_and_stays_queued(world, routes, tls_sinks):
    sink = tls_sinks(cert=None)
    routes.route("tls.example", sink.port)
    world.control("tlsdestinations", "tls.example\n")
    msgid, _ = queue_one(world, PLAIN, ["carol@tls.example"])
    send = world.send()
    send.wait_line(r"^delivery 1: deferral: ")
    assert send.stop() == 0
    assert ("delivery 1: deferral: Connected_to_127.0.0.1_but_it_does_not_offer_STARTTLS,_which_control/"
            "tlsdestinations_requires_for_tls.example._(#4.7.10)/") in send.lines()
    assert sink.messages == []
    assert world.queue_files() != []
