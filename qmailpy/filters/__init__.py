"""The H-Sphere content filters of qmail-queue: clamd (viruses) and spamd (spam).

qmail-queue asks `select` which recipients are filtered (a cdb lookup, no
network code); only then `scan` is imported and talks to clamd (`clamd`) and
spamd (`spamd`). `runscripts` makes the daemons' command lines, run scripts
and the freshclam crontab line. See docs/filters.md.
"""
