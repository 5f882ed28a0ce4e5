"""make mutate: mutmut over the modules where one wrong comparison loses or leaks mail.

usage: python3 tools/mutate.py [--keep] [--jobs N] [MODULE ...]

The modules and the test files come from setup.cfg's [mutmut] section (only_mutate,
pytest_add_cli_args_test_selection). mutmut runs the selected tests once to learn
which tests call which function, then runs each mutant against the tests that call
its function only. MODULE (a part of a dotted name, e.g. `relay` or `send.bounce`)
narrows the run while developing. Every mutant that no test kills must be listed in
tests/accepted-mutants.txt with one line of why; anything else surviving is printed
with its diff and the run fails. docs/development.md says how to read the output.
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


def venv_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def mutated_modules():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    paths = [p for p in cfg["mutmut"]["only_mutate"].split() if p]
    return [p[:-3].replace("/", ".") for p in paths]


def prepare():
    """mutants/ as mutmut will fill it, plus what the tests need of a checkout: the venv
    (tools/install.py takes ROOT/.venv's python) and bin/ launchers that run the mutated
    package, so that a mutant is live in the programs the tests start too."""
    shutil.rmtree(MUTANTS, ignore_errors=True)
    os.makedirs(MUTANTS)
    os.symlink(os.path.join("..", ".venv"), os.path.join(MUTANTS, ".venv"))
    shutil.copy2(os.path.join(ROOT, "setup.cfg"), MUTANTS)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mklaunchers.py"), MUTANTS,
                    sys.executable, os.path.join(MUTANTS, "bin")], check=True)


def run_mutmut(globs, jobs, log):
    with open(log, "w") as out:
        return subprocess.run(["nice", "-n", "19", venv_bin("mutmut"), "run", "--max-children", str(jobs), *globs],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode


def mutmut_out(*args):
    return subprocess.run([venv_bin("mutmut"), *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def results():
    """{mutant name: status} for every mutant generated."""
    found = {}
    for line in mutmut_out("results", "--all", "true").splitlines():
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


def change_of(mutant):
    """(removed lines, added lines) of the mutant's diff, stripped: independent of line numbers."""
    removed, added = [], []
    for line in mutmut_out("show", mutant).splitlines():
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


def main(argv):
    ap = argparse.ArgumentParser(prog="make mutate")
    ap.add_argument("modules", nargs="*", help="parts of dotted module names to run (default: all listed)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="reuse mutants/ from the last run (mutmut's cache)")
    args = ap.parse_args(argv)

    modules = mutated_modules()
    if args.modules:
        modules = [m for m in modules if any(part in m for part in args.modules)]
        if not modules:
            raise SystemExit("no module of [mutmut] only_mutate matches %s" % " ".join(args.modules))
    accepted = load_accepted()
    started = time.monotonic()
    if not args.keep or not os.path.isdir(MUTANTS):
        prepare()
    log = os.path.join(MUTANTS, "mutmut.log")
    globs = [m + ".*" for m in modules] if args.modules else []
    rc = run_mutmut(globs, args.jobs, log)
    if rc != 0:
        sys.stdout.write(open(log, errors="replace").read()[-4000:])
        raise SystemExit("mutmut failed (exit %d): %s" % (rc, log))
    elapsed = time.monotonic() - started

    found = {m: s for m, s in results().items() if any(m.startswith(mod + ".") for mod in modules)}
    wanted = {key(e["function"], (e["removed"], e["added"])): e for e in accepted
              if any(e["function"].startswith(mod + ".") for mod in modules)}
    caught, used, surviving = 0, set(), []
    for mutant, status in sorted(found.items()):
        if status in CAUGHT:
            caught += 1
            continue
        k = key(function_of(mutant), change_of(mutant))
        if k in wanted:
            used.add(k)
        else:
            surviving.append((mutant, status))
    for mutant, status in surviving:
        print("\n# %s: %s (%s)" % (mutant, status, function_of(mutant)))
        print(mutmut_out("show", mutant).split("\n", 1)[1].rstrip())
    stale = [e for k, e in wanted.items() if k not in used]
    for e in stale:
        print("\n%s:%d: accepted mutant of %s is no longer generated or now killed: remove it"
              % (os.path.relpath(ACCEPTED, ROOT), e["line"], e["function"]))
    print("\nmake mutate: %d modules, %d mutants generated, %d killed, %d accepted survivors, %d surviving, "
          "%d stale entries; %.0f s" % (len(modules), len(found), caught, len(used), len(surviving), len(stale),
                                         elapsed))
    return 1 if surviving or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
