"""Measure which lines and branches of qmailpy the whole test suite runs.

Most of qmailpy runs outside pytest's process: programs exec'd by tests, by
tcpserver, by qmail-send; children forked by qmail-tcpserver, qmail-lspawn,
qmail-rspawn and qmail-queued; programs that drop to other users. So the bin/
launchers are rewritten to start coverage.py themselves (tools/mklaunchers.py
with QMAILPY_COVERAGE_RC), the data files go to a directory every user may
write, forked children save through coverage's ``patch = _exit``, and pytest
and its xdist workers run under ``coverage run`` with ``patch = subprocess``.
The normal launchers are written back at the end, whatever happened.

Tests that cannot pass under measurement are deselected (MEASURED_AWAY, each
with its reason), so any other failure is a real one; the report is made all
the same. What it prints is a measurement for reading, not a gate.

usage: python tools/coverage.py [OUTDIR] [-- PYTEST-ARGS...]
       OUTDIR default coverage/ in the checkout: report.txt, html/, data
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RC = """\
[run]
branch = true
parallel = true
source = {root}/qmailpy
data_file = {data}/.coverage
patch = _exit, subprocess
disable_warnings = no-data-collected, module-not-measured, module-not-imported, couldnt-parse

[report]
skip_empty = true
precision = 1
exclude_also =
    if __name__ == .__main__.:

[html]
directory = {out}/html
"""


# test id -> why it fails when coverage.py runs in every process
MEASURED_AWAY = {
    "tests/test_queue.py::test_kill_at_random_moments":
        "counts kills that land late in an insertion; coverage's start-up moves them early",
    "tests/test_queue.py::test_no_filter_module_for_unfiltered_mail":
        "lists the modules qmail-queue imports; coverage.py imports socket",
    "tests/test_forkexec.py::test_starting_a_program_loads_no_module_with_an_at_fork_handler":
        "lists the modules with at-fork handlers; coverage.py loads random and threading",
    "tests/test_local_cli.py::test_a_program_gets_the_callers_environment_and_qmails_variables_only":
        "compares the environment a program gets; coverage.py adds COVERAGE_PROCESS_CONFIG",
    "tests/test_durability.py::test_qmail_send_double_bounce_and_triple_bounce_drop_durable":
        "failed in both measured runs and in none without: strace put the bounce's qmail-queue "
        "exit after qmail-send's unlink of bounce/ (cause not yet found)",
}


def launchers(env):
    """Write bin/ for the environment given: coverage launchers or the normal ones."""
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mklaunchers.py"), ROOT,
                    sys.executable, os.path.join(ROOT, "bin")], check=True, env=env)


def main(argv):
    pytest_args = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1:]
    out = os.path.abspath(argv[0] if argv else os.path.join(ROOT, "coverage"))
    os.makedirs(out, exist_ok=True)
    data = tempfile.mkdtemp(prefix="qmailpy-coverage-")
    os.chmod(data, 0o1777)          # programs that became qmaild, qmailr, nobody save here too
    rc = os.path.join(data, "coveragerc")
    with open(rc, "w") as f:
        f.write(RC.format(root=ROOT, data=data, out=out))
    os.chmod(rc, 0o644)
    env = dict(os.environ, QMAILPY_COVERAGE_RC=rc)
    cov = [sys.executable, "-m", "coverage"]
    launchers(env)
    try:
        tests = subprocess.run(cov + ["run", "--rcfile", rc, "-m", "pytest", "-q", "-p",
                                      "no:cacheprovider", "-n", os.environ.get("TESTJOBS", "2"),
                                      "--dist", "loadfile"]
                               + ["--deselect=" + t for t in MEASURED_AWAY] + (pytest_args or ["tests"]),
                               cwd=ROOT, env=env)
    finally:
        plain = dict(os.environ)
        plain.pop("QMAILPY_COVERAGE_RC", None)
        launchers(plain)
    subprocess.run(cov + ["combine", "--rcfile", rc, "-q"], cwd=ROOT, check=True)
    with open(os.path.join(out, "report.txt"), "w") as f:
        subprocess.run(cov + ["report", "--rcfile", rc, "-m"], cwd=ROOT, stdout=f, check=True)
    subprocess.run(cov + ["html", "--rcfile", rc, "-q"], cwd=ROOT, check=True)
    shutil.copyfile(os.path.join(data, ".coverage"), os.path.join(out, ".coverage"))
    shutil.rmtree(data, ignore_errors=True)
    with open(os.path.join(out, "report.txt")) as f:
        total = [line for line in f if line.startswith("TOTAL")]
    print("coverage: %s (pytest exit %d); %s/report.txt, %s/html/index.html"
          % (" ".join(total[0].split()[1:]) if total else "?", tests.returncode, out, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
