"""qmail-local: deliver one message to one local user (Maildir, mbox, programs, forwards).

`deliver.deliver(argv, fd0, environ)` does the work without exec'ing; `main`
is the command-line wrapper. See docs/qmail-local.md and docs/maildir.md.
"""
