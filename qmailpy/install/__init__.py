"""`tools/install.py --production`: qmail's users, the queue's owners, service and cron files.

accounts  qmail's users and groups (useradd/groupadd), created where missing
services  daemontools/runit `run` scripts under $QMAILHOME/service/, the crontab
ctlvalue  prints control values for run scripts (tcpserver -c tcpsessioncount)

See docs/operations.md.
"""
