"""What the operator sees on a terminal: the ``--ui`` live view and input progress bars.

:class:`TerminalUI` decides, once per run, what to show (see its module);
:class:`LiveView` and :class:`InputProgress` are the two things it can show.
"""

from logpipe.infrastructure.ui.live import LiveView, LogPanel
from logpipe.infrastructure.ui.progress import InputProgress
from logpipe.infrastructure.ui.terminal import TerminalUI, finite_input

__all__ = ["InputProgress", "LiveView", "LogPanel", "TerminalUI", "finite_input"]
