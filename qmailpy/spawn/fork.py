"""Running a delivery program's main() in a forked child of the spawner instead of exec'ing it.

An exec of a new interpreter costs about 10 ms per delivery; a fork of the
spawner, which imported qmail-local's or qmail-remote's modules once
(`preload`), costs 1-2 ms. The child keeps everything the exec'd program
would see, so qmail-send cannot tell the two apart:

- the same process boundary: one child per delivery, reaped by the spawner;
- the same fds: the message on 0, the report pipe on 1 and 2, every other fd
  the spawner holds (its command and report pipes, other deliveries' pipes,
  users/cdb) closed;
- the same signals (progstart.fresh_signals), process name, cwd, environment, argv and ids
  (the supplementary groups, then gid, then uid: setresgid/setresuid, so no
  saved id is left to go back to root with);
- the same exit statuses: main()'s return or SystemExit code as sys.exit()
  gives it (a bug inside qmail-local's or qmail-remote's main() is its
  log.guard's one line and exit 111, exec'd or forked); an exception that escapes
  the child's work (main() unguarded, the import, the fds) is one line on the
  report pipe (log.write_bug), then SIGKILL, so the report is "crashed" (a
  deferral) as for an exec'd program killed by a signal; a failed id switch
  exits with `refused` (qmail-lspawn's QLX_USAGE: a deferral, whatever the
  errno), never running the program.

The child ends with os._exit: no atexit handlers, no flushing of buffers the
spawner wrote, nothing of the spawner run twice. Objects inherited from the
spawner are frozen out of the child's garbage collector (gc.freeze), so none of
them is finalised there (a file object's finaliser would close an fd number the
child reuses). Each child starts from the spawner's state, which no delivery
changes: nothing one delivery caches reaches the next.
"""
import os
import sys

from qmailpy.fileio import close_quietly, write_all
from qmailpy.forkexec import fd_limit


class Child:
    """What the spawn server needs of a Popen: pid, wait(), returncode."""
    __slots__ = ("pid", "returncode")

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def wait(self):
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def beside_me(name):
    """argv[0] for a forked program: the launcher exec would have run (bin/NAME beside ours),
    so that what the program finds beside itself (paths.program_path) is the same."""
    return os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name)


def preload(modules):
    """Import what the children will run, then freeze the spawner's objects out of the
    collector: fewer pages copied on write in each child. A "module:function" name is the
    module imported and its function called (a loader such as qmailpy.dkim.lib:dkimpy). A
    module that cannot be imported (or a loader that fails) is logged and left to the child
    (which then fails as the exec'd program would)."""
    import gc
    import importlib
    for name in modules:
        try:
            module, _, loader = name.partition(":")
            module = importlib.import_module(module)
            if loader:
                getattr(module, loader)()
        except Exception as e:          # noqa: BLE001 - any import trouble: the child meets it again
            from qmailpy.log import write_line
            write_line(2, "warning: cannot preload %s: %s: %s" % (name, type(e).__name__, e))
    gc.collect()
    gc.freeze()


def start(target, args, fdmess, fdout, cwd, env, ids=None, refused=None):
    """Fork a child that runs `target` ("module:function", the program's main; imported in
    the child, so a module that cannot be imported crashes the child, never the spawner)
    as `args` would be run by exec; a Child.

    ids: as Popen's user=, group=, extra_groups= (as root); refused: the exit code when
    switching to them fails.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    pid = os.fork()
    if pid:
        return Child(pid)
    code = 111
    try:
        code = _child(target, args, fdmess, fdout, cwd, env, ids, refused)
    except BaseException as e:
        _crash(args, e)
    finally:
        os._exit(code)


def _child(target, args, fdmess, fdout, cwd, env, ids, refused):
    import gc
    from qmailpy.progstart import fresh_signals
    gc.freeze()                                   # the spawner's objects are never finalised here
    fresh_signals()
    os.dup2(fdmess, 0)
    os.dup2(fdout, 1)
    os.dup2(fdout, 2)
    os.closerange(3, fd_limit())
    _name(os.path.basename(os.fsdecode(args[0])))
    os.chdir(cwd)
    if ids:
        try:
            os.setgroups(ids["extra_groups"])
            os.setresgid(ids["group"], ids["group"], ids["group"])
            os.setresuid(ids["user"], ids["user"], ids["user"])
        except OSError:
            return refused
    if env is not os.environ:                     # qmail-rspawn's children keep the spawner's as it is
        _become_environment(env)
    sys.argv = [os.fsdecode(a) for a in args]
    import importlib
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    try:
        got = main()
    except SystemExit as e:
        got = e.code
    _flush()
    if got is None:
        return 0
    if isinstance(got, int):
        return got & 0xFF
    _write(2, ("%s\n" % (got,)).encode("utf-8", "surrogateescape"))   # as sys.exit("text") does
    return 1


def _become_environment(env):
    """os.environ (and the C environment) made equal to env by changing only what differs:
    qmail-lspawn's env is its own plus at most MAILDIRQUOTA, and clearing and rebuilding
    the whole of it copied about 50 more pages in every child (docs/performance.md)."""
    env = dict(env)
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _crash(args, exc):
    """An exception escaped the child's work (a bug outside the program's guarded main(): its
    import, the fds, the environment): one line on fd 2, the report pipe (log.write_bug,
    never raises), then die by a signal, as an exec'd program that crashed."""
    try:
        from qmailpy.log import write_bug
        write_bug(os.path.basename(os.fsdecode(args[0])), exc)
    finally:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def _name(name):
    """The process name ps and /proc/PID/status show, as exec would set it (else the spawner's).
    Raw os calls: a text file object would allocate (and copy on write) about 100 pages."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, os.fsencode(name)[:15])
    except OSError:
        pass
    finally:
        close_quietly(fd)       # a name not set is no reason to fail the delivery


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _write(fd, data):
    try:
        write_all(fd, data)
    except OSError:
        pass
