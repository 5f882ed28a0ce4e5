"""make mutate: mutmut over the modules where one wrong comparison loses or leaks mail.

usage: python3 tools/mutate.py [--keep | --compare-only | --retry-survivors] [--jobs N] [MODULE ...]

MODULES below names each mutated module and the test files that cover it in-process
(mutmut can only see a test call a function in its own process: a program a test
starts does not count). Each module gets a run of its own in mutants/<module>/, whose
setup.cfg is the checkout's with [mutmut] only_mutate and the test selection set for
that module: mutmut runs those tests once to learn which test calls which function,
then runs each mutant against the tests that call its function only. MODULE (the end
of a dotted name, e.g. `relay` or `policy.spf`, or a part of names, e.g. `filters`)
narrows the run. Every mutant that no test kills must be listed in
tests/accepted-mutants.txt with one line of why; anything else surviving (`no tests`
included) is printed with its diff and the run fails.
docs/development.md says how to read the output.
"""
import argparse
import configparser
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTANTS = os.path.join(ROOT, "mutants")
ACCEPTED = os.path.join(ROOT, "tests", "accepted-mutants.txt")
# mutmut's words for a mutant's fate: these count as caught by a test.
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}

# The mutated modules and the in-process tests that cover each: the relay decision, the
# DATA codec, qmail-queue's enqueue and exit codes, bounce text, chkuser, quota, SPF
# levels, the filters' verdicts, the retry schedule, qmail-remote's report codes, SRS
# addresses, qmail-local's .qmail files, the environment tcpserver's rules give, the
# Received line, MAIL/RCPT address parsing.
MODULES = {
    "qmailpy/policy/relay.py": ["tests/test_policy_relay.py", "tests/test_policy.py", "tests/test_session.py",
                                "tests/test_policytest.py", "tests/test_policy_dns.py"],
    "qmailpy/ctl/rcpthosts.py": ["tests/test_policy_relay.py", "tests/test_srs_rewrite.py"],
    "qmailpy/proto/dotdata.py": ["tests/test_dotdata.py", "tests/test_session.py"],
    "qmailpy/queue/enqueue.py": ["tests/test_queue_errors.py", "tests/test_queue.py", "tests/test_queued.py"],
    "qmailpy/queue/entry.py": ["tests/test_queue_errors.py", "tests/test_queue.py", "tests/test_queued.py"],
    "qmailpy/exitcodes.py": ["tests/test_queue_codec.py", "tests/test_filters_units.py", "tests/test_queue.py"],
    "qmailpy/send/bounce.py": ["tests/test_send_bouncetext.py", "tests/test_send_bouncestream.py"],
    "qmailpy/users/chkuser.py": ["tests/test_users_chkuser.py", "tests/test_users_down.py",
                                 "tests/test_policytest.py"],
    "qmailpy/local/quota.py": ["tests/test_local_quota.py", "tests/test_local_maildir.py"],
    # the OpenSPF suite (tests/test_spf_suite.py, ~50 s) would run in full for every surviving
    # mutant: these decisions have in-process tests of their own
    "qmailpy/policy/spf.py": ["tests/test_policy_spf.py", "tests/test_policy_spf_evaluate.py"],
    "qmailpy/policy/spfmacro.py": ["tests/test_policy_spf.py"],
    "qmailpy/policy/spfresult.py": ["tests/test_policy_spf.py"],
    "qmailpy/filters/clamd.py": ["tests/test_filters_clamd_wire.py", "tests/test_filters_units.py"],
    "qmailpy/filters/spamd.py": ["tests/test_filters_spamd_wire.py", "tests/test_filters_units.py"],
    "qmailpy/filters/scan.py": ["tests/test_filters_scan.py"],
    "qmailpy/clock.py": ["tests/test_send_codecs.py", "tests/test_clock.py"],
    "qmailpy/remote/report.py": ["tests/test_remote_units.py"],
    "qmailpy/srs/codec.py": ["tests/test_srs_codec.py", "tests/test_srs_rewrite.py"],
    "qmailpy/local/dotqmail.py": ["tests/test_local_dotqmail.py", "tests/test_local_forward.py",
                                  "tests/test_local_maildir.py", "tests/test_local_vdelivermail.py"],
    # tests/test_tcpserver.py's other tests drive the programs (no in-process calls): only its unit tests
    "qmailpy/tcpserver/tcpenv.py": ["tests/test_tcpserver_env.py", "tests/test_tcpserver.py::test_tcp6_changes_order",
                                    "tests/test_tcpserver.py::test_pathexec_order",
                                    "tests/test_tcpserver.py::test_pathexec_with_its_index_is_pathexec"],
    "qmailpy/smtpd/received.py": ["tests/test_session.py", "tests/test_adversarial.py"],
    "qmailpy/proto/grammar.py": ["tests/test_grammar.py", "tests/test_session.py"],
}


def selects(part, module, modules):
    """MODULE on the command line: the modules whose name ends with it (`policy.spf` is spf.py
    only), else those whose name contains it (`policy`: relay and the three SPF modules)."""
    if any(dotted(p).endswith(part) for p in modules):
        return module.endswith(part)
    return part in module


def venv_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def dotted(path):
    return path[:-3].replace("/", ".")


def workdir(module):
    return os.path.join(MUTANTS, module)


def prepare(path):
    """mutants/<module>/: the checkout's sources and tests (links), a setup.cfg naming this
    module and its tests; and in its mutants/ (as mutmut will fill it) what the tests need
    of a checkout: the venv (tools/install.py takes ROOT/.venv's python) and bin/ launchers
    that run the mutated package, so that a mutant is live in the programs the tests start."""
    work = workdir(dotted(path))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "mutants"))
    for name in ("qmailpy", "tests", "tools", "control", "docs"):
        os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    cfg["mutmut"]["only_mutate"] = "\n" + path
    cfg["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(MODULES[path])
    with open(os.path.join(work, "setup.cfg"), "w") as f:
        cfg.write(f)
    inner = os.path.join(work, "mutants")
    os.symlink(os.path.join(ROOT, ".venv"), os.path.join(inner, ".venv"))
    shutil.copy2(os.path.join(work, "setup.cfg"), inner)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mklaunchers.py"), inner,
                    sys.executable, os.path.join(inner, "bin")], check=True)


def run_mutmut(module, jobs, log, names=()):
    with open(log, "a" if names else "w") as out:
        return subprocess.run(["nice", "-n", "19", venv_bin("mutmut"), "run", "--max-children", str(jobs), *names],
                              cwd=workdir(module), stdout=out, stderr=subprocess.STDOUT).returncode


def mutmut_out(module, *args):
    return subprocess.run([venv_bin("mutmut"), *args], cwd=workdir(module), capture_output=True, text=True,
                          check=True).stdout


def results(module):
    """{mutant name: status} for every mutant generated."""
    found = {}
    for line in mutmut_out(module, "results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("qmailpy."):
            found[name] = status
    return found


def function_of(mutant):
    """qmailpy.x.y.x_func__mutmut_3 -> qmailpy.x.y.func; xǁClassǁmethod -> Class.method."""
    module, _, mangled = mutant.rpartition(".")
    mangled = mangled.rpartition("__mutmut_")[0]
    if mangled.startswith("x\u01c1"):
        name = ".".join(mangled[2:].split("\u01c1"))
    else:
        name = mangled[2:]
    return module + "." + name


def change_of(module, mutant):
    """(removed lines, added lines) of the mutant's diff, stripped: independent of line numbers."""
    removed, added = [], []
    for line in mutmut_out(module, "show", mutant).splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return tuple(removed), tuple(added)


def load_accepted(path=ACCEPTED):
    """Blocks of: the function's dotted name, `- original` and `+ mutant` lines, `why: ...`."""
    entries, block = [], None
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("- ") or line == "-":
                block["removed"].append(line[2:].strip())
            elif line.startswith("+ ") or line == "+":
                block["added"].append(line[2:].strip())
            elif line.startswith("why:"):
                block["why"] = line[4:].strip()
            else:
                block = {"function": line.strip(), "removed": [], "added": [], "why": "", "line": n}
                entries.append(block)
    for e in entries:
        if not e["why"] or not (e["removed"] or e["added"]):
            raise SystemExit("%s:%d: an entry needs - / + lines and a why: line" % (path, e["line"]))
    return entries


def key(function, change):
    return function, tuple(change[0]), tuple(change[1])


def run_module(path, jobs, keep, accepted, compare_only=False, retry=False):
    """One module's run: (generated, caught, accepted used, [(mutant, status)] surviving, [stale entries])."""
    module = dotted(path)
    started = time.monotonic()
    if compare_only or retry:
        if not os.path.isdir(os.path.join(workdir(module), "mutants", "qmailpy")):
            raise SystemExit("%s has no last run in %s" % (module, workdir(module)))
        rc = 0
        if retry:
            names = sorted(m for m, status in results(module).items() if status not in CAUGHT)
            if names:
                rc = run_mutmut(module, jobs, os.path.join(workdir(module), "mutmut.log"), names)
    else:
        if not keep or not os.path.isdir(os.path.join(workdir(module), "mutants", "qmailpy")):
            prepare(path)
        rc = run_mutmut(module, jobs, os.path.join(workdir(module), "mutmut.log"))
    log = os.path.join(workdir(module), "mutmut.log")
    if rc != 0:
        sys.stdout.write(open(log, errors="replace").read()[-4000:])
        raise SystemExit("mutmut failed on %s (exit %d): %s" % (module, rc, log))
    found = {m: s for m, s in results(module).items() if m.startswith(module + ".")}
    wanted = {key(e["function"], (e["removed"], e["added"])): e for e in accepted
              if e["function"].startswith(module + ".")}
    caught, used, surviving = 0, set(), []
    for mutant, status in sorted(found.items()):
        if status in CAUGHT:
            caught += 1
            continue
        k = key(function_of(mutant), change_of(module, mutant))
        if k in wanted:
            used.add(k)
        else:
            surviving.append((mutant, status))
    for mutant, status in surviving:
        print("\n# %s: %s (%s)" % (mutant, status, function_of(mutant)))
        print(mutmut_out(module, "show", mutant).split("\n", 1)[1].rstrip())
    stale = [e for k, e in wanted.items() if k not in used]
    for e in stale:
        print("\n%s:%d: accepted mutant of %s is no longer generated or now killed: remove it"
              % (os.path.relpath(ACCEPTED, ROOT), e["line"], e["function"]))
    print("%s: %d mutants, %d killed, %d accepted, %d surviving, %d stale; %.0f s"
          % (module, len(found), caught, len(used), len(surviving), len(stale), time.monotonic() - started),
          flush=True)
    return len(found), caught, len(used), surviving, stale


def main(argv):
    ap = argparse.ArgumentParser(prog="make mutate")
    ap.add_argument("modules", nargs="*", help="parts of dotted module names to run (default: all listed)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "1")),
                    help="mutants tested at once (default: $MUTATE_JOBS or 1)")
    ap.add_argument("--keep", action="store_true", help="reuse mutants/<module>/ from the last run (mutmut's cache)")
    ap.add_argument("--compare-only", action="store_true",
                    help="no mutmut run: compare the last run's results with tests/accepted-mutants.txt")
    ap.add_argument("--retry-survivors", action="store_true",
                    help="run the last run's surviving mutants again, against the test files as they are now "
                         "(the module's list in MODULES must be the one of that run)")
    args = ap.parse_args(argv)

    paths = list(MODULES)
    if args.modules:
        paths = [p for p in paths if any(selects(part, dotted(p), MODULES) for part in args.modules)]
        if not paths:
            raise SystemExit("no module of tools/mutate.py's MODULES matches %s" % " ".join(args.modules))
    accepted = load_accepted()
    known = tuple(dotted(p) + "." for p in MODULES)
    strays = [e for e in accepted if not e["function"].startswith(known)]
    for e in strays:
        print("%s:%d: %s is in no module of MODULES: remove it"
              % (os.path.relpath(ACCEPTED, ROOT), e["line"], e["function"]))
    started = time.monotonic()
    generated = caught = used = surviving = stale = 0
    for path in paths:
        g, c, u, s, st = run_module(path, args.jobs, args.keep, accepted, args.compare_only, args.retry_survivors)
        generated, caught, used = generated + g, caught + c, used + u
        surviving, stale = surviving + len(s), stale + len(st)
    print("\nmake mutate: %d modules, %d mutants generated, %d killed, %d accepted survivors, %d surviving, "
          "%d stale entries; %.0f s" % (len(paths), generated, caught, used, surviving, stale + len(strays),
                                         time.monotonic() - started))
    return 1 if surviving or stale or strays else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
