"""Which source files a stage's code is made of: the import closure of its module.

Two things depend on it being exact. DVC reruns a stage when one of its declared deps
changes, so dvc.yaml must list every library file the stage runs and nothing else (a change
then reruns exactly the stages it affects; tests/test_codedeps.py checks dvc.yaml against
this closure). And the stages that resume half-done work (extract, convert) key their parts by
a hash of the same files (facedag.resume.code_version), so a code change never reuses a part
made by other code.

The closure follows `import` statements anywhere in a module (function-level ones too), read
with `ast`, without importing anything. Only this project's packages count (facedag, stages).
A package's `__init__.py` counts when it is imported by name (`import facedag` for its
version) or is a plugin registry (facedag.registry): then the whole folder counts, since a
params key picks any file in it at run time. Parent packages imported on the way in do not
count: their `__init__.py` files hold a docstring only.

    python -m facedag.codedeps stages.extract     # the paths, as dvc.yaml lists them
    python -m facedag.codedeps --sync dvc.yaml    # rewrite every stage's code deps there
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import cache
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("facedag", "stages")
REGISTRY_MARK = "= Registry("  # facedag.registry.Registry: a plugin folder


def module_path(name: str, root: Path = PROJECT) -> Path | None:
    """The source file of dotted module `name` under `root` (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def is_registry(name: str, root: Path = PROJECT) -> bool:
    """Whether `name` is a plugin package: its __init__ builds a facedag.registry.Registry."""
    path = module_path(name, root)
    return path is not None and path.name == "__init__.py" and REGISTRY_MARK in path.read_text()


def _imported(name: str, root: Path) -> set[str]:
    """The project modules that module `name` imports by name (absolute or relative)."""
    path = module_path(name, root)
    if path is None:
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # `from facedag.sources import media`: media is a module
                sub = f"{base}.{alias.name}"
                found.add(sub if module_path(sub, root) is not None else base)
    return {m for m in found if m.split(".")[0] in PACKAGES and module_path(m, root) is not None}


def _plugins(package: str, root: Path) -> set[str]:
    """Every module of a plugin folder (not its subfolders' tests or caches)."""
    folder = module_path(package, root).parent  # type: ignore[union-attr]
    return {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.name != "__init__.py"}


@cache
def closure(module: str, root: Path = PROJECT) -> tuple[str, ...]:
    """`module` and every project module it imports, transitively (dotted names, sorted)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imported(name, root))
        if is_registry(name, root):
            todo.extend(_plugins(name, root))
    return tuple(sorted(seen))


def dep_paths(module: str, root: Path = PROJECT) -> list[str]:
    """The closure as dvc.yaml lists code deps: files relative to `root`, a plugin folder as one
    entry; the stage's own file first, then the library in path order."""
    names = closure(module, root)
    registries = {n for n in names if is_registry(n, root)}
    paths = set()
    for name in names:
        owner = next((r for r in registries if name == r or name.startswith(r + ".")), None)
        path = module_path(owner or name, root)
        assert path is not None
        paths.add(path.parent if owner else path)
    rel = sorted(str(p.relative_to(root)) for p in paths)
    own = str(module_path(module, root).relative_to(root))  # type: ignore[union-attr]
    return [own, *(p for p in rel if p != own)]


def source_files(module: str, root: Path = PROJECT) -> list[Path]:
    """Every source file of the closure (plugin folders expanded), for hashing."""
    return sorted({module_path(n, root) for n in closure(module, root)})  # type: ignore[type-var]


def sync_dvc_yaml(path: Path, root: Path = PROJECT) -> bool:
    """Rewrite the code deps (the run of `- facedag/...` and `- stages/...` entries) of every
    `python -m stages.<name>` stage in dvc.yaml from the closure, keeping everything else as it
    is (comments, data deps, order). Returns whether the file changed."""
    lines = path.read_text().splitlines(keepends=True)
    out: list[str] = []
    module = None
    i = 0
    while i < len(lines):
        if cmd := re.match(r"^\s*cmd: python -m (stages\.\w+)", lines[i]):
            module = cmd[1]
        if (dep := re.match(r"^(\s*)- (stages|facedag)/", lines[i])) and module is not None:
            while i < len(lines) and re.match(r"^\s*- (stages|facedag)/", lines[i]):
                i += 1
            out.extend(f"{dep[1]}- {p}\n" for p in dep_paths(module, root))
            continue
        out.append(lines[i])
        i += 1
    text = "".join(out)
    changed = text != path.read_text()
    if changed:
        path.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facedag.codedeps", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="stage modules to print the code deps of (stages.extract ...)")
    parser.add_argument("--sync", metavar="DVC_YAML", help="rewrite the code deps of every stage in this dvc.yaml")
    args = parser.parse_args(argv)
    if args.sync:
        changed = sync_dvc_yaml(Path(args.sync))
        print(f"{args.sync}: {'code deps rewritten' if changed else 'code deps already match the imports'}")
    for module in args.modules:
        print("\n".join(dep_paths(module)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
