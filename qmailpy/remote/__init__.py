"""qmail-remote: deliver one message to one remote host over SMTP (see docs/qmail-remote.md).

main (argv, controls, DNS, connection attempts), routes (smtproutes, address
quoting), ipme (this host's addresses), connect (sockets), wire (SMTP reply
reading and timed writes), client (the SMTP dialogue), report (every text
qmail-send gets back).
"""
