"""qmail-inject and sendmail: mail from local users and their programs.

token822  qmail's RFC 822 tokens and address lists (token822.c)
headers   known header fields and the header/body split (hfield.c, headerbody.c)
rewrite   the address rewriting rules (defaulthost, defaultdomain, plusdomain)
prepare   the header qmail-inject writes (identity, Date, Message-ID, recipients)
main      qmail-inject (options, the queue)
sendmail  the sendmail interface (qmail's sendmail wrapper)
"""
