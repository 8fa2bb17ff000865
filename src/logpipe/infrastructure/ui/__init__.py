"""What the operator sees on a terminal: the ``--ui`` live view and input progress bars.

:class:`TerminalUI` decides, once per run, what to show (see its module);
:class:`LiveView` and :class:`InputProgress` are the two things it can show.

Both are drawn with rich (15-50 ms to import), so their modules are loaded
when first used: by ``TerminalUI`` when it draws one, or by a name imported
from here. A run that draws nothing never imports rich.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from logpipe.infrastructure.ui.terminal import TerminalUI, finite_input

if TYPE_CHECKING:
    from logpipe.infrastructure.ui.live import LiveView, LogPanel
    from logpipe.infrastructure.ui.progress import InputProgress

__all__ = ["InputProgress", "LiveView", "LogPanel", "TerminalUI", "finite_input"]

_LAZY = {
    "InputProgress": "progress",
    "LiveView": "live",
    "LogPanel": "live",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value
