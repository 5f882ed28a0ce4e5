"""Which recipients a message is filtered for: the only filter code every message meets.

A recipient is virus-checked when control/clamglobal is 1 or
control/clamavclients.cdb holds its address (lower-cased) or its @domain;
spam-checked likewise with spamglobal and spamdclients.cdb. With both
globals 0 and no cdb this reads four controls and returns; no network code
(socket, qmailpy.filters.scan) is imported unless some recipient is filtered.
"""
from qmailpy import exitcodes as X
from qmailpy.queue.enqueue import QueueError


def keys(address):
    """The cdb keys that select an address: itself lower-cased, then @domain."""
    low = bytes(address).lower()
    at = low.rfind(b"@")
    return (low, low[at:]) if at >= 0 else (low,)


def _chosen(recipients, everybody, cdb_path, name):
    if everybody:
        return list(recipients)
    if cdb_path is None:
        return []
    from qmailpy.ctl.cdbmap import CdbMap
    try:
        cdb = CdbMap(cdb_path, name)      # unreadable or corrupt: ControlError, below
    except FileNotFoundError:
        return []
    try:
        return [r for r in recipients if any(k in cdb for k in keys(r))]
    finally:
        cdb.close()


def select(controls, recipients):
    """(virus-checked, spam-checked) recipients, each in envelope order."""
    try:
        clam = _chosen(recipients, controls.value("clamglobal"), controls.value("clamavclients.cdb"),
                       "control/clamavclients.cdb")
        spam = _chosen(recipients, controls.value("spamglobal"), controls.value("spamdclients.cdb"),
                       "control/spamdclients.cdb")
    except OSError as e:
        raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
    return clam, spam


def content_filter(staged, controls):
    """qmail-queue's filter step (enqueue.run_content_filters): None when nobody is filtered."""
    if not staged.recipients:
        return None
    clam, spam = select(controls, staged.recipients)
    if not clam and not spam:
        return None
    from qmailpy.filters import scan
    return scan.Filter(controls, clam, spam).run(staged)
