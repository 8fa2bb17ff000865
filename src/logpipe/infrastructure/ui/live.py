"""The live terminal view (``--ui``): what the pipeline is doing, four times a second.

Like ``vector top``, one screen answers "is it keeping up, and where is it
pushing back?": records in and out per second, the queue with the
backpressure and scaling thresholds marked on its gauge, the worker count
over the last minute, the producer's backpressure sleeps, the sink's failed
writes, and the invalid and dropped counts.

Every number is read from the pipeline's one :class:`~logpipe.application.metrics.Metrics`
(``snapshot()``) and from the ring (``usage``); the view keeps no count of
its own, only the few recent samples that rates and the sparkline need.

The pipeline's status lines (``Scaler: ...``, ``Worker 3 flushed ...``,
``Shutdown ...``) must not be written over the view, so the pipeline's
Console is given :attr:`LiveView.stream`, a :class:`LogPanel`, whose last
lines the view shows in a panel of its own. The ``[METRICS]`` line is
dropped there: the view shows the same numbers. When the view stops, its
last frame stays on the terminal (without the log panel) and the status
lines it kept are printed below it, so the shutdown flushes and the report
end up in the scrollback as they do without ``--ui``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from logpipe._waits import join_thread
from logpipe.domain.durations import format_duration
from logpipe.domain.policies import BACKPRESSURE_TABLE, backpressure_sleep
from logpipe.domain.records import frozen
from logpipe.infrastructure.ui.terminal import same_terminal

__all__ = ["LiveView", "LogPanel", "gauge", "same_terminal", "sparkline"]

REFRESH_PER_SECOND = 4.0
# Rates are measured over the samples of the last second: the [METRICS]
# line's interval, and long enough that 4 Hz sampling does not jitter.
RATE_WINDOW = 1.0
# Seconds of worker counts the sparkline shows (one character per second).
HISTORY = 60
# Status lines shown in the log panel, and kept for the scrollback at the end.
LOG_LINES = 8
LOG_KEEP = 500
GAUGE_WIDTH = 50
SPARK_CHARS = "▁▂▃▄▅▆▇█"

_SCALE_STYLE = "cyan"
_PRESSURE_STYLE = "yellow"


class LogPanel:
    """A file-like object for the pipeline's Console; the live view shows its lines.

    ``write`` only appends to a bounded deque under a lock, so the workers
    and the scaler that print through the Console are never held up by the
    terminal. Lines starting with one of ``suppress`` are counted, not kept.

    Args:
        keep: how many of the latest lines are kept.
        suppress: prefixes of lines to leave out (the view replaces them).
    """

    def __init__(self, *, keep: int = LOG_KEEP, suppress: Iterable[str] = ("[METRICS]",)) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._partial = ""
        self._suppress = tuple(suppress)
        self._lock = threading.Lock()
        self.written = 0  # lines written, suppressed ones included
        self.suppressed = 0

    def write(self, text: str) -> int:
        with self._lock:
            *complete, self._partial = (self._partial + text).split("\n")
            for line in complete:
                self.written += 1
                if line.startswith(self._suppress):
                    self.suppressed += 1
                else:
                    self._lines.append(line)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: lines are shown by the view's next refresh."""

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False

    def tail(self, count: int) -> list[str]:
        """The latest ``count`` lines kept (oldest first)."""
        with self._lock:
            lines = list(self._lines)
        return lines[-count:] if count > 0 else []

    def lines(self) -> list[str]:
        """Every line kept, oldest first (at most ``keep``)."""
        with self._lock:
            return list(self._lines)

    @property
    def forgotten(self) -> int:
        """Lines no longer kept: the written ones past ``keep``, suppressed ones aside."""
        with self._lock:
            return self.written - self.suppressed - len(self._lines)


def sparkline(values: Iterable[int], *, top: int, width: int) -> str:
    """Values 0..top as block characters, right-aligned in ``width`` (latest last)."""
    chars = []
    for value in list(values)[-width:] if width > 0 else []:
        level = math.ceil(value * len(SPARK_CHARS) / top) - 1 if top > 0 else 0
        chars.append(SPARK_CHARS[max(0, min(len(SPARK_CHARS) - 1, level))])
    return "".join(chars).rjust(width)


def _cell(fraction: float, width: int) -> int:
    """The gauge cell a threshold falls in (a value above it fills that cell)."""
    return max(0, min(width - 1, int(fraction * width)))


def gauge(usage: float, *, scale_up: float, scale_down: float, width: int = GAUGE_WIDTH) -> tuple[Text, Text]:
    """The queue gauge: a bar filled to ``usage``, and a row marking the thresholds below it.

    The filled part takes the colour of the backpressure zone the usage is in
    (green below the first threshold, then yellow, orange, red). Under the bar,
    ``▲`` marks each threshold: the scaling ones in cyan, the backpressure ones
    in yellow (a scaling threshold on the same cell wins: it is the one the
    autoscaler acts on).
    """
    usage = max(0.0, min(1.0, usage))
    filled = round(usage * width)
    zone = "green"
    for (above, _), style in zip(BACKPRESSURE_TABLE, ("red", "dark_orange", "yellow")):
        if usage > above:
            zone = style
            break
    bar = Text()
    bar.append("█" * filled, style=zone)
    bar.append("░" * (width - filled), style="grey37")
    marks = [" "] * width
    styles: list[str | None] = [None] * width
    for above, _ in BACKPRESSURE_TABLE:
        marks[_cell(above, width)], styles[_cell(above, width)] = "▲", _PRESSURE_STYLE
    for threshold in (scale_down, scale_up):
        marks[_cell(threshold, width)], styles[_cell(threshold, width)] = "▲", _SCALE_STYLE
    row = Text()
    for mark, style in zip(marks, styles):
        row.append(mark, style=style)
    return bar, row


@frozen
class _Sample:
    """The numbers of one refresh."""

    at: float
    produced: int
    processed: int
    backpressure_sleeps: int


class LiveView:
    """The ``--ui`` view of one pipeline, drawn by its own thread.

    Args:
        pipeline: the Pipeline to show (its ``metrics``, ``ring``, ``pool``,
            ``config``; ``draining`` once shutdown has begun).
        console_stream: the terminal to draw on (stdout, or stderr when
            records go to stdout).
        log: the LogPanel the pipeline's Console writes to (default: a new
            one). The Console is built before the pipeline, and the pipeline
            before the view, so the caller may make the panel first.
        progress: an InputProgress to show as a row (a finite input).
        refresh_per_second: how often the view is redrawn.
        log_lines: the most status lines the log panel shows.
        clock: ``monotonic()`` (injectable for tests).

    Attributes:
        stream: the LogPanel: give it to the pipeline's Console.
    """

    def __init__(
        self,
        pipeline: Any,
        console_stream: TextIO,
        *,
        log: LogPanel | None = None,
        progress: Any = None,
        refresh_per_second: float = REFRESH_PER_SECOND,
        log_lines: int = LOG_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.stream = log if log is not None else LogPanel()
        self._progress = progress
        self._terminal = console_stream
        self.console = Console(file=console_stream, highlight=False)
        self._interval = 1.0 / refresh_per_second
        self._log_lines = log_lines
        self._clock = clock
        self._started = clock()
        self._window: deque[_Sample] = deque()
        self._workers: deque[int] = deque(maxlen=HISTORY)  # the most workers in each second
        self._second = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._sampling = threading.Lock()  # frame() may be called from any thread
        self.frames = 0
        self.error: str | None = None  # why drawing failed, if it did

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Draw the first frame and start redrawing (call just before ``pipeline.run()``)."""
        if self._thread is not None:
            return
        self._started = self._clock()
        # Other writes to the same terminal (a warning, a traceback) are
        # printed above the view instead of over it; a stream redirected
        # elsewhere stays where it goes.
        self._live = Live(
            self.frame(),
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=sys.stdout is not self._terminal and same_terminal(sys.stdout, self._terminal),
            redirect_stderr=sys.stderr is not self._terminal and same_terminal(sys.stderr, self._terminal),
            vertical_overflow="crop",
        )
        self._live.start(refresh=True)
        self._thread = threading.Thread(target=self._run, name="logpipe-ui", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Draw the final frame, leave it on the terminal, then print the kept status lines."""
        if self._thread is None or self._live is None:
            return
        self._stop.set()
        join_thread(self._thread, timeout)  # in slices: the main thread's signals
        live, self._live = self._live, None
        try:
            try:
                live.update(self.frame(final=True), refresh=True)
            finally:
                live.stop()
            forgotten = self.stream.forgotten
            if forgotten:
                self.console.print(Text(f"({forgotten} earlier status lines were shown live only)", style="dim"))
            for line in self.stream.lines():
                self.console.print(_log_text(line), soft_wrap=True)
        except (OSError, ValueError):
            pass  # the terminal is gone (a closed ssh session): the run's outcome must still stand

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            live = self._live
            if live is None:
                return
            try:
                live.update(self.frame(), refresh=True)
            except Exception as exc:  # noqa: BLE001 - the view must never stop the pipeline
                if self.error is None:
                    self.error = f"{type(exc).__name__}: {exc}"
                    self.stream.write(f"--ui: cannot draw the view ({self.error})\n")

    # -- drawing ----------------------------------------------------------------

    def frame(self, *, final: bool = False) -> RenderableType:
        """Take a sample now and return the view of it (``final``: without the log panel)."""
        with self._sampling:
            return self._frame(final)

    def _frame(self, final: bool) -> RenderableType:
        now = self._clock()
        pipeline = self.pipeline
        snap = pipeline.metrics.snapshot()
        usage = float(pipeline.ring.usage)
        self._window.append(_Sample(now, snap.produced, snap.processed, snap.backpressure_sleeps))
        while len(self._window) > 2 and self._window[1].at <= now - RATE_WINDOW:
            self._window.popleft()
        second = int(now - self._started)
        if second != self._second or not self._workers:
            self._second = second
            self._workers.append(snap.workers)
        else:
            self._workers[-1] = max(self._workers[-1], snap.workers)
        self.frames += 1
        dashboard, rows = self._dashboard(snap, usage, now, final)
        if final:
            return dashboard
        # The log gets the rows the terminal has left (its borders take 2),
        # so the view never scrolls.
        return Group(dashboard, self._log_panel(self.console.height - rows - 2 - 1))

    def _rates(self) -> tuple[float, float, float]:
        first, last = self._window[0], self._window[-1]
        seconds = last.at - first.at
        if seconds <= 0:
            return 0.0, 0.0, 0.0
        return (
            (last.produced - first.produced) / seconds,
            (last.processed - first.processed) / seconds,
            (last.backpressure_sleeps - first.backpressure_sleeps) / seconds,
        )

    def _dashboard(self, snap: Any, usage: float, now: float, final: bool) -> tuple[Panel, int]:
        """The dashboard panel, and the terminal rows it takes."""
        pipeline = self.pipeline
        config = pipeline.config
        metrics = pipeline.metrics
        width = self.console.width
        rate_in, rate_out, sleep_rate = self._rates()

        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=12)
        grid.add_column(no_wrap=True, overflow="crop")

        grid.add_row(
            "Rate",
            Text.assemble(
                ("in ", "dim"), (f"{rate_in:,.0f}/s", "bold green"),
                ("   out ", "dim"), (f"{rate_out:,.0f}/s", "bold cyan"),
            ),
        )
        records = Text.assemble(
            ("in ", "dim"), f"{snap.produced:,}", ("   out ", "dim"), f"{snap.processed:,}",
            ("   invalid ", "dim"), (f"{snap.invalid:,}", "red" if snap.invalid else ""),
            ("   dropped ", "dim"), (f"{snap.dropped:,}", "red" if snap.dropped else ""),
        )
        by_reason = _call(metrics.dropped, "by_reason")
        if by_reason:
            records.append(" (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(by_reason.items())) + ")")
        grid.add_row("Records", records)

        gauge_width = max(10, min(GAUGE_WIDTH, width - 36))
        bar, marks = gauge(usage, scale_up=config.scale_up, scale_down=config.scale_down, width=gauge_width)
        bar.append(f"  {snap.queue_depth:,}/{snap.queue_capacity:,}  {usage:.0%}")
        grid.add_row("Queue", bar)
        grid.add_row("", marks)
        for line in _legend(config.scale_down, config.scale_up):
            grid.add_row("", line)

        workers = Text.assemble(
            (f"{snap.workers}", "bold"),
            (f"  (min {config.min_workers}, max {config.max_workers}, peak {pipeline.pool.peak})", "dim"),
            ("   scale-ups ", "dim"), f"{snap.scale_ups}",
            ("  scale-downs ", "dim"), f"{snap.scale_downs}",
        )
        grid.add_row("Workers", workers)
        # 4 for the borders and padding, 13 for the labels, 10 for "  last 60s".
        spark_width = max(10, min(HISTORY, width - 4 - 13 - 10))
        spark = Text(sparkline(self._workers, top=config.max_workers, width=spark_width), style="magenta")
        spark.append(f"  last {spark_width}s", style="dim")
        grid.add_row("", spark)

        pressure = Text.assemble(
            ("sleeps ", "dim"), (f"{snap.backpressure_sleeps:,}", "yellow" if snap.backpressure_sleeps else ""),
            (f"  ({sleep_rate:,.0f}/s)", "dim"),
        )
        sleeping = backpressure_sleep(usage)
        if snap.backpressure_sleeps:
            # A source that sleeps by the table (the generator, tcp): what it sleeps now.
            pressure.append("   sleep at this usage ", style="dim")
            pressure.append(format_duration(sleeping) if sleeping else "none", style="yellow" if sleeping else "")
        elif snap.queue_depth >= snap.queue_capacity > 0:
            # A source that does not sleep (file, stdin) waits for room instead.
            pressure.append("   queue full: the source waits for room", style="yellow")
        grid.add_row("Backpressure", pressure)
        grid.add_row("Sink", self._sink_row(snap, now))
        grid.add_row("Source", Text(config.source))
        lag = getattr(snap, "upstream", None)
        if lag is not None:  # a consuming source (NATS): its consumer's lag in the stream
            grid.add_row("Upstream", Text.assemble(
                ("pending ", "dim"), (f"{lag.pending:,}", "yellow" if lag.pending else ""),
                ("   ack pending ", "dim"), f"{lag.ack_pending:,}",
                ("   redelivered ", "dim"), (f"{lag.redelivered:,}", "yellow" if lag.redelivered else ""),
            ))
        if self._progress is not None:
            grid.add_row("Input", self._progress.renderable())
        alarms = _value(getattr(metrics, "ledger_alarms", None))
        if alarms:
            grid.add_row("Ledger", Text(f"{alarms} imbalance(s): see the log", style="bold red"))

        elapsed = format_duration(round(max(0.0, now - self._started), 1))
        state = "finished" if final else ("draining" if pipeline.draining else "running")
        panel = Panel(
            grid,
            title=Text(f"logpipe  {config.source} → {config.sink}", style="bold"),
            title_align="left",
            subtitle=f"{state}  {elapsed}",
            subtitle_align="right",
            border_style="blue",
            expand=False,
        )
        return panel, grid.row_count + 2

    def _sink_row(self, snap: Any, now: float) -> Text:
        metrics = self.pipeline.metrics
        row = Text.assemble(
            (self.pipeline.config.sink, "bold"),
            ("   batches ", "dim"), f"{snap.batches_flushed:,}",
            ("   failed writes ", "dim"), (f"{snap.sink_errors:,}", "red" if snap.sink_errors else ""),
        )
        undelivered = _value(getattr(metrics, "undelivered", None))
        if undelivered:
            row.append(f"   undelivered {undelivered:,}", style="bold red")
        health = getattr(metrics, "sink_health", None)
        failing = _call(health, "failing_for", now) if health is not None else None
        if failing:
            row.append(f"   failing for {format_duration(round(failing, 1))}", style="bold red")
        return row

    def _log_panel(self, room: int) -> Panel:
        count = max(1, min(self._log_lines, room))
        lines = self.stream.tail(count)
        body = Text("\n").join(_log_text(line) for line in lines) if lines else Text("")
        body.no_wrap = True
        body.overflow = "ellipsis"
        return Panel(body, title="log", title_align="left", border_style="grey50", height=count + 2)


def _legend(scale_down: float, scale_up: float) -> tuple[Text, Text]:
    """Two lines under the gauge: what the cyan marks are, and the yellow ones."""
    scaling = Text.assemble(
        ("▲ scale-down ", _SCALE_STYLE), (f"{scale_down:.2f}", _SCALE_STYLE),
        ("  ▲ scale-up ", _SCALE_STYLE), (f"{scale_up:.2f}", _SCALE_STYLE),
    )
    pressure = Text("▲ backpressure", style=_PRESSURE_STYLE)
    for above, sleep in sorted(BACKPRESSURE_TABLE):
        pressure.append(f"  >{above:.2f} {format_duration(sleep)}", style=_PRESSURE_STYLE)
    return scaling, pressure


def _log_text(line: str) -> Text:
    loud = line.startswith(("ERROR", "LEDGER IMBALANCE")) or "failed" in line
    return Text(line, style="bold red" if loud else "")


def _value(counter: Any) -> int:
    value = getattr(counter, "value", 0)
    return value if isinstance(value, int) else 0


def _call(obj: Any, name: str, *args: Any) -> Any:
    method = getattr(obj, name, None)
    return method(*args) if callable(method) else None
