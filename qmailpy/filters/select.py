"""Which recipients a message is filtered for, and under which key: the only filter code every message meets.

A recipient is virus-checked when control/clamglobal is 1 or
control/clamavclients.cdb holds one of its keys; spam-checked likewise with
spamglobal and spamdclients.cdb; spamd's User: is its first key. The keys
are qmailpy.addr.keys': the mailbox qmail-send and qmail-lspawn will deliver
the recipient to (envnoathost, percenthack, locals, virtualdomains with alias
domains, the extension stripped by the users database), the address as
written, and the @domain of each (docs/filters.md, "Whose key"). With both
globals 0 and no cdb this reads four controls and returns; no network code
(socket, qmailpy.filters.scan) is imported unless some recipient is
filtered, and the users database is opened only for a recipient in a
virtual domain.
"""
from qmailpy import exitcodes as X
from qmailpy.filters.log import say
from qmailpy.exitcodes import QueueError


def _open(cdb_path, name):
    """The CdbMap at cdb_path, or None when there is none (unreadable or corrupt: ControlError)."""
    if cdb_path is None:
        return None
    from qmailpy.ctl.cdbmap import CdbMap
    try:
        return CdbMap(cdb_path, name)
    except FileNotFoundError:
        return None


def recipient_keys(controls, log=say):
    """qmailpy.addr.keys.RecipientKeys over the controls and the users database (asked on first
    use, through the users service where it runs; when it cannot answer, logged once and the keys
    come from the controls alone)."""
    from qmailpy.addr.keys import RecipientKeys
    from qmailpy.users.base import AddressFinder
    from qmailpy.users.service import open_answers
    finder = AddressFinder(lambda: open_answers(controls.home, controls), lambda e: log(
        "users database unavailable (%s): recipient keys from the controls alone" % e))
    return RecipientKeys.from_controls(controls, finder), finder


def select(controls, recipients, log=say):
    """(virus-checked, spam-checked, {recipient: key}): the lists in envelope order."""
    dbs = []
    try:
        try:
            clam_all, spam_all = controls.value("clamglobal"), controls.value("spamglobal")
            clam_path, spam_path = controls.value("clamavclients.cdb"), controls.value("spamdclients.cdb")
            dbs.append(None if clam_all else _open(clam_path, "control/clamavclients.cdb"))
            dbs.append(None if spam_all else _open(spam_path, "control/spamdclients.cdb"))
        except OSError as e:             # ctl.reader.ControlError names the file
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
        clam_db, spam_db = dbs
        if not (clam_all or spam_all) and clam_db is None and spam_db is None:
            return [], [], {}
        if not spam_all and spam_db is None and clam_all:
            return list(recipients), [], {}         # no list to ask, no spamd User: to name
        try:
            maker, finder = recipient_keys(controls, log)
            try:
                keys = {}
                for r in recipients:
                    if r not in keys:
                        keys[r] = maker.keys(r)
            finally:
                finder.close()
        except OSError as e:
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None

        def chosen(everybody, db):
            if everybody:
                return list(recipients)
            if db is None:
                return []
            return [r for r in recipients if any(k in db for k in keys[r].all())]
        try:
            return chosen(clam_all, clam_db), chosen(spam_all, spam_db), {r: k.key for r, k in keys.items()}
        except OSError as e:             # a corrupt record met during a lookup (CorruptCdb)
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
    finally:
        for db in dbs:
            if db is not None:
                db.close()


def content_filter(staged, controls, log=say):
    """qmail-queue's filter step (enqueue.run_content_filters): None when nobody is filtered.
    With control/dkimverify the DKIM step (filters.dkimstep) runs first, in place. log: one
    line per event (qmail-queue's stderr, or qmail-queued's log naming the insertion)."""
    if not staged.recipients:
        return None
    try:
        dkim = controls.value("dkimverify")
    except OSError as e:                 # ctl.reader.ControlError names the file
        raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
    if dkim:
        from qmailpy.filters import dkimstep
        if dkimstep.came_over_smtp(controls):
            dkimstep.run(staged, controls, log)
    clam, spam, keys = select(controls, staged.recipients, log)
    if not clam and not spam:
        return None
    from qmailpy.filters import scan
    return scan.Filter(controls, clam, spam, log, keys=keys, deadline=staged.deadline).run(staged)
