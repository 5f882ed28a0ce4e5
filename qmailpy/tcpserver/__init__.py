"""qmail-tcpserver: tcpserver's command line and environment, with qmail-smtpd preloaded and its sessions run by pre-forked workers."""
