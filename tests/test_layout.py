"""The layout's import rules, read from the source: imports flow down the layers, never up, and never in a cycle.

Layers, lowest first: ``bench.core`` (library pieces), then ``rewards`` and ``methods`` (plug-in packages on the
core), then ``bench.harness`` (planning, launching, the training loop), ``bench.analysis`` (reading results),
``bench.perf`` and ``bench.shapeworld`` (measurement and training tools), and last the commands in ``bench/*.py``.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods", "rewards")


def layer(module: str) -> int:
    """0 core, 1 rewards/methods, 2 harness, 3 analysis, 4 perf/shapeworld, 5 commands."""
    parts = module.split(".")
    if parts[0] in ("rewards", "methods"):
        return 1
    sub = parts[1] if len(parts) > 1 else ""
    return {"core": 0, "harness": 2, "analysis": 3, "perf": 4, "shapeworld": 4}.get(sub, 5)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from bench.core import x`` counts as ``bench.core.x`` when that is a
    module, else ``bench.core``), at any depth of the file (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in MODULES else node.module for n in names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


SOURCES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
MODULES = {module_name(p) for p in SOURCES}
GRAPH = {module_name(p): imports_of(p) for p in SOURCES}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        for target in targets:
            if layer(target) > layer(module):
                bad.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
            # methods and rewards may use each other's base classes only
            if module.split(".")[0] in ("methods", "rewards") and target.split(".")[0] != module.split(".")[0]:
                if target.split(".")[0] in ("methods", "rewards") and not target.endswith(".base"):
                    bad.append(f"{module} imports {target} (only base classes cross between methods and rewards)")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package's ``__init__`` importing its own submodules is not one)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or node.startswith(nxt + "."):  # a module importing its own package
                continue
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_imports_flow_down_the_layers():
    assert upward_imports(GRAPH) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_rule_catches_a_planted_upward_import():
    planted = {**GRAPH, "bench.core.sampler": GRAPH["bench.core.sampler"] | {"bench.harness.recorder"}}
    assert upward_imports(planted) == [
        "bench.core.sampler (layer 0) imports bench.harness.recorder (layer 2)"]
    planted = {**GRAPH, "rewards.base": GRAPH["rewards.base"] | {"methods.alignprop"}}
    assert any("only base classes" in line for line in upward_imports(planted))
    assert cycles({"a.x": {"a.y"}, "a.y": {"a.x"}}) == [["a.x", "a.y", "a.x"]]


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in SOURCES + sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                bad += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_commands_are_thin():
    """A command file in bench/ parses arguments and calls its layer: at most 150 lines."""
    for path in sorted((REPO / "bench").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 150, path.name
