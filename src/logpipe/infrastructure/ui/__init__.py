"""What the operator sees on a terminal: the ``--ui`` live view and input progress bars.

:class:`TerminalUI` decides, once per run, what to show (see its module);
:class:`LiveView` and :class:`InputProgress` are the two things it can show.

Both are drawn with rich (15-50 ms to import), so their modules are loaded
when first used: by ``TerminalUI`` when it draws one, or by a name imported
from here. A run that draws nothing never imports rich.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names
from logpipe.infrastructure.ui.terminal import TerminalUI, finite_input

if TYPE_CHECKING:
    from logpipe.infrastructure.ui.live import LiveView, LogPanel
    from logpipe.infrastructure.ui.progress import InputProgress

__all__ = ["InputProgress", "LiveView", "LogPanel", "TerminalUI", "finite_input"]

__getattr__ = lazy_names(
    __name__,
    {"InputProgress": f"{__name__}.progress", "LiveView": f"{__name__}.live", "LogPanel": f"{__name__}.live"},
)
