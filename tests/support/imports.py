"""What a program of this repository can import, read from its source with ast (nothing is run).

`closure("gpu_job")` follows every import, at module level or inside a function (a lazy import
still runs in production), from the package's entry modules through this repository's own modules,
and returns the third-party top-level names it reaches. `distributions(names)` maps those to the
installed distributions that provide them (importlib.metadata), which is what a lock file pins.
Imports under `if TYPE_CHECKING:` never run, so they do not count.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OWN = {"gpu_job", "vastdrop", "handlers", "watcher", "tests", "bench"}


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names this module imports (for `from X import a`, both X and X.a: a may be a
    submodule), skipping `if TYPE_CHECKING:` bodies."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append(target)
            found.extend(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def closure(*entries: str) -> set[str]:
    """Third-party top-level import names reachable from `entries` (this repository's packages or
    modules, e.g. "gpu_job" or "handlers.lambda_entry"). A package entry means all of it: any of
    its modules may be run (`python -m gpu_job` imports the runner, the runner its stages)."""
    todo: list[str] = []
    for entry in entries:
        file = _module_file(entry)
        if file is None:
            raise ValueError(f"{entry} is not a module of this repository")
        todo.append(entry)
        if file.name == "__init__.py":
            todo.extend(
                ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                for p in file.parent.rglob("*.py")
            )
    seen: set[str] = set()
    third_party: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top not in OWN:
            if top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
            continue
        file = _module_file(module)
        if file is None:
            continue  # `from pkg import name` where name is not a submodule
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parents = module.split(".")
        todo.extend(".".join(parents[:k]) for k in range(1, len(parents)))
        tree = ast.parse(file.read_text(), str(file))
        todo.extend(_imports(tree, module, file.name == "__init__.py"))
    return third_party


def distributions(import_names: set[str]) -> dict[str, str]:
    """Distribution (canonical name) -> one import name it provides. Raises for a name that no
    installed distribution provides: the code imports something nothing declares."""
    provided = importlib.metadata.packages_distributions()
    out: dict[str, str] = {}
    missing = []
    for name in sorted(import_names):
        dists = provided.get(name)
        if not dists:
            missing.append(name)
            continue
        for dist in dists:
            out.setdefault(canonicalize_name(dist), name)
    if missing:
        raise LookupError(f"imported but provided by no installed distribution: {missing}")
    return out
