"""Rows 1-2: a qmail-smtpd session's start-up, imports and memory against bare interpreters."""
import os
import statistics
import subprocess

from procs import BenchFailure, spawn, tool
from settings import MAIL_SESSION, VPY


class StartupRows:
    """Bench's start-up and memory rows (a mixin: the state is Bench's)."""
    # -- 1. start-up --------------------------------------------------------
    def imports(self):
        """Modules a plain session (HELO, QUIT) imports, from -X importtime on the real launcher."""
        with open(self.smtpd) as f:
            shebang = f.readline()[2:].split()
        argv = shebang + ["-X", "importtime", self.smtpd]
        r = subprocess.run(argv, input=b"HELO bench\r\nQUIT\r\n", env=self.session_env,
                           capture_output=True, timeout=60)
        if r.returncode:
            raise BenchFailure("qmail-smtpd session failed: %s" % r.stderr.decode()[-500:])
        mods = [line.rsplit("|", 1)[1].strip() for line in r.stderr.decode().splitlines()
                if line.startswith("import time:")]
        return [m for m in mods if m != "imported package"]

    def startup(self, execs):
        """One QUIT session against bare interpreters, interleaved exec by exec; ms, median per run."""
        python_path = tool("python3")
        cmds = {
            "smtpd_session_ms": ([self.smtpd], self.session_env, {0: b"QUIT\r\n"}),
            "python_path_ms": ([python_path, "-c", "pass"], os.environ, None),
            "python_venv_ms": ([VPY, "-c", "pass"], os.environ, None),
            "python_venv_IS_ms": ([VPY, "-I", "-S", "-c", "pass"], os.environ, None),
        }
        times = {name: [] for name in cmds}
        for _ in range(execs):
            for name, (argv, env, inputs) in cmds.items():
                times[name].append(spawn(argv, env, inputs) * 1000)
        for name, values in times.items():
            self.record(name, statistics.median(values))

    # -- 2. memory of a session ---------------------------------------------------
    def memory(self, execs):
        """Max RSS (MiB) of a QUIT session and of a session queueing one message, vs `-I -S -c pass`.

        Through /usr/bin/time: the ru_maxrss that wait4 reports for a child of
        this driver counts the driver's own ~15 MiB (its pre-exec address space).
        """
        gnu_time, out = tool("time"), os.path.join(self.tmp, "maxrss")
        cmds = {
            "smtpd_rss_quit_mib": ([self.smtpd], self.session_env, {0: b"QUIT\r\n"}),
            "smtpd_rss_mail_mib": ([self.smtpd], self.session_env, {0: MAIL_SESSION}),
            "python_rss_mib": ([VPY, "-I", "-S", "-c", "pass"], os.environ, None),
        }
        for name, (argv, env, inputs) in cmds.items():
            values = []
            for _ in range(execs):
                spawn([gnu_time, "-f", "%M", "-o", out] + argv, env, inputs)
                with open(out) as f:
                    values.append(int(f.read().split()[-1]) / 1024)
            self.record(name, statistics.median(values))
