"""A power-loss checker in the spirit of ALICE: run a program under strace, replay its file
system calls, and ask what a power loss at a given moment may leave.

run() starts a command under `strace -f -y` and returns a Trace: the calls of every process
in order, each path absolute (fds through -y's annotation, names relative to a process's
cwd through that process's chdir() and inherited cwd). Trace.durable(path, at) replays the
calls before event `at` and says why `path` (a file's bytes and its name) might not survive
a power loss at that moment: [] when it would.

The model is the weakest file system a mail host runs, ext4 without a journal (metadata
written back in any order), with the one promise every Linux file system a mail host uses
makes on top of POSIX (ext4 with and without a journal, XFS, btrfs):

- a file's bytes are durable once an fsync/fdatasync of it returned after its last write;
- a name (a creation, link, rename or unlink) is durable once its directory was fsynced
  after it was made;
- the first fsync of a file made in this trace (open O_CREAT of a name that was not there)
  also makes the names it has at that moment durable: ext4 without a journal syncs the
  parent of a new inode (ext4_sync_parent, EXT4_STATE_NEWENTRY), ext4 with a journal and
  XFS commit the log holding the creation, btrfs logs a new inode's references. A link
  made after that first fsync is not covered: its directory must be fsynced.

Anything the trace did not make (there before run()) counts as durable.
"""
import os
import re
import shutil
import subprocess
import tempfile

CALLS = ("trace=%file,%desc,%process,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,"
         "link,linkat,unlink,unlinkat,write,pwrite64,writev,sendto,sendmsg,chdir,fchdir,ftruncate")
LINE = re.compile(r"^(\d+) +(?:(\w+)\((.*)\) += (-?\d+|\?)(?:<([^>]*)>)?|\+\+\+ exited with (\d+) \+\+\+|"
                  r"\+\+\+ killed by (\w+))")
FD = re.compile(r"^(-?\d+|AT_FDCWD)<([^>]*)>")
STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
WRITES = {"write", "pwrite64", "writev", "ftruncate", "sendto", "sendmsg", "pwritev", "pwritev2"}
SYNCS = {"fsync", "fdatasync"}


class Event:
    __slots__ = ("index", "pid", "call", "args", "ret", "retpath", "exit", "paths", "fdpath", "data")

    def __init__(self, index, pid, call, args="", ret=None, retpath=None, exit=None):
        self.index, self.pid, self.call, self.args = index, pid, call, args
        self.ret, self.retpath, self.exit = ret, retpath, exit
        self.paths, self.fdpath, self.data = [], None, b""

    def __repr__(self):
        return "#%d %d %s(%s) = %s" % (self.index, self.pid, self.call, self.args[:120], self.ret)


def _unescape(s):
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def snapshot(*roots):
    """Every path under `roots` now: what a trace that creates them again did not make."""
    found = set()
    for root in roots:
        for folder, dirs, files in os.walk(root):
            found.add(folder)
            found.update(os.path.join(folder, n) for n in dirs + files)
    return found


def run(cmd, input=None, env=None, cwd=None, timeout=60, follow_forks=True, roots=()):
    """(CompletedProcess, Trace) of `cmd` run under strace. roots: directories whose files
    present now are told apart from ones the command creates with O_CREAT without O_EXCL."""
    before = snapshot(*roots)
    strace = shutil.which("strace")
    assert strace, "strace is needed for the power-loss tests"
    out = tempfile.NamedTemporaryFile(prefix="durability.", suffix=".strace", delete=False)
    out.close()
    try:
        argv = [strace, "-q", "-y", "-s", "4096", "-e", CALLS, "-o", out.name]
        if follow_forks:
            argv.insert(1, "-f")
        proc = subprocess.run(argv + list(cmd), input=input, env=env, cwd=cwd, capture_output=True,
                              timeout=timeout)
        with open(out.name, encoding="latin-1") as f:
            text = f.read()
    finally:
        os.unlink(out.name)
    return proc, Trace(text, cwd or os.getcwd(), before, roots)


class Trace:
    def __init__(self, text, cwd, before=(), roots=()):
        self.before, self.roots = set(before), tuple(str(r) for r in roots)
        self.events = []
        self.execs = {}                 # pid -> the program it exec'd last
        cwds, pending = {}, {}
        first = None
        for raw in text.splitlines():
            m = re.match(r"^(\d+) +(.*)$", raw)
            if not m:
                continue
            pid, rest = int(m.group(1)), m.group(2)
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest[:-len("<unfinished ...>")].rstrip()
                continue
            r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
            if r:
                rest = pending.pop(pid, "") + r.group(1)
            if first is None:
                first = pid
                cwds[pid] = cwd
            self._parse(pid, rest, cwds)
        self.first = first

    def _parse(self, pid, rest, cwds):
        m = LINE.match("%d %s" % (pid, rest))
        if not m:
            return
        if m.group(6) is not None or m.group(7) is not None:
            code = int(m.group(6)) if m.group(6) is not None else -1
            self.events.append(Event(len(self.events), pid, "exit", exit=code))
            return
        call, args, ret, retpath = m.group(2), m.group(3), m.group(4), m.group(5)
        cwd = cwds.get(pid, "/")
        at = FD.match(args)
        if at and at.group(1) == "AT_FDCWD":
            cwds[pid] = cwd = at.group(2)
        if ret == "?" or (ret is not None and ret.startswith("-")):
            return                      # failed (or never returned): changed nothing
        ev = Event(len(self.events), pid, call, args, ret, retpath)
        fd = FD.match(args)
        if fd:
            ev.fdpath = fd.group(2)
        names = [_unescape(s).decode("latin-1") for s in STR.findall(args)]
        if call in ("clone", "clone3", "fork", "vfork"):
            cwds[int(ret)] = cwd
        elif call == "chdir":
            cwds[pid] = os.path.normpath(os.path.join(cwd, names[0]))
        elif call == "fchdir" and ev.fdpath:
            cwds[pid] = ev.fdpath
        elif call == "execve":
            self.execs[pid] = names[0]
        if call in ("link", "rename", "unlink", "mkdir", "rmdir", "symlink"):
            ev.paths = [os.path.normpath(os.path.join(cwd, n)) for n in names]
        elif call in ("linkat", "renameat", "renameat2", "unlinkat", "mkdirat"):
            dirs = [d[1] for d in re.findall(r"(?:^|, )(-?\d+|AT_FDCWD)<([^>]*)>", args)]
            ev.paths = [os.path.normpath(os.path.join(d, n)) for d, n in zip(dirs, names)]
            if call == "unlinkat" and "AT_REMOVEDIR" in args:
                ev.call = "rmdir"
            ev.call = {"linkat": "link", "renameat": "rename", "renameat2": "rename",
                       "mkdirat": "mkdir"}.get(ev.call, ev.call if ev.call == "rmdir" else "unlink")
        elif call in ("open", "openat", "creat"):
            ev.paths = [retpath] if retpath else []
        if call in ("write", "sendto", "sendmsg", "writev") and names:
            ev.data = b"".join(_unescape(s) for s in STR.findall(args))
        self.events.append(ev)

    # -- finding the moments to check --------------------------------------------------------

    def find(self, pred, what="event"):
        """Index of the first event for which pred(event) holds."""
        for ev in self.events:
            if pred(ev):
                return ev.index
        raise AssertionError("no %s in the trace" % what)

    def find_all(self, pred):
        return [ev.index for ev in self.events if pred(ev)]

    def exit_of(self, pid=None):
        """Index of the exit of `pid` (default: the first process): its exit_group(), else strace's
        "+++ exited" line. That line comes when strace reaps the process, which a loaded machine
        can put after calls its parent made once the exit was already known to it."""
        pid = self.first if pid is None else pid
        return self.find(lambda ev: ev.call in ("exit_group", "exit") and ev.pid == pid, "exit of %s" % pid)

    def written(self, data, to=None):
        """Index of the first write of bytes holding `data` (to an fd whose path contains `to`)."""
        return self.find(lambda ev: ev.call in ("write", "sendto", "sendmsg", "writev") and data in ev.data
                         and (to is None or (ev.fdpath and to in ev.fdpath)), "write of %r" % data)

    def unlinked(self, pattern):
        """Index of the first unlink/rename-away of a path matching the regex."""
        return self.find(lambda ev: ev.call in ("unlink", "rename") and re.search(pattern, ev.paths[0]),
                         "unlink of %s" % pattern)

    def made(self, pattern):
        """Every path matching the regex that the trace created, linked or renamed to."""
        found = []
        for ev in self.events:
            target = None
            if ev.call in ("link", "rename"):
                target = ev.paths[1]
            elif ev.call in ("open", "openat", "creat") and "O_CREAT" in ev.args and ev.paths:
                target = ev.paths[0]
            elif ev.call == "mkdir":
                target = ev.paths[0]
            if target and re.search(pattern, target) and target not in found:
                found.append(target)
        return found

    # -- the model -----------------------------------------------------------------------------

    def durable(self, path, at):
        """Why `path` might not survive a power loss just before event `at`: [] if it would."""
        st = _State(self.before, self.roots)
        for ev in self.events[:at]:
            st.apply(ev)
        return st.why_not(path)

    def back_after(self, path, at):
        """Why `path`, removed (unlinked, renamed away) before event `at`, might be back after a
        power loss then: [] if its removal is durable."""
        st = _State(self.before, self.roots)
        for ev in self.events[:at]:
            st.apply(ev)
        if st.pending.get(os.path.dirname(path), {}).get(path) == "removed":
            return ["removal of %s: %s/ not fsynced" % (os.path.basename(path), os.path.dirname(path))]
        return []

    def lost_at(self, paths, at):
        """{path: reasons} for every path not durable at `at`."""
        out = {}
        for p in paths:
            why = self.durable(p, at)
            if why:
                out[p] = why
        return out


class _Inode:
    __slots__ = ("dirty", "new", "dir")

    def __init__(self, new, is_dir=False):
        self.dirty, self.new, self.dir = False, new, is_dir


class _State:
    """Replays calls: names -> inodes, and what is not yet durable."""

    def __init__(self, before=(), roots=()):
        self.before, self.roots = before, roots
        self.names = {}                 # path -> _Inode (made in the trace)
        self.gone = set()               # paths unlinked in the trace
        self.pending = {}               # directory -> {path: 'made'|'removed'} not yet durable
        self.fds = {}                   # (fd table, fd) -> _Inode: a file is followed through its renames
        self.tables = {}                # thread -> the pid whose fd table it shares

    def _table(self, pid):
        return self.tables.get(pid, pid)

    def _fd(self, ev):
        fd = FD.match(ev.args)
        try:
            ino = self.fds.get((self._table(ev.pid), int(fd.group(1))))
        except (AttributeError, ValueError):
            ino = None
        return ino if ino is not None else self.names.get(ev.fdpath)

    def _ino(self, path):
        return self.names.get(path)

    def _pend(self, path, what):
        self.pending.setdefault(os.path.dirname(path), {})[path] = what

    def apply(self, ev):
        c = ev.call
        if c in ("open", "openat", "creat") and ev.paths:
            path = ev.paths[0]
            if "O_CREAT" in ev.args and path not in self.names and (
                    "O_EXCL" in ev.args or path in self.gone
                    or (path.startswith(self.roots) and path not in self.before)):
                self.names[path] = _Inode(new=True)
                self.gone.discard(path)
                self._pend(path, "made")
            if "O_TRUNC" in ev.args and path in self.names:
                self.names[path].dirty = True
            if path.startswith("/") and not path.startswith(("/dev/", "/proc/")):
                if path not in self.names:
                    self.names[path] = _Inode(new=False)    # there before the trace
                self.fds[(self._table(ev.pid), int(ev.ret))] = self.names[path]
        elif c in WRITES and ev.fdpath:
            ino = self._fd(ev)
            if ino is not None:
                ino.dirty = True
        elif c in SYNCS and ev.fdpath:
            path = ev.fdpath
            for made in list(self.pending.get(path, {})):
                del self.pending[path][made]
            ino = self._fd(ev)
            if ino is not None:
                ino.dirty = False
                if ino.new:
                    ino.new = False
                    for p, other in self.names.items():
                        if other is ino:
                            self.pending.get(os.path.dirname(p), {}).pop(p, None)
        elif c in ("clone", "clone3", "fork", "vfork"):
            child, table = int(ev.ret), self._table(ev.pid)
            if "CLONE_FILES" in ev.args:        # a thread: the same fd table
                self.tables[child] = table
            else:
                for (owner, fd), ino in list(self.fds.items()):
                    if owner == table:
                        self.fds[(child, fd)] = ino
        elif c == "link":
            old, new = ev.paths
            ino = self._ino(old) or _Inode(new=False)
            self.names[new] = ino
            self.gone.discard(new)
            self._pend(new, "made")
        elif c == "rename":
            old, new = ev.paths
            ino = self.names.pop(old, None) or _Inode(new=False)
            self.names[new] = ino
            self.gone.add(old)
            self.gone.discard(new)
            self._pend(new, "made")
            self._pend(old, "removed")
        elif c in ("unlink", "rmdir"):
            self.names.pop(ev.paths[0], None)
            self.gone.add(ev.paths[0])
            self._pend(ev.paths[0], "removed")
        elif c == "mkdir":
            self.names[ev.paths[0]] = _Inode(new=False, is_dir=True)
            self._pend(ev.paths[0], "made")

    def why_not(self, path):
        why = []
        if path in self.gone and path not in self.names:
            return ["removed"]
        ino = self._ino(path)
        if ino is not None and ino.dirty:
            why.append("data not fsynced")
        d = path
        while d not in ("/", ""):
            if self.pending.get(os.path.dirname(d), {}).get(d) == "made":
                why.append("name %s: %s/ not fsynced" % (os.path.basename(d), os.path.dirname(d)))
            d = os.path.dirname(d)
        return why
