"""The small programs qmail ships for `|` lines of .qmail files, as qmail 1.03 / notqmail.

bouncesaying  bounce, perhaps only when a program exits 0
condredirect  forward to another address when a program exits 0, then stop the .qmail
except        a program's exit 0 becomes a bounce, its bounce a success
forward       forward to addresses from a program line
preline       a command gets the message behind UFLINE, RPLINE and DTLINE

begin         progstart, then the usage check
strerr        their last words on fd 2 and exit codes, as strerr_die()
child         the program bouncesaying, condredirect and except run, and what its exit says
resend        the message on fd 0 into the queue (local.forward.queue), for forward and condredirect
"""
