"""The house keeps its shape: which module may import which, read from the source with ``ast``.

``explorer/`` has a core (the flat modules and ``criteria/``: the slider path) and stage
packages (``load/``, ``look/``, ``decide/``, ``finetune/``, ``export/``). Arrows point from
the stages to the core, never back; the UI sits on top. ``explorer/cli.py`` is an entry point
like ``app.py``: it sits in the core's folder but may call every stage. ``explorer/lessons/``
is a consumer like the CLI: it calls several stages (the lessons' experiments) and only the
UI calls it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("load", "look", "decide", "finetune", "export")
ENTRY_POINTS = {"explorer.cli"}
CONSUMERS = ("lessons",)  # packages that call stages, like the CLI; only the UI imports them
MAX_FLAT_MODULES = 16


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ENGINE = {module_name(p): p for p in sorted((ROOT / "explorer").rglob("*.py"))}
OTHERS = {str(p.relative_to(ROOT)): p for p in
          [ROOT / "app.py", *(ROOT / "app_pages").glob("*.py"), *(ROOT / "tests").rglob("*.py"),
           *(ROOT / "bench").glob("*.py")]}


def imports(path: Path, name: str) -> Iterator[tuple[str, str]]:
    """(module imported, name taken from it or "") for every import in the file, at any depth
    (inside functions and ``TYPE_CHECKING`` blocks too: a cycle there still ties two modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                if f"{base}.{alias.name}" in ENGINE:  # `from explorer.decide import suggest`
                    yield f"{base}.{alias.name}", ""
                else:
                    yield base, alias.name


def engine_edges(name: str) -> set[str]:
    """The engine modules ``name`` imports (a module's package ``__init__`` not counted)."""
    return {m for m, _ in imports(ENGINE[name], name) if m in ENGINE and m != name
            and m != "explorer" and not name.startswith(m + ".")}


def part_of(module: str) -> str:
    """"core", "ui", "entry" or the stage a module belongs to."""
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in (*STAGES, "ui", *CONSUMERS):
        return parts[1]
    return "core"


def test_the_engine_folder_holds_few_modules_and_the_stage_packages():
    flat = [p.name for p in (ROOT / "explorer").glob("*.py")]
    assert len(flat) <= MAX_FLAT_MODULES, sorted(flat)
    for package in (*STAGES, "criteria", "ui", "ui/charts", "ui/views"):
        assert (ROOT / "explorer" / package / "__init__.py").is_file(), package


def test_the_core_imports_no_stage_and_a_stage_only_the_core_and_load():
    wrong = []
    for name in ENGINE:
        mine = part_of(name)
        for target in engine_edges(name):
            theirs = part_of(target)
            allowed = {
                "core": {"core"},
                "load": {"core", "load"},
                "ui": {"core", "ui", *STAGES, *CONSUMERS},
                "entry": {"core", *STAGES},
                **{c: {"core", *STAGES, c} for c in CONSUMERS},
            }.get(mine, {"core", "load", mine})  # a stage: the core, load/ and itself
            if theirs not in allowed:
                wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_only_the_ui_and_the_pages_import_streamlit():
    wrong = [name for name, path in ENGINE.items() if part_of(name) != "ui"
             and any(m.split(".")[0] == "streamlit" for m, _ in imports(path, name))]
    charts = [name for name, path in ENGINE.items() if name.startswith("explorer.ui.charts")
              and any(m.split(".")[0] == "streamlit" for m, _ in imports(path, name))]
    assert not wrong and not charts, (wrong, charts)  # charts are plotly only


def test_no_import_cycle_among_engine_modules():
    """Depth-first search for a back edge; the cycle found is named in the message."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for target in sorted(engine_edges(name)):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[name] = "done"
        path.pop()
        return None

    for name in ENGINE:
        if name not in state:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("where", ["engine", "app, pages, tests and benchmarks"])
def test_no_private_name_is_imported_from_another_module(where):
    files = ENGINE if where == "engine" else {name: path for name, path in OTHERS.items()}
    wrong = [f"{name} imports {target}.{taken}" for name, path in files.items()
             for target, taken in imports(path, name if where == "engine" else "")
             if target.startswith("explorer") and taken.startswith("_")]
    assert not wrong, "\n".join(wrong)


XREF = re.compile(r":(?:mod|func|class|meth|data|attr|exc):`~?(explorer(?:\.\w+)+)`")


def resolves(dotted: str) -> bool:
    """The module, or a name (a dataclass field too) inside it, that ``dotted`` names exists."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            fields = ({f.name for f in dataclasses.fields(obj)}
                      if dataclasses.is_dataclass(obj) else set())
            if not hasattr(obj, attr) and attr not in fields:
                return False
            obj = getattr(obj, attr, None)
        return True
    return False


def test_docstring_cross_references_name_what_exists():
    """After a move, a :mod: or :func: reference to an old path would send a reader nowhere."""
    sources = [*ENGINE.values(), ROOT / "app.py", *(ROOT / "app_pages").glob("*.py")]
    stale = [f"{path.relative_to(ROOT)}: {ref}" for path in sources
             for ref in XREF.findall(path.read_text()) if not resolves(ref)]
    assert not stale, "\n".join(stale)
    assert not resolves("explorer.io.load_model") and resolves("explorer.metrics.Metrics.loss")


def test_the_checks_see_what_they_check():
    """The rules above would pass on an empty or misread tree; this one would not."""
    assert {"explorer.plan", "explorer.load.model_file", "explorer.ui.state"} <= set(ENGINE)
    assert "explorer.plan" in engine_edges("explorer.decide.sensitivity")
    assert "explorer.load.guard" in engine_edges("explorer.load.model_file")
    assert part_of("explorer.criteria.base") == "core"
    assert part_of("explorer.ui.charts.prune") == "ui"
    assert part_of("explorer.lessons.runs") == "lessons"
    assert "explorer.decide.sensitivity" in engine_edges("explorer.lessons.runs")
    assert any(m == "streamlit" for m, _ in imports(ENGINE["explorer.ui.state"], "x"))
