"""The package's shape, read from its source with `ast` (every import, at module level or inside a function):
no import cycle; the engine's core never imports the layers above it (files, the store, the facade, the command
line); the store never imports the facade or the front-ends; no private name crosses modules; and no module grows
past ~500 lines without saying why in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "optalloc"
# The engine's core: inputs, models, rules, post-processing. It computes; it never reads or writes files or stores.
CORE = ("optalloc.baseline", "optalloc.clearing", "optalloc.settlement", "optalloc.forecast", "optalloc.instance", "optalloc.schemas",
        "optalloc.units", "optalloc.tables", "optalloc.validate", "optalloc.checks", "optalloc.history", "optalloc.rules",
        "optalloc.placement", "optalloc.solver", "optalloc.errors", "optalloc.specs", "optalloc.progress", "optalloc.failpoints",
        "optalloc.csvtext", "optalloc.generate", "optalloc.arguments")
APPLICATIONS = ("optalloc.forecast.loop",)  # in the forecast package, but runs the whole market period after period
STORE = ("optalloc.store",)
ABOVE_THE_STORE = ("optalloc.scenario", "optalloc.period", "optalloc.cli", "optalloc.cli_args", "optalloc.batch", "optalloc.report",
                   "optalloc.simulate", "optalloc.executors")
LONGEST = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of module `name`, resolved to our modules."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full, []) if full in MODULES else (target, [alias.name]))
        elif isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
    resolved = []
    for target, names in out:
        while target and target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != name:
            resolved.append((target, names))
    return resolved


GRAPH = {name: {t for t, _ in _imports(name)} for name in MODULES}


def _within(name: str, groups: tuple[str, ...]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in groups)


def test_no_module_imports_itself_around_a_cycle():
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_core_never_imports_files_the_store_the_facade_or_the_command_line():
    crossings = [(m, t) for m in MODULES if _within(m, CORE) and not _within(m, APPLICATIONS)
                 for t in GRAPH[m] if not _within(t, CORE) and t != "optalloc"]
    assert crossings == []


def test_the_store_never_imports_the_facade_or_the_front_ends():
    crossings = [(m, t) for m in MODULES if _within(m, STORE) for t in GRAPH[m] if _within(t, ABOVE_THE_STORE)]
    assert crossings == []


def test_no_private_name_is_imported_from_another_module():
    private = [(m, t, n) for m in MODULES for t, names in _imports(m) for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_no_module_is_longer_than_one_person_reads_at_once_without_saying_why():
    long = []
    for name, path in MODULES.items():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > LONGEST and "long because" not in doc.lower():
            long.append((name, lines))
    assert long == []


def test_the_rules_above_are_about_modules_that_exist():
    for group in (*CORE, *STORE, *ABOVE_THE_STORE, *APPLICATIONS):
        assert any(_within(m, (group,)) for m in MODULES), group
    assert len(MODULES) > 40 and sum(len(v) for v in GRAPH.values()) > 100  # the graph was read


LOADS = """
import sys
from optalloc.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("pandas", "numpy", "pyomo", "highspy", "pyarrow", "alembic", "distributed", "lightgbm", "matplotlib")
print("LOADED:" + " ".join(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_commands_that_do_no_engine_work_load_none_of_it(tmp_path, real_process):
    """`--help`, `--version`, every command's `--help`, `status` and `period hold|release` answer at once
    (benchmarks/startup.py measures it): they import none of pandas, numpy, Pyomo, HiGHS, Arrow, Alembic, Dask,
    LightGBM or matplotlib."""
    import sys

    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert real_process.run("ingest", str(ROOT / "instances" / "worked_example.json"), "--db", db, "-q").returncode == 0
    for args in (["--help"], ["solve", "--help"], ["batch", "--help"], ["status", "--db", db], ["period", "hold", "2026Q4", "--db", db, "-q"],
                 ["period", "release", "2026Q4", "--db", db, "-q"]):
        done = real_process.run(argv=[sys.executable, "-c", LOADS, *args])
        assert done.returncode == 0 and done.stdout.rsplit("LOADED:", 1)[1].strip() == "", (args, done.stdout[-300:], done.stderr)
