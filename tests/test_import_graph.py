"""The import graph of our packages has no circle spanning more than two files.

Read with ``ast`` (nothing is imported): every ``import`` of one of our modules, at module level or
inside a function, is an edge; imports under ``if TYPE_CHECKING:`` are not (they never run). A
function-local import cannot hide a circle this way, since it counts like any other.

An import inside a function is allowed only to keep a heavy optional package out of import time
(``LAZY_OK``): ``import rocm_fp8`` must pull in torch and nothing else. The command-line tools
(``rocm_fp8.cli``, ``rocm_fp8.probe``, ``rocm_fp8.tune``) follow the same rule: importing any of them
runs ``rocm_fp8/__init__.py``, which loads the serving core anyway, so a lazy import of one of our
modules would save nothing. What keeps ``rocm-fp8 --help`` fast is that the command imports a
subcommand's module by name only when that subcommand runs (``rocm_fp8.cli.DELEGATED``; checked in
tests/test_imports.py), which is not an import statement and so not an edge here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("rocm_fp8", "rocm_fp8_deploy")

#: what a module may import inside a function: heavy or optional packages, and our modules that
#: import them at their top. ``torch``/``importlib.metadata``/``tomli`` appear where detection
#: must survive their absence.
#: sglang and vllm: the serving stacks, imported by our plugins only when the stack itself loads them
LAZY_OK = ("triton", "aiter", "docker", "torch", "tomllib", "tomli", "importlib.metadata", "rocm_fp8.kernels",
           "sglang", "vllm")


def module_files() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (SRC / package).rglob("*.py"):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, modules: "dict[str, Path] | None" = None) -> list[tuple[str, bool, int]]:
    """(imported module, whether inside a function, line) for every import that runs."""
    modules = module_files() if modules is None else modules
    is_package = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                # "from pkg import mod" imports pkg.mod; "from pkg import name" imports pkg
                found.extend((f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module, in_function,
                              child.lineno) for a in child.names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def graph() -> dict[str, set[str]]:
    mods = module_files()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _, _ in imports_of(name, path, mods):
            if target not in mods or target == name:
                continue
            edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_our_modules():
    edges = graph()
    assert "rocm_fp8.dispatch" in edges and "rocm_fp8.policy" in edges["rocm_fp8.dispatch"]
    assert "rocm_fp8.invalidation" in edges["rocm_fp8.ledger"]
    assert "rocm_fp8.tune.timing" in edges["rocm_fp8.tune.search"]  # the tools are in the graph too


def test_no_import_circle_spans_more_than_two_files():
    big = [c for c in circles(graph()) if len(c) > 2]
    assert not big, ("import circles over more than two files (break them: see rocm_fp8/invalidation.py for "
                     "the pattern): " + "; ".join(" <-> ".join(c) for c in big))


def test_circle_detection_finds_a_planted_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]


def lazy_imports_not_allowed(name: str, path: Path, modules: "dict[str, Path] | None" = None) -> list[str]:
    """Function-local imports in ``path`` of anything but a heavy optional package, as "module (line N)"."""
    per_line: dict[int, list[str]] = {}
    for target, in_function, line in imports_of(name, path, modules):
        if in_function:
            per_line.setdefault(line, []).append(target)
    return [f"{min(targets, key=len)} (line {line})" for line, targets in sorted(per_line.items())
            if not any(t == ok or t.startswith(ok + ".") for t in targets for ok in LAZY_OK)]


@pytest.mark.parametrize("name", sorted(m for m in module_files() if m.startswith("rocm_fp8.")))
def test_modules_import_lazily_only_heavy_packages(name):
    path = module_files()[name]
    bad = lazy_imports_not_allowed(name, path)
    assert not bad, (f"{path.relative_to(SRC.parent)}: function-local imports of {', '.join(bad)}; import them "
                     f"at module level (lazy imports are for heavy optional packages: {', '.join(LAZY_OK)})")


def test_the_lazy_import_check_finds_a_planted_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n\n\ndef f():\n    import triton\n    from aiter.ops import x\n"
                       "    from rocm_fp8 import ledger\n    return os\n")
    modules = {**module_files(), "rocm_fp8.planted": planted}
    assert lazy_imports_not_allowed("rocm_fp8.planted", planted, modules) == ["rocm_fp8.ledger (line 7)"]
