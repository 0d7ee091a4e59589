"""The package's shape: imports point down, the pipeline never imports the UI, errors live in one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "uhead_viz"
# The UI is one package: the page's layout and handlers, its HTML and plots, the chain
# downloads and the share links. app.py sits at the root and only builds and launches it.
UI_MODULES: set[str] = set()
UI_PACKAGE = "uhead_viz.ui"
UI_IMPORTS = ("uhead_viz.ui", "gradio", "plotly")
# Cycles not yet broken, each with the move that breaks it. The test fails when one is
# broken too, so the entry goes with it; no new cycle may join the list.
KNOWN_CYCLES: list[list[str]] = []


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` is its package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement in ``module`` brings in (a submodule where it names one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def package_imports(module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(imported(module, node))
    return out


def _top_level(body: list[ast.stmt]):
    """Statements run on import: the module body and the bodies of its top-level if/try blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                continue
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                yield from _top_level(block)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_package_modules():
    got = package_imports("uhead_viz.scorers.combined", top_level_only=False)
    assert {"uhead_viz.scorers.base", "uhead_viz.errors", "uhead_viz.scorers"} <= got
    assert "uhead_viz.internals" in package_imports("uhead_viz.capture", top_level_only=True)


def test_no_import_cycle_among_package_modules():
    """Counting imports inside functions too: a deferred import that closes a loop still ties two modules together."""
    graph = {m: {i for i in package_imports(m, top_level_only=False) if i in MODULES} for m in MODULES}
    assert sorted(find_cycles(graph)) == sorted(KNOWN_CYCLES)


def _is_ui(module: str) -> bool:
    return module in UI_MODULES or module == UI_PACKAGE or module.startswith(UI_PACKAGE + ".")


@pytest.mark.parametrize("module", [m for m in MODULES if not _is_ui(m)])
def test_the_pipeline_does_not_import_the_ui(module):
    names = package_imports(module, top_level_only=True)
    bad = sorted(i for i in names if any(i == u or i.startswith(u + ".") for u in UI_IMPORTS))
    assert bad == [], f"{module} imports {bad} when it is imported; the UI may import the pipeline, not the reverse"


def test_exception_types_live_in_errors_and_old_homes_re_export_them():
    from uhead_viz import errors, jsonl, llm, packs, uhead
    from uhead_viz.labels import api_judge

    assert llm.InputError is errors.InputError
    assert packs.PackError is errors.PackError
    assert uhead.HeadError is errors.HeadError
    assert jsonl.RowError is errors.RowError
    assert api_judge.JudgeError is errors.JudgeError
    assert issubclass(errors.HeadError, errors.InputError) and issubclass(errors.InputError, ValueError)
    assert issubclass(errors.PackError, RuntimeError)
    assert package_imports("uhead_viz.errors", top_level_only=False) == {"__future__"}


def test_method_labels_come_from_a_module_below_the_ui():
    from uhead_viz.methods import method_label
    from uhead_viz.ui import render

    assert render.method_label is method_label
    assert method_label("minprob") == "Min token prob"
    assert method_label("prm:Qwen/Qwen2.5-Math-PRM-7B") == "PRM (Qwen2.5-Math-PRM-7B)"
    assert method_label("unknown_method") == "unknown_method"
    assert package_imports("uhead_viz.methods", top_level_only=False) == {"__future__"}
