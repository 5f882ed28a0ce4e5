"""One SPF check's result and the texts made of it, as qmail-spf (rc5) writes them.

The result word (rc5's: pass fail softfail neutral none unknown error), the
Received-SPF header with rc5's comments, and the explanation of a refusal: the
domain's own exp= text (several TXT records make several lines, as rc5) wins over
control/spfexp. Texts are expanded with qmailpy.policy.spfmacro when asked for
(%{p} of an explanation costs lookups).
"""
from qmailpy.policy.spfmacro import EXPLAIN, expand, parse, render

COMMENTS = {
    "pass": "%{xr}: %{xs} designates %{c} as permitted sender",
    "softfail": "%{xr}: transitioning %{xs} does not designate %{c} as permitted sender",
    "fail": "%{xr}: %{xs} does not designate %{c} as permitted sender",
    "neutral": "%{xr}: %{c} is neither permitted nor denied by %{xs}",
    "none": "%{xr}: domain at %{d} does not designate permitted sender hosts",
    "unknown": "%{xr}: %{xe}",
    "error": "%{xr}: error in processing during lookup of %{d}: %{xe}",
}
IDENTITY = {"mailfrom": " client-ip=%{c}; envelope-from=%{s};", "helo": " client-ip=%{c}; helo=%{h};"}
# rc5's two other texts of an unknown result: hdr_ext() (a mechanism it does not know; the term
# follows the result word) and hdr_syntax() (a term that does not parse).
UNKNOWN_FORMS = {"ext": "%{xr}: %{xs} uses mechanism not recognized by this client",
                 "syntax": "%{xr}: parse error in %{xs}"}


def printable(text):
    return "".join(c if " " <= c <= "~" or c == "\n" else "?" for c in text)


class Explanation:
    """A domain's exp= text as fetched: its TXT records (valid, ASCII) and the domain whose
    record named it (%{d}); expanded only when a reply needs it (%{p} costs lookups)."""
    __slots__ = ("lines", "domain")

    def __init__(self, lines, domain):
        self.lines, self.domain = lines, domain


class SpfResult:
    """One SPF check: the result word, where it came from, and the texts derived from it."""
    __slots__ = ("result", "domain", "identity", "error", "ctx", "exp", "spfexp", "form", "term")

    def __init__(self, result, domain, identity, ctx, error="", exp=None, spfexp="", form=None, term=""):
        self.result, self.domain, self.identity, self.ctx = result, domain, identity, ctx
        self.error, self.exp = error, exp
        self.form, self.term = form, term        # an unknown's rc5 text (UNKNOWN_FORMS) and its term
        self.spfexp = spfexp if isinstance(exp, Explanation) else exp     # the fallback of a domain's text
        if ctx.expdomain is None:
            ctx.expdomain = domain

    def _expdomain(self):
        # %{d}: the domain checked. rc5 expands with the domain whose record decided, which
        # is empty for spfguess/spfrules ("local policy"); the checked domain is more useful.
        return self.domain

    def _comment_template(self):
        return UNKNOWN_FORMS.get(self.form) or COMMENTS[self.result]

    def comment(self):
        self.ctx.error = self.error
        return expand(self._comment_template(), self.ctx, self._expdomain())

    def header(self):
        """The Received-SPF line (LF-terminated), written after qmail-smtpd's Received line:
        `unknown TERM (...)` for a mechanism rc5 would not know, as its hdr_ext()."""
        self.ctx.error = self.error
        word = self.result
        if word == "unknown" and self.form == "ext":
            word += " " + self.term.replace("%", "%%")
        text = expand("%s (%s)%s" % (word, self._comment_template(), IDENTITY[self.identity]),
                      self.ctx, self._expdomain())
        return "Received-SPF: %s\n" % printable(text).replace("\n", " ")

    def explanation(self):
        """The explanation: the domain's exp= text if it expands to ASCII, else control/spfexp."""
        self.ctx.error = self.error
        exp = self.exp
        if isinstance(exp, Explanation):
            text = "\n".join(render(parse(line, EXPLAIN), lambda letter: self.ctx.value(letter, exp.domain))
                             for line in exp.lines)
            if text.isascii():
                return printable(text)
            exp = self.spfexp
        return printable(expand(exp, self.ctx, self._expdomain()))

    def reject_reply(self):
        """`550 <explanation> (#5.7.1)`, one 550- line per line of a multi-line explanation."""
        lines = self.explanation().split("\n")
        head = ["550-" + line for line in lines[:-1]]
        return "\r\n".join(head + ["550 %s (#5.7.1)" % lines[-1]])

    def summary(self):
        where = "local policy" if self.ctx.expdomain == "" else (self.domain or "-")
        extra = (": " + self.error) if self.error else ""
        return "%s (%s, %s%s)" % (self.result, self.identity, where, extra)
