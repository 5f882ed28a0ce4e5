"""qmail-tcpserver: tcpserver's command line and environment, with qmail-smtpd preloaded and forked per connection."""
