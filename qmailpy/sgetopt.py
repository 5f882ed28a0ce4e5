"""djb's getopt (sgetopt.c/subgetopt.c): qmail-inject, sendmail, maildirmake and preline parse options with it.

Differs from POSIX getopt where qmail's callers can tell: `--` and any
argument starting with `--` (such as `--foo`) end the options and are
consumed; a lone `-` ends them and stays an argument; an option's argument
is the rest of the word (`-fme`) or the next word (`-f me`). A problem
prints `prog: illegal option -- x` or `prog: option requires an argument -- x`
to stderr and gives '?'.
"""
import os


class GetOpt:
    def __init__(self, prog, args, opts, err=None):
        """args: the arguments after the program name (str); opts: e.g. "aAhHnNf:"."""
        self.prog, self.args, self.opts, self.err = prog, args, opts, err
        self.ind = self.pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        """(letter, argument or None); ('?', letter) after reporting a problem."""
        args = self.args
        if self.ind >= len(args):
            raise StopIteration
        if self.pos and self.pos >= len(args[self.ind]):
            self.ind, self.pos = self.ind + 1, 0
            if self.ind >= len(args):
                raise StopIteration
        word = args[self.ind]
        if not self.pos:
            if word[:1] != "-":
                raise StopIteration
            if word[1:2] in ("-", ""):
                if word[1:2]:
                    self.ind += 1
                raise StopIteration
            self.pos = 1
        c = word[self.pos]
        self.pos += 1
        i = self.opts.find(c) if c != ":" else -1
        if i < 0:
            return self._problem("illegal option", c)
        if self.opts[i + 1:i + 2] != ":":
            return c, None
        arg = word[self.pos:]
        self.ind, self.pos = self.ind + 1, 0
        if not arg:
            if self.ind >= len(args):
                return self._problem("option requires an argument", c)
            arg = args[self.ind]
            self.ind += 1
        return c, arg

    def _problem(self, what, c):
        msg = "%s: %s -- %s\n" % (self.prog, what, c)
        if self.err is not None:
            self.err(msg)
        else:
            os.write(2, msg.encode("utf-8", "surrogateescape"))
        return "?", c

    def skip_rest(self):
        """Drop the rest of the current word (sendmail's -E and -J take an optional argument)."""
        if self.pos:
            self.pos = len(self.args[self.ind])

    def rest(self):
        """The arguments after the options."""
        if self.pos and self.ind < len(self.args) and self.pos >= len(self.args[self.ind]):
            self.ind, self.pos = self.ind + 1, 0
        return self.args[self.ind:]
