"""Where an envelope recipient goes: qmail-send's rewriting and the keys of a recipient.

`rewrite` is qmail-send.c's rewriting (locals, virtualdomains, percenthack,
envnoathost); qmail-todo, qmail-send and qmail-lspawn call it. `keys` builds
on it the one answer every per-recipient decision asks (clamavclients,
spamdclients, spamd's User:, badrcptto): the mailbox the recipient will be
delivered to, and the other forms of its address. Pure code over the
controls: it imports only qmailpy.proto and qmailpy.ctl, never a program's
package, so qmail-smtpd, qmail-queue and qmail-send all import it. See
docs/filters.md ("Whose key").
"""
