"""What a session's driver has answered, and the first question still to ask.

The anti-spam checks, SPF (pyspf), relay control and chkuser are written as
plain calls to a resolver and a users database. In a session they get these
ports instead: a question already answered for this command gets its answer;
any other is noted (the first one) and Unanswered is raised. The session then
hands the question to its driver as an action (qmailpy.smtpd.actions), stores
the answer and runs the decision again from its start; it is a pure function
of the controls and the answers, so each run gets one question further, and
only a run without a new question counts (pyspf swallows some exceptions, so
`missing`, not the exception, says whether a run was whole).

Answers are kept for one command (the checks cache what they found for the
session themselves: Policy.cached), so the DNS server sees the same questions
it saw when the checks asked it directly. Deadlines (SPF's time limit for a
whole check) are kept in the order they were first given within a command, so
a run again does not move them.
"""
from qmailpy.smtpd.actions import AskUsers, Lookup


class Unanswered(BaseException):
    """A question without its answer yet (BaseException: checks that catch Exception let it by)."""


class Answers:
    def __init__(self):
        self.known = {}             # question key -> answer (an exception is raised again)
        self.missing = None         # (key, action) of the first question of this run without an answer
        self._deadlines = []        # until() deadlines of this command, in the order first given
        self._nth = 0
        self.resolver = ResolverPort(self, None)
        self.users = UsersPort(self)

    def new_command(self):
        self.known = {}
        self._deadlines = []

    def new_run(self):
        self.missing = None
        self._nth = 0

    def ask(self, key, action):
        try:
            got = self.known[key]
        except KeyError:
            if self.missing is None:
                self.missing = (key, action)
            raise Unanswered(key) from None
        if isinstance(got, BaseException):
            raise got
        return got

    def store(self, key, answer):
        self.known[key] = answer

    def deadline(self, deadline):
        """The deadline the n-th until() of this command was first given."""
        n = self._nth
        self._nth += 1
        if n < len(self._deadlines):
            return self._deadlines[n]
        self._deadlines.append(deadline)
        return deadline


class ResolverPort:
    """A resolver (qmailpy.dns.resolver's methods) whose answers the driver gives."""
    __slots__ = ("answers", "deadline")

    def __init__(self, answers, deadline):
        self.answers, self.deadline = answers, deadline

    def until(self, deadline):
        deadline = self.answers.deadline(deadline)
        if self.deadline is not None and self.deadline <= deadline:
            return self
        return ResolverPort(self.answers, deadline)

    def _ask(self, method, args):
        return self.answers.ask(("dns", method, args), Lookup(method, args, self.deadline))

    def a(self, name):
        return self._ask("a", (name,))

    def aaaa(self, name):
        return self._ask("aaaa", (name,))

    def mx(self, name):
        return self._ask("mx", (name,))

    def txt(self, name):
        return self._ask("txt", (name,))

    def ptr(self, ip):
        return self._ask("ptr", (ip,))


class UsersPort:
    """The users-database questions a session asks (USERS_QUESTIONS), answered by the driver."""
    __slots__ = ("answers",)

    def __init__(self, answers):
        self.answers = answers

    def _ask(self, name, args, key=None):
        return self.answers.ask(("users", name, args if key is None else key), AskUsers(name, args))

    def relay_allowed(self, ip, since, window):
        return self._ask("relay_allowed", (ip, since, window))

    def find_address(self, name, domain):
        return self._ask("find_address", (name, domain))

    def check_recipient(self, addr):
        return self._ask("check_recipient", (addr,))

    def srs_reverse(self, addr, now):
        """Keyed by the address alone: a run again within the command has a later `now`
        but asks the same question (the first run's time goes to the driver)."""
        return self._ask("srs_reverse", (addr, now), key=(addr,))


# -- for drivers: the answers, from a real resolver and database

def answer_lookup(resolver, action):
    """The answer of `resolver` (a Resolver, a StaticResolver) to a Lookup. (An unusable
    $DNSTIMEOUT is found when the resolver is made: SmtpdConfig refuses it at connect.)"""
    if action.deadline is not None:
        resolver = resolver.until(action.deadline)
    return getattr(resolver, action.method)(*action.args)


def answer_users(opener, action):
    """The answer of the users database `opener()` gives to an AskUsers (USERS_QUESTIONS);
    UsersUnavailable or a ControlError is the answer too (the session answers 451 or 421)."""
    from qmailpy.ctl.reader import ControlError
    from qmailpy.users.errors import UsersUnavailable
    name, args = action.name, action.args
    if name not in USERS_QUESTIONS:
        raise ValueError("no such users question: %r" % name)
    try:
        return getattr(opener(), name)(*args)     # qmailpy.users.service.open_answers' object
    except (UsersUnavailable, ControlError) as e:
        return e


USERS_QUESTIONS = ("relay_allowed", "find_address", "check_recipient", "srs_reverse")
