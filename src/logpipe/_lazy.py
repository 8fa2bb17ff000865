"""Names of a package that load their module on first use (PEP 562).

For packages whose modules import something heavy (the ring's extension,
prometheus_client, rich): ``from package import Name`` still works, but the
module, and what it imports, is loaded only when one of its names is first
asked for. After that the name is a plain attribute of the package.

``logpipe/__init__.py`` uses it before the entry point has installed its
signal handler, so this module imports nothing at import time (not even
typing, ~10 ms).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see above
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` comes from module ``modules[name]``."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib
        import sys

        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # once: later lookups are plain attribute reads
        return value

    return __getattr__
