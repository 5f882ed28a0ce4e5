"""Programs import downward only: the import graph of qmailpy against docs/architecture.md's layers.

Every import is read from the source (ast), those inside functions too (a lazy
import is still a dependency). A package may import its own modules and the
packages of lower layers, nothing beside or above it; no module may reach
itself through imports (a cycle), inside a package or across packages. A new
package or top-level module must be given a layer here and in the picture in
docs/architecture.md.
"""
import ast
import os

from conftest import ROOT

# Top first. Each name is a package of qmailpy (qmailpy/NAME/) or a module (qmailpy/NAME.py).
LAYERS = (
    ("tools", ("cli",)),
    ("installer and generators", ("install", "docgen")),
    ("programs that run other programs' code", ("inject", "tcpserver")),
    ("programs", ("smtpd", "send", "spawn", "clean", "pop3", "queued", "usersd")),
    ("programs run by programs", ("local", "remote")),
    ("the queue", ("queue",)),
    ("decisions", ("policy", "filters")),
    ("shared data", ("users", "dkim")),
    ("addresses", ("addr",)),
    ("SRS", ("srs",)),
    ("codecs and configuration", ("ctl", "proto", "dns", "maildirpp")),
    ("program output", ("output",)),
    ("foundation", ("paths", "exitcodes", "errstr", "clock", "fileio", "forkexec", "lazyload", "log", "privs", "progstart",
                    "scan", "sgetopt", "unixsock")),
)
LAYER = {name: depth for depth, (_, names) in enumerate(LAYERS) for name in names}
PACKAGE = os.path.join(ROOT, "qmailpy")
# The session core is pure (docs/architecture.md, "Sans-IO core"): it never imports its drivers.
SESSION_CORE = ("qmailpy.smtpd.session", "qmailpy.smtpd.envelope", "qmailpy.smtpd.message", "qmailpy.smtpd.answers",
                "qmailpy.smtpd.actions", "qmailpy.smtpd.auth", "qmailpy.smtpd.received")
DRIVERS = ("qmailpy.smtpd.driver", "qmailpy.smtpd.main", "qmailpy.smtpd.queueclient",
           "qmailpy.smtpd.checkpassword", "qmailpy.cli")


def modules():
    """{module name: path} of every module of qmailpy."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for fn in files:
            if fn.endswith(".py"):
                path = os.path.join(folder, fn)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(name, path, known):
    """The qmailpy modules `name` imports (each `from X import Y` as X.Y when that is a module)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    base = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(base[:len(base) - node.level + 1] + ([module] if module else []))
            targets = [module] + ["%s.%s" % (module, a.name) for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("qmailpy.") and t != name:
                found.add(t)
    return found


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def part(module):
    """The layered name of a module: qmailpy.smtpd.session -> smtpd, qmailpy.paths -> paths."""
    return module.split(".")[1]


def test_every_package_has_a_layer():
    names = {part(m) for m in modules() if m != "qmailpy"}
    assert names - set(LAYER) == set(), "give these a layer in LAYERS and docs/architecture.md"
    assert set(LAYER) - names == set(), "no longer in qmailpy: take them out of LAYERS"


def test_imports_go_downward_only():
    upward = []
    for module, targets in sorted(graph().items()):
        if module == "qmailpy":
            continue
        for target in sorted(targets):
            a, b = part(module), part(target)
            if a != b and LAYER[b] <= LAYER[a]:
                upward.append("%s -> %s (%s is %s)" % (module, target, b, "beside it" if LAYER[a] == LAYER[b]
                                                      else "above it"))
    assert upward == []


def test_no_import_cycles():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):                       # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w.startswith(v + "."):   # a package importing its own modules is not a cycle
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_session_core_never_imports_its_drivers():
    g = graph()
    wrong = sorted("%s -> %s" % (m, t) for m in SESSION_CORE for t in g[m]
                   if any(t == d or t.startswith(d + ".") for d in DRIVERS))
    assert wrong == []


def test_the_picture_in_the_docs_names_every_layer():
    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        text = f.read()
    picture = text[text.index("## Layers"):]
    picture = picture[:picture.index("\n## ", 1)]
    for title, names in LAYERS:
        line = [l for l in picture.splitlines() if l.strip().startswith(title + ":")]
        assert line, "docs/architecture.md's layer picture has no line for %r" % title
        assert sorted(line[0].split(":", 1)[1].split()) == sorted(names), title
