"""The suite's own isolation: a test that changes os.environ in-process (as a tcpserver session
does in its worker) leaves the next test the environment conftest.py set (its autouse fixture).
The two tests run in this order (pytest keeps a file's order)."""
import os


def test_a_test_may_replace_the_environment_in_process():
    os.environ.clear()
    os.environ["PROTO"] = "TCP"


def test_the_next_test_has_the_suites_environment_again():
    assert "PROTO" not in os.environ
    assert os.environ["QMAILPY_SINGLEUSER"] == "1" and os.environ["DNSCACHEIP"] == "127.0.0.1:1"
    assert "PATH" in os.environ
