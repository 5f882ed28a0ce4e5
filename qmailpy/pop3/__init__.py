"""POP3 for the mailboxes of the users database, served by Dovecot.

`dovecot` writes a self-contained Dovecot configuration for a qmail home
(SQL passdb/userdb over vpopmail's tables, Maildirs, a post-login hook);
`postlogin` is that hook: it records the client IP in the relay table
(POP-before-SMTP) and execs the real pop3 process. See docs/pop3.md.
"""
