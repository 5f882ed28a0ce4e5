"""qmail-send's controls, read together so a SIGHUP swaps them in one step."""
from qmailpy.send import bounce, srsmap
from qmailpy.send.rewrite import rewriter


class SendConfig:
    """queuelifetime, concurrencylocal/remote, the rewriting lists and the bounce controls."""
    __slots__ = ("lifetime", "concurrency", "rewriter", "bounce", "srs_forward")

    def __init__(self, controls):
        controls.require("qmail-send")          # every number and line it reads: now, not mid-way
        self.lifetime = controls.value("queuelifetime")
        self.concurrency = (controls.value("concurrencylocal"), controls.value("concurrencyremote"))
        self.rewriter = rewriter(controls)
        self.bounce = bounce.settings(controls)
        self.srs_forward = srsmap.forwarder(controls)     # no keys: senders left alone
