"""Starting a program as qmail does, fork then exec, without the subprocess module.

subprocess imports threading, and threading (as random does) registers a
handler that runs in every child the process forks from then on. qmail-lspawn
forks a qmail-local from preloaded code for each delivery: with subprocess
loaded there for the few deliveries that start a program, every child ran
those handlers (150 more copied pages and 0.4 ms of CPU in a child that does
nothing else, about 90 pages more per delivery; docs/performance.md,
"At-fork handlers"). So the programs a forked delivery starts (qmail-local's
|program lines and its qmail-queue for forwards) and qmail-send's helpers
start here.

What the child does between fork and exec, and no more: SIGPIPE and SIGXFSZ
back to default (Python ignores both; qmail's programs start with them
default, and qmail-local's mailprogram() sets SIGPIPE so for |program),
its fds 0, 1, 2... set from the map, every other fd closed, the ids switched
(supplementary groups, then gid, then uid, so no saved id is left), the
directory changed, then execve with no $PATH search (qmail's execv), or with
`search` the $PATH search of execvp (the programs .qmail lines call: bouncesaying,
condredirect, except and preline start theirs so).
"""
import os


def fd_limit():
    """One past the highest fd a process may hold (what closerange needs to close them all)."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY and soft < (1 << 20) else (1 << 20)


def start(argv, fdmap, environ, cwd=None, ids=None, search=False):
    """Fork and exec argv (argv[0] a path) with the child's fd N a copy of our fd
    fdmap[N]; fds 0-2 left out of the map are inherited as they are, every other fd
    is closed. ids: (uid, gid, supplementary groups) to switch to; search: look argv[0]
    up in environ's $PATH (execvp). The child's pid;
    OSError (errno, and the file: cwd for a failed chdir, argv[0] for a failed exec)
    when it could not get to exec, the child reaped, as Popen raises it."""
    r, w = os.pipe()                            # close-on-exec: EOF here means exec'd
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        become(argv, fdmap, environ, cwd, ids, w, search)     # never returns; r closes with the rest
    os.close(w)
    try:
        said = os.read(r, 64)       # b"" once exec closed the pipe; else the child's one short write
    finally:
        os.close(r)
    if not said:
        return pid
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:                   # SIGCHLD ignored: the kernel reaped it
        pass
    stage, _, number = said.partition(b":")
    code = int(number)
    raise OSError(code, os.strerror(code), cwd if stage == b"chdir" else argv[0])


def wait(pid):
    """The child's exit code, or minus the signal that killed it (as Popen.returncode)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def become(argv, fdmap, environ, cwd=None, ids=None, errpipe=None, search=False):
    """In a freshly forked child: set up and exec argv; never returns. A failure is
    written to errpipe as b"stage:errno" (when there is one) and the child exits 127."""
    stage = b"fds"
    code = 0
    try:
        import _signal                          # the C module: no enum to import in a child
        import fcntl
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
        top = max([2, *fdmap]) + 1                 # above every target: no copy lands on one
        if errpipe is not None:
            errpipe = fcntl.fcntl(errpipe, fcntl.F_DUPFD_CLOEXEC, top)
        moved = {target: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, top) for target, src in fdmap.items()}
        for target, src in moved.items():
            os.dup2(src, target, inheritable=True)
        for fd in range(3, top):                   # below the targets' top: what no target took
            if fd not in fdmap:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if errpipe is None:
            os.closerange(top, fd_limit())
        else:
            os.closerange(top, errpipe)
            os.closerange(errpipe + 1, fd_limit())
        if ids is not None:
            stage = b"ids"
            uid, gid, groups = ids
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        if cwd is not None:
            stage = b"chdir"
            os.chdir(cwd)
        stage = b"exec"
        if not argv[0]:             # C's execv/execvp: ENOENT; Python's would raise ValueError (EIO below)
            raise FileNotFoundError(2, "empty program name")
        (os.execvpe if search else os.execve)(argv[0], argv, environ)
    except OSError as e:
        code = e.errno or 0
    except BaseException:                       # noqa: BLE001 - nothing may return into the parent's code
        pass
    try:
        if errpipe is not None:
            os.write(errpipe, b"%s:%d" % (stage, code or 5))     # 5: EIO, for a failure without errno
    finally:
        os._exit(127)
