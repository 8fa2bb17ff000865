"""The --ui live view: its parts, a real pipeline drawn in-process, and the
real command on a pseudo-terminal (read through a terminal emulator) and in
a pipe."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from logpipe.application.console import Console as StatusConsole
from logpipe.application.pipeline import Pipeline
from logpipe.domain.config import PipelineConfig
from logpipe.infrastructure.sinks import NullSink
from logpipe.infrastructure.ui.live import SPARK_CHARS, LiveView, LogPanel, gauge, sparkline

# --- the parts ----------------------------------------------------------------------


def test_log_panel_keeps_whole_lines_and_leaves_out_the_metrics_line() -> None:
    """Lines are split on newlines (partial writes joined); [METRICS] lines are counted, not kept."""
    panel = LogPanel(keep=10)
    panel.write("Scaler: scaling UP, ")
    panel.write("workers = 2\n[METRICS] Produced=1/s | Processed=1/s | Queue=0/1 | Workers=1\n")
    panel.write("Program finished\nReport: ")
    assert panel.lines() == ["Scaler: scaling UP, workers = 2", "Program finished"]
    assert panel.suppressed == 1 and panel.written == 3
    assert panel.tail(1) == ["Program finished"]
    assert not panel.isatty()


def test_log_panel_keeps_the_latest_lines_and_counts_the_rest() -> None:
    """Past ``keep`` lines the oldest go; ``forgotten`` says how many."""
    panel = LogPanel(keep=3)
    for i in range(10):
        panel.write(f"line {i}\n")
    assert panel.lines() == ["line 7", "line 8", "line 9"]
    assert panel.forgotten == 7


def test_log_panel_loses_no_line_written_by_many_threads() -> None:
    """8 threads x 500 lines through a StatusConsole: every line is kept once, whole."""
    panel = LogPanel(keep=10_000)
    console = StatusConsole(panel)

    def say(thread: int) -> None:
        for i in range(500):
            console.say(f"thread {thread} line {i}")

    threads = [threading.Thread(target=say, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert sorted(panel.lines()) == sorted(f"thread {t} line {i}" for t in range(8) for i in range(500))


def test_gauge_fills_to_the_usage_and_marks_every_threshold() -> None:
    """A 50-cell gauge at 85% has 42 or 43 filled cells; marks sit at 0.2, 0.8, 0.9 and 0.95."""
    bar, marks = gauge(0.85, scale_up=0.8, scale_down=0.2, width=50)
    assert bar.plain.count("█") == round(0.85 * 50)
    assert len(bar.plain) == len(marks.plain) == 50
    assert [i for i, c in enumerate(marks.plain) if c == "▲"] == [10, 40, 45, 47]


def test_gauge_colours_the_fill_by_backpressure_zone() -> None:
    """Green up to 80%, then yellow, orange above 90%, red above 95%."""
    styles = [str(gauge(u, scale_up=0.8, scale_down=0.2)[0].spans[0].style) for u in (0.5, 0.85, 0.92, 0.99)]
    assert styles == ["green", "yellow", "dark_orange", "red"]


def test_sparkline_scales_to_max_workers_and_aligns_right() -> None:
    """1 of 10 is the lowest block, 10 of 10 the highest; the latest value is last."""
    line = sparkline([1, 5, 10], top=10, width=6)
    assert line == "   " + SPARK_CHARS[0] + SPARK_CHARS[3] + SPARK_CHARS[-1]
    assert sparkline(range(100), top=100, width=4) == sparkline([96, 97, 98, 99], top=100, width=4)


# --- a real pipeline, drawn in-process ------------------------------------------------


def test_view_of_a_running_pipeline_shows_its_numbers() -> None:
    """A pipeline run for 1.5 s: frames show rate, queue, thresholds, workers, sink; stop() prints the log."""
    out = io.StringIO()
    config = PipelineConfig(duration=1.5, io_latency=0.01, sink="null")
    panel = LogPanel()
    pipeline = Pipeline(config, NullSink(), console=StatusConsole(panel))
    view = LiveView(pipeline, out, log=panel)
    view.console = Console(file=out, width=100, height=40, force_terminal=False)
    frames: list[str] = []

    def draw() -> None:
        while not done.wait(0.25):
            probe = Console(file=io.StringIO(), width=100, height=40)
            probe.print(view.frame())
            frames.append(probe.file.getvalue())  # type: ignore[attr-defined]

    done = threading.Event()
    drawer = threading.Thread(target=draw)
    view.start()
    drawer.start()
    try:
        report = pipeline.run()
    finally:
        done.set()
        drawer.join(5)
        view.stop()
    assert report.lost == 0
    busy = [f for f in frames if re.search(r"in [1-9][\d,]*/s", f)]
    assert busy, frames[-1:]
    frame = busy[-1]
    assert "Queue" in frame and "/1,500" in frame and "▲ scale-up 0.80" in frame and "▲ scale-down 0.20" in frame
    assert ">0.80 500µs" in frame and ">0.90 1ms" in frame and ">0.95 2ms" in frame
    assert re.search(r"Workers\s+\d+\s+\(min 1, max 10", frame)
    assert "Sink" in frame and "null" in frame and "Backpressure" in frame
    printed = out.getvalue()
    assert "finished" in printed and "Report: produced=" in printed
    assert "[METRICS]" not in printed  # the view replaced it
    assert panel.suppressed >= 1


# --- the command on a terminal and in a pipe -----------------------------------------------


def _dashboard_with_rates(rows: list[str]) -> bool:
    text = "\n".join(rows)
    return (
        re.search(r"Rate\s+in [1-9][\d,]*/s\s+out [1-9][\d,]*/s", text) is not None
        and "▲ backpressure" in text
        and re.search(r"Source\s+generator", text) is not None
        and "│ Scaler: scaling UP" in text
    )


def test_ui_on_a_terminal_draws_the_view_and_keeps_status_lines_in_its_panel(pty_run: Any, run_command: list[str]) -> None:
    """`run --ui --duration 3s --io-latency 10ms` on a pty: gauge, rates, workers, scaler line in the log panel; report at the end."""
    result = pty_run(
        [*run_command, "--ui", "--duration", "3s", "--io-latency", "10ms"],
        watch={"busy": _dashboard_with_rates},
    )
    assert result.returncode == 0, result.text
    assert "busy" in result.seen, result.text
    busy = "\n".join(result.seen["busy"])
    assert re.search(r"Queue\s+[█░]{20,}\s+[\d,]+/1,500\s+\d+%", busy), busy
    assert "▲ scale-down 0.20" in busy and "▲ scale-up 0.80" in busy
    assert re.search(r"Workers\s+[2-9]\s+\(min 1, max 10, peak \d+\)", busy), busy
    assert re.search(r"[▁▂▃▄▅▆▇█]+\s+last \d+s", busy), busy
    assert re.search(r"sleeps [1-9]", busy), busy  # 10 ms per flush of 50 cannot keep up with 10k/s
    assert "running" in busy
    # Status lines went to the panel, never over the view; the [METRICS] line not at all.
    assert b"[METRICS]" not in result.raw
    final = result.text
    assert "finished" in final
    report = [row for row in result.screen if row.startswith("Report: ")]
    assert report and "lost=0" in final.replace("\n", ""), final
    assert final.index("finished") < final.index("Program finished") < final.index("Report: ")


def test_ui_on_a_terminal_survives_sigint_and_shows_the_shutdown(pty_run: Any, run_command: list[str]) -> None:
    """SIGINT during --ui: the view stops cleanly, the shutdown lines and lost=0 follow its last frame."""
    result = pty_run(
        [*run_command, "--ui", "--io-latency", "5ms"],
        watch={"running": lambda rows: any("running" in row for row in rows) and any("Rate" in r for r in rows)},
        signal_when=("running", signal.SIGINT),
    )
    assert result.returncode == 0, result.text
    final = result.text
    assert final.index("finished") < final.index("Shutdown signal received!") < final.index("Report: ")
    assert "lost=0" in final.replace("\n", "")


def test_ui_in_a_pipe_prints_the_metrics_lines_and_says_why(tmp_path: Path, run_command: list[str]) -> None:
    """--ui with stdout a pipe: the plain [METRICS] lines as without --ui, one notice on stderr, no escapes."""
    done = subprocess.run(
        [*run_command, "--ui", "--duration", "2.2s", "--io-latency", "10ms"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    metrics = [line for line in done.stdout.splitlines() if line.startswith("[METRICS] ")]
    assert len(metrics) >= 2, done.stdout
    assert re.fullmatch(r"\[METRICS\] Produced=\d+/s \| Processed=\d+/s \| Queue=\d+/1500 \| Workers=\d+", metrics[0])
    assert "\x1b" not in done.stdout and "Queue  " not in done.stdout
    assert done.stderr.splitlines() == ["logpipe: --ui: stdout is not a terminal; printing the [METRICS] line instead"]
