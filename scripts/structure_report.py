"""Structure report of the tempolens package: import graph, cycles, backward arrows, longest functions, size.

Usage: python scripts/structure_report.py [SRC_DIR] [--json OUT]

- Import graph: module-level and function-level imports between tempolens modules (a module's imports of
  its own package's `__init__` are left out).
- Cycles: strongly connected components of that graph with more than one module.
- Backward arrows: imports from a later stage of the data flow into an earlier one, by the stage order below.
- Longest functions: by source lines (decorators and docstrings included), the 10 longest.
- Size: lines of Python in the package (all lines, and non-blank non-comment lines).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

# Data-flow order: a module may import from its own stage or earlier ones. Shared utilities come first.
STAGES: list[tuple[str, ...]] = [
    ("errors", "options", "fsutil", "devices", "bf16", "progress", "version", "_"),
    ("sources",),
    ("saes",),
    ("store",),
    ("activations", "collect", "distributed"),
    ("stats",),
    ("dashboards", "autointerp", "temporal", "train"),
    ("viewer", "exports"),
    ("serve", "pipeline"),
    ("cli", "__main__"),
]


def stage_of(module: str) -> int:
    parts = module.split(".")[1:]  # drop "tempolens"
    head = parts[0] if parts else "_"
    for rank, names in enumerate(STAGES):
        if head in names:
            return rank
    return 0


# Modules that implement a whole command: other stages should call them, not borrow helpers from them.
COMMANDS = {
    "tempolens.collect",
    "tempolens.dashboards.pipeline",
    "tempolens.temporal.command",
    "tempolens.autointerp.pipeline",
    "tempolens.train.trainer",
    "tempolens.pipeline",
    "tempolens.serve",
    "tempolens.cli",
}
FRONT = {"tempolens.pipeline", "tempolens.cli", "tempolens.serve", "tempolens.__main__"}


def private_imports(src: Path, path: Path) -> list[str]:
    """`from tempolens.x import _name` across modules."""
    module = module_name(src, path)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = resolve(module, path.name == "__init__.py", node)
            out += [
                f"{module} -> {base}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return out


def module_name(src: Path, path: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(src: Path, path: Path, modules: set[str]) -> set[str]:
    module = module_name(src, path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_pkg, node)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != module and not module.startswith(t + "."):
                found.add(t)
    # `from . import x` also adds the package itself: keep only the most specific target per import.
    return {t for t in found if not any(o.startswith(t + ".") for o in found)} or found


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def functions(src: Path) -> list[tuple[int, str]]:
    rows = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text())
        mod = module_name(src, path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                rows.append((node.end_lineno - start + 1, f"{mod}.{node.name}"))
    return sorted(rows, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", default="src", help="folder that holds the tempolens package")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = ap.parse_args()
    src = Path(args.src).resolve()
    files = sorted((src / "tempolens").rglob("*.py"))
    modules = {module_name(src, f) for f in files}
    graph = {module_name(src, f): imports_of(src, f, modules) for f in files}
    cycles = sccs(graph)
    backward = sorted(
        (a, b) for a, deps in graph.items() for b in deps if stage_of(b) > stage_of(a) and b != "tempolens"
    )
    reach_ins = sorted(
        (a, b)
        for a, deps in graph.items()
        for b in deps
        if b in COMMANDS and a not in FRONT and not b.startswith(a + ".")
    )
    privates = [p for f in files for p in private_imports(src, f)]
    longest = functions(src / "tempolens")[:10]
    text = [f.read_text().splitlines() for f in files]
    total = sum(len(t) for t in text)
    code = sum(1 for t in text for line in t if line.strip() and not line.strip().startswith("#"))
    long_lines = sum(1 for t in text for line in t if len(line) > 120)

    print(f"package: {len(files)} files, {total} lines ({code} non-blank, non-comment), {long_lines} over 120 chars")
    print(f"import edges: {sum(len(v) for v in graph.values())}")
    print(f"cycles ({len(cycles)}):")
    for c in cycles:
        print("  " + " <-> ".join(c))
    print(f"arrows against the data flow ({len(backward)}):")
    for a, b in backward:
        print(f"  {a} -> {b}")
    print(f"helpers borrowed from another command's module ({len(reach_ins)}):")
    for a, b in reach_ins:
        print(f"  {a} -> {b}")
    print(f"private names imported across modules ({len(privates)}):")
    for p in privates:
        print(f"  {p}")
    print("10 longest functions:")
    for n, name in longest:
        print(f"  {n:4d}  {name}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "files": len(files),
                    "lines": total,
                    "code_lines": code,
                    "long_lines": long_lines,
                    "graph": {k: sorted(v) for k, v in sorted(graph.items())},
                    "cycles": cycles,
                    "backward": backward,
                    "reach_ins": reach_ins,
                    "private_imports": privates,
                    "longest": longest,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
