"""docs/ says what each program reads and how it exits, and its links lead somewhere.

A static scan of the AST (no program is run): for each console script of setup.cfg, the
modules of qmailpy it imports (transitively, lazy imports included), the environment
variables they read with a literal name and the exit codes of the program's own modules
must be on docs/<program>.md (or on the page of a program it links to and runs the code of);
each variable the page's environment section lists, and each control its generated table
lists, must be read. tests/test_control_readers.py checks the registry's readers by running
the code. Every relative link of docs/ and README.md leads to a file and heading.
"""
import ast
import configparser
import functools
import os
import re

from qmailpy.ctl import registry as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENVIRON_NAMES = {"environ", "environb", "env", "base_env"}
# The exceptions, each with its reason: names no page need give, names a module imported
# reads but the program never does, and names a page lists that the scan cannot see read.
IGNORED = {"LC_CTYPE"}     # progstart puts the caller's back for the programs it runs; decides nothing
NOT_READ = {
    "maildirmake": {"QMAILHOME"},               # qmailtool.on_home() reads it; maildirmake does not use it
}
LISTED_ANYWAY = {
    "condredirect": {"SENDER"},                 # resend() reads it by its sender_variable parameter
    "forward": {"NEWSENDER"},                   # the same
    "qmail-remote": {"SSL_CERT_FILE", "SSL_CERT_DIR"},   # OpenSSL reads them
    "qmail-send": {"QMAILLOCAL", "QMAILREMOTE"},         # the page says: passed on to the spawns
    "qmail-showctl": {"DATABYTES"},             # the page says it is not read
}


def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        out[name.strip()] = target.strip().partition(":")[0]
    return out


def module_file(mod):
    base = os.path.join(ROOT, *mod.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def tree(mod):
    with open(module_file(mod)) as f:
        return ast.parse(f.read())


@functools.lru_cache(maxsize=None)
def imported(mod):
    """The qmailpy modules `mod` imports anywhere in its body."""
    pkg = mod if module_file(mod).endswith("__init__.py") else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree(mod)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(base + "." + a.name for a in node.names)
    return frozenset(m for m in out if m.startswith("qmailpy") and module_file(m))


@functools.lru_cache(maxsize=None)
def closure(mod):
    seen, todo = set(), [mod]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))   # packages' __init__
        todo.extend(imported(m))
    return frozenset(seen)


def constants(mod):
    """Module-level NAME = "str" or a tuple/list/set of strs, and names imported from qmailpy."""
    out = {}
    for node in tree(mod).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            got = strings(node.value)
            if got is not None:
                out[node.targets[0].id] = got
    return out


def strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        v = node.value
        return {v.decode() if isinstance(v, bytes) else v}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        got = [g for g in (strings(e) for e in node.elts) if g is not None]
        return set().union(*got) if got else None
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("frozenset", "set", "tuple") \
            and len(node.args) == 1:
        return strings(node.args[0])
    return None


def last_name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def is_environ(node):
    return last_name(node) in ENVIRON_NAMES


@functools.lru_cache(maxsize=None)
def env_reads(mod):
    """Environment variable names `mod` reads: environ.get/[]/in, getenv, and calls that pass
    an environ with a literal upper-case name (env_seconds(environ, "X"), program_path(...))."""
    consts = dict(constants(mod))
    for node in tree(mod).body:          # from qmailpy.x import NAME: that module's constant
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qmailpy") \
                and module_file(node.module):
            other = constants(node.module)
            consts.update({a.asname or a.name: other[a.name] for a in node.names if a.name in other})
    loops = {}
    for node in ast.walk(tree(mod)):     # for name in NAMES: the loop variable's values
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
            got = resolve(node.iter, consts, {})
            if got:
                loops.setdefault(node.target.id, set()).update(got)
    out = set()

    def add(key):
        out.update(n for n in resolve(key, consts, loops) or () if ENV_NAME.match(n))
    for node in ast.walk(tree(mod)):
        if isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
            add(node.slice)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)) \
                and is_environ(node.comparators[0]):
            add(node.left)
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "get" and is_environ(f.value) and node.args:
                add(node.args[0])
            elif last_name(f) == "getenv" and node.args:
                add(node.args[0])
            elif node.args and is_environ(node.args[0]):
                for a in node.args[1:]:
                    add(a)
    return frozenset(out)


def resolve(node, consts, loops):
    got = strings(node)
    if got is not None:
        return got
    if isinstance(node, ast.Name):
        return consts.get(node.id) or loops.get(node.id)
    return None


CONTROL_CALLS = {"value", "setting", "path", "control_path"}


@functools.lru_cache(maxsize=None)
def control_reads(mod):
    """Registry controls `mod` names: a string constant that is a control's name, outside
    docstrings and the registry (controls.value("x"), a helper that reads one, a table)."""
    if mod == "qmailpy.ctl.registry":
        return frozenset()
    docs = {id(n.body[0].value) for n in ast.walk(tree(mod))
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)}
    return frozenset(R.BY_NAME[n.value].name for n in ast.walk(tree(mod)) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str) and n.value in R.BY_NAME and id(n) not in docs)


def program_modules():
    return {prog: closure(mod) for prog, mod in console_scripts().items()}


def page(prog):
    with open(os.path.join(DOCS, prog + ".md")) as f:
        return f.read()


def on_page(text, name):
    return re.search(r"(?<![\w/.-])%s(?![\w-])" % re.escape(name), text) is not None


def env_listed(text):
    """Names the page lists as read: the `## Environment` section, or an `Environment:` paragraph."""
    out = set()
    for m in re.finditer(r"^#+ Environment(?! given)[^\n]*\n(.*?)(?=^#+ |\Z)", text, re.M | re.S):
        out.update(re.findall(r"`\$?([A-Z][A-Z0-9_]+)", m.group(1)))
    for m in re.finditer(r"\bEnvironment:(.*?)(?=\.\s|\n\n|\Z)", text, re.S):
        out.update(re.findall(r"`\$?([A-Z][A-Z0-9_]+)", m.group(1)))
    return out


def linked_programs(text, programs):
    """The programs whose pages `text` links to: a name a linked page gives counts as given."""
    return {p for p in re.findall(r"\]\(([\w.-]+)\.md(?:#[\w-]*)?\)", text) if p in programs}


def env_read_by_program():
    out = {}
    for prog, mods in program_modules().items():
        read = set().union(*(env_reads(m) for m in mods))
        read |= {c.env for c in R.CONTROLS if c.env and prog in c.readers}
        out[prog] = read - IGNORED - NOT_READ.get(prog, set())
    return out


def env_mismatches():
    missing, unread = {}, {}
    reads = env_read_by_program()
    for prog, read in sorted(reads.items()):
        text = page(prog)
        linked = linked_programs(text, reads)
        gone = sorted(n for n in read if not on_page(text, n)
                      and not any(n in reads[p] and on_page(page(p), n) for p in linked))
        if gone:
            missing[prog] = gone
        extra = sorted(env_listed(text) - read - LISTED_ANYWAY.get(prog, set()))
        if extra:
            unread[prog] = extra
    return missing, unread


def shown(found):
    """program -> names, one a line, for the assertion message."""
    return "\n".join("%s -> %s" % (prog, ", ".join(map(str, names))) for prog, names in sorted(found.items()))


def test_every_environment_variable_read_is_on_the_page():
    missing = env_mismatches()[0]
    assert not missing, "read but not on docs/<program>.md:\n" + shown(missing)


def test_every_environment_variable_a_page_lists_is_read():
    unread = env_mismatches()[1]
    assert not unread, "listed on docs/<program>.md but not read:\n" + shown(unread)


def controls_not_read():
    """{program: controls the registry says it reads (its page's generated table) that no module
    it imports names}. The other way (each control named is on the page) is not checked: a
    module names every control of all its functions, and a program imports many for one."""
    out = {}
    for prog, mods in sorted(program_modules().items()):
        read = set().union(*(control_reads(m) for m in mods))
        extra = sorted(c.name for c in R.CONTROLS if prog in c.readers and c.name not in read)
        if extra:
            out[prog] = extra
    return out


def test_every_control_a_page_lists_is_read():
    unread = controls_not_read()
    assert not unread, "in the registry's readers but named by none of the program's modules:\n" + shown(unread)



FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def outside_code(text):
    """The lines of `text` outside fenced code blocks, and with inline code removed."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def anchors(path):
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces as -,
    a repeated one numbered -1, -2, ..."""
    with open(path) as f:
        lines = outside_code(f.read())
    seen, out = {}, set()
    for line in lines:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else "%s-%d" % (slug, n))
    return out


def link_problems():
    pages = [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))
    bad = []
    for path in pages:
        with open(path) as f:
            lines = outside_code(f.read())
        for line in lines:
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue                    # http:, https:, mailto:
                file, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
                where = os.path.relpath(path, ROOT)
                if not os.path.exists(dest):
                    bad.append("%s: %s (no such file)" % (where, target))
                elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                    bad.append("%s: %s (no such heading)" % (where, target))
    return bad


def test_relative_links_lead_to_a_file_and_heading():
    bad = link_problems()
    assert not bad, "\n".join(bad)


def own_modules(prog, entry, entries):
    """The program's entry module and the modules of its package it imports that are no other
    program's entry (qmailpy.cli holds many programs: there, the entry module alone)."""
    pkg = entry.rpartition(".")[0]
    others = set(entries.values()) - {entry}
    return {m for m in closure(entry) if m == entry or (m.rpartition(".")[0] == pkg and m not in others
                                                         and pkg != "qmailpy.cli")}


def int_constants(mod):
    """Module-level NAME = int, and those imported by name from qmailpy (qmailpy.exitcodes)."""
    def own(m):
        return {n.targets[0].id: n.value.value for n in tree(m).body if isinstance(n, ast.Assign)
                and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, ast.Constant) and type(n.value.value) is int}
    out = own(mod)
    for node in ast.walk(tree(mod)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qmailpy") \
                and module_file(node.module):
            other = own(node.module)
            out.update({a.asname or a.name: other[a.name] for a in node.names if a.name in other})
    return out


@functools.lru_cache(maxsize=None)
def literal_exits(mod):
    """Codes of sys.exit(N), raise SystemExit(N), os._exit(N): a literal N or a named constant."""
    out, consts = set(), int_constants(mod)
    for node in ast.walk(tree(mod)):
        if isinstance(node, ast.Call) and node.args:
            f, a = node.func, node.args[0]
            name = (last_name(f.value) + "." if isinstance(f, ast.Attribute) and last_name(f.value) else "") \
                + (last_name(f) or "")
            if name not in ("sys.exit", "os._exit", "SystemExit"):
                continue
            if isinstance(a, ast.Constant) and type(a.value) is int:
                out.add(a.value)
            elif isinstance(a, ast.Name) and a.id in consts:
                out.add(consts[a.id])
    return frozenset(out)


def exit_lines(text):
    """The page's lines about exit codes: those naming exit, and the rows of a table with an
    exit column."""
    out, in_table = [], False
    for line in outside_code(text):
        if line.startswith("|"):
            if re.search(r"\bexit", line, re.I) and not in_table:
                in_table = True
            if in_table:
                out.append(line)
            continue
        in_table = False
        if re.search(r"\bexit", line, re.I):
            out.append(line)
    return out


def exit_mismatches():
    entries = console_scripts()
    missing = {}
    for prog, entry in sorted(entries.items()):
        lines = exit_lines(page(prog))
        if not lines:
            continue
        codes = set().union(*(literal_exits(m) for m in own_modules(prog, entry, entries)))
        gone = sorted(c for c in codes if not any(re.search(r"(?<![\w.-])%d(?![\w-])" % c, l) for l in lines))
        if gone:
            missing[prog] = gone
    return missing


def test_every_literal_exit_code_is_on_the_page():
    missing = exit_mismatches()
    assert not missing, "exit codes not on docs/<program>.md:\n" + shown(missing)


def test_the_scan_sees_what_it_checks(tmp_path):
    """The checks above pass vacuously if the scan finds nothing: it finds these."""
    reads = env_read_by_program()
    assert {"QMAILUSER", "QMAILINJECT", "DATABYTES"} <= reads["qmail-inject"] | reads["qmail-smtpd"]
    assert {"DNSCACHEIP", "QMAILREMOTE"} <= reads["qmail-remote"] | reads["qmail-rspawn"]
    assert {"UID", "GID"} <= reads["qmail-tcpserver"]
    assert "smtproutes" in set().union(*(control_reads(m) for m in program_modules()["qmail-remote"]))
    assert literal_exits("qmailpy.tcpserver.worker") == {0, 111, 130}
    page = tmp_path / "p.md"
    page.write_text("# Top\n## `QMAILHOME` (the home)\n```\n# not a heading\n```\n## Top\n")
    assert anchors(str(page)) == {"top", "qmailhome-the-home", "top-1"}
