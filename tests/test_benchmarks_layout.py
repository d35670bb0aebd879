"""benchmarks/ by role: the suites (suites/), the sections that render BENCHMARKS.md (report/)
and the machinery they share (lib/), with one entry script per command beside them. Parsed,
not imported: every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROLES = ("lib", "report", "suites")  # lowest first: each imports only itself and those below


def _modules() -> dict[str, Path]:
    """Every benchmark module by the name it is imported under (benchmarks/ on sys.path)."""
    found = {path.stem: path for path in BENCHMARKS.glob("*.py")}
    for role in ROLES:
        found |= {f"{role}.{path.stem}": path for path in (BENCHMARKS / role).glob("*.py")
                  if path.stem != "__init__"}
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The benchmark modules `path` imports (`from lib import measure` counts as lib.measure)."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named.add(node.module)
            named |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in named if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for child in sorted(graph[name]):
            if state.get(child) == "open":
                return [*path[path.index(child):], child] if child in path else [name, child]
            if child not in state and (found := visit(child, [*path, child])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def test_the_benchmark_modules_import_each_other_without_a_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("role", ROLES[:-1])
def test_a_lower_role_never_imports_a_higher_one(role):
    higher = ROLES[ROLES.index(role) + 1:]
    wrong = sorted(f"{name} imports {target}" for name, targets in _graph().items()
                   if name.startswith(f"{role}.") for target in targets
                   if target.split(".")[0] not in ROLES[:ROLES.index(role) + 1])
    assert not wrong, f"{role}/ may not import {', '.join(higher)} or an entry script: {wrong}"


def test_every_module_has_a_role_and_every_entry_script_runs_a_suite_or_the_page():
    graph = _graph()
    entries = {name for name in graph if "." not in name}
    assert entries, "no entry scripts found"
    for name in entries:
        assert graph[name] and all(t.split(".")[0] in ("suites", "report") for t in graph[name])
        assert len(BENCHMARKS.joinpath(f"{name}.py").read_text().splitlines()) < 10, \
            f"benchmarks/{name}.py is an entry script: its code belongs in a role's package"
    assert not any(t in entries for targets in graph.values() for t in targets), \
        "a module imports an entry script; import the package module instead"


def test_the_whole_page_renders_from_a_copy_of_the_committed_results(tmp_path):
    """Every section wired into render.write, on the real committed rows (a copy, so the
    figures it writes land in tmp): a section that returns the wrong type or fails on real
    rows breaks here, not in the next suite run."""
    import shutil
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    from report import render

    results = tmp_path / "results"
    shutil.copytree(BENCHMARKS / "results", results)
    page = render.write(results / "offline.json", tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("## 12 layers", "### Levers at 12 -> 6", "## The default recipe",
                    "## Decoder LLM", "## Width and depth"):
        assert heading in page
