"""Plugin folders: where a concern has alternatives, one file per alternative, picked by a params key.

As faceswap's `plugins/` do: a folder (a package) holds one module per alternative, named as
the params value that picks it (`convert.colour: avg` -> facedag/swap/colour/avg.py), and its
`__init__.py` makes a `Registry` for it. Adding an alternative is adding one file and using
its name in params.yaml; nothing else changes. Modules whose name starts with `_` are shared
helpers of the folder, not alternatives.

Each plugin module exposes the folder's interface as a module attribute (the registry says
which, `attr`); the folder's `__init__.py` documents the interface. Plugins are imported only
when asked for, so a folder's heavy alternatives (a model, a GPU library) cost nothing until
they are picked.

`plugin_names` lists a folder without importing it: params.py validates names with it, so
that params.py (which every stage imports) does not pull every plugin folder into every
stage's code deps (facedag.codedeps).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


def plugin_names(package: str) -> tuple[str, ...]:
    """The alternatives in plugin folder `package` (dotted), sorted, without importing them."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not a plugin folder")
    found = pkgutil.iter_modules(list(spec.submodule_search_locations))
    return tuple(sorted(m.name for m in found if not m.name.startswith("_") and not m.ispkg))


def check_plugin(package: str, name: str, what: str) -> str:
    """`name` when it is an alternative of `package`, else a ValueError that lists them (for params)."""
    names = plugin_names(package)
    if name not in names:
        raise ValueError(f"unknown {what} {name!r} (one of: {', '.join(names)})")
    return name


class Registry(Generic[T]):
    """The alternatives of one plugin folder: `get(name)` imports `<package>.<name>` and returns
    its `attr` attribute (a function, a class: the folder's interface)."""

    def __init__(self, package: str, what: str, attr: str) -> None:
        self.package = package
        self.what = what
        self.attr = attr

    def names(self) -> tuple[str, ...]:
        return plugin_names(self.package)

    def get(self, name: str) -> T:
        check_plugin(self.package, name, self.what)
        module = importlib.import_module(f"{self.package}.{name}")
        try:
            return getattr(module, self.attr)
        except AttributeError:
            raise TypeError(f"{self.package}.{name} is a {self.what} module without `{self.attr}`") from None
