"""Helpers shared by the test modules (tests/ is on sys.path: see pyproject's pythonpath)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable


def _examples_scale() -> float:
    text = os.environ.get("LOGPIPE_TEST_EXAMPLES_SCALE", "1")
    try:
        scale = float(text)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 100:
        raise ValueError(f"LOGPIPE_TEST_EXAMPLES_SCALE must be a number in (0, 100], got {text!r}")
    return scale


#: Multiplies every property test's example count. .ci/run's sanitizer step
#: sets 0.5: under ASan and UBSan each example costs several times as much,
#: and the main step has already run the full count without them.
EXAMPLES_SCALE = _examples_scale()


def examples(count: int) -> int:
    """``count`` property-test examples, scaled by LOGPIPE_TEST_EXAMPLES_SCALE (never below 10)."""
    return max(10, round(count * EXAMPLES_SCALE))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.002) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def start_daemon(target: Callable[..., object], *args: object) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread (a stuck one cannot hang pytest's exit)."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join_all(threads: Iterable[threading.Thread], timeout: float = 60.0) -> None:
    """Join every thread within ``timeout`` seconds in all; fail naming those still running."""
    threads = list(threads)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads still running after {timeout}s: {stuck}"


# --- running `logpipe run` as a subprocess and checking its output -------------------

import contextlib  # noqa: E402
import ctypes  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def logpipe_command() -> list[str]:
    """The installed ``logpipe`` script beside the interpreter, else ``python -m logpipe``."""
    script = Path(sys.executable).with_name("logpipe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "logpipe"]


def report_of(stdout: str) -> dict[str, str]:
    """The `Report: key=value ...` line as a dict (exactly one such line)."""
    lines = [line for line in stdout.splitlines() if line.startswith("Report: ")]
    assert len(lines) == 1, stdout[-2000:]
    return dict(re.findall(r"(\w+)=(\S+)", lines[0]))


_SEQ_KEY = np.frombuffer(b'"seq": ', dtype=np.uint8)


def generator_seqs(path: Path) -> np.ndarray:
    """The ``seq`` of every line of a file sink's output of the generator, in file order.

    Vectorised (a few million lines a second): every line must be the
    generator's record with its default message, four ``key: value`` pairs
    ending ``"seq": <digits>}``; anything else fails.
    """
    data = np.fromfile(path, dtype=np.uint8) if path.exists() else np.zeros(0, np.uint8)
    if data.size == 0:
        return np.zeros(0, np.int64)
    assert data[-1] == ord("\n"), "the file ends in a partial line"
    ends = np.flatnonzero(data == ord("\n"))
    colons = np.flatnonzero(data == ord(":"))
    assert colons.size == 4 * ends.size, "a line is not a generator record (4 fields)"
    start = colons[3::4] + 2  # the seq's first digit
    assert np.all((start > ends - np.diff(ends, prepend=-1)) & (start < ends - 1)), "fields across lines"
    key = start[:, None] - len(_SEQ_KEY) + np.arange(len(_SEQ_KEY))
    assert np.all(data[key] == _SEQ_KEY), 'a line\'s last field is not "seq"'
    assert np.all(data[ends - 1] == ord("}")), "a line does not end with }"
    length = ends - 1 - start
    seqs = np.zeros(ends.size, np.int64)
    for k in range(int(length.max())):
        more = k < length
        digit = data[np.where(more, start + k, 0)].astype(np.int64) - ord("0")
        assert np.all(~more | ((digit >= 0) & (digit <= 9))), "a seq is not a number"
        seqs = np.where(more, seqs * 10 + digit, seqs)
    return seqs


def exactly_once_problem(seqs: np.ndarray, produced: int) -> str | None:
    """None if ``seqs`` are 0..produced-1 each exactly once; else what is wrong."""
    if len(seqs) != produced:
        return f"{len(seqs)} lines for {produced} produced"
    bad = np.flatnonzero(np.sort(seqs) != np.arange(produced))
    return f"missing or duplicated seqs near sorted positions {bad[:5].tolist()}" if bad.size else None


def signal_handlers_installed(pid: int) -> bool:
    """Whether logpipe's own handler is in: it catches SIGTERM, which Python alone does not."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


def tgkill(pid: int, tid: int, signum: int) -> None:
    """Send ``signum`` to thread ``tid`` of process ``pid`` (os.kill picks the thread itself)."""
    if _SYS_TGKILL is None:
        raise OSError(f"tgkill: unknown syscall number on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, tid, signum) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def threads_of(pid: int) -> list[int]:
    """The thread ids of a process, oldest first (the main thread is ``pid``)."""
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))


@contextlib.contextmanager
def scratch_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for large output, removed after: on /dev/shm when there is one (fsync costs nothing there)."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    directory = Path(tempfile.mkdtemp(prefix="logpipe-test-", dir=parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_process(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*logpipe_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_within(process: subprocess.Popen, timeout: float, what: str = "logpipe") -> tuple[int, str, str]:
    """(exit code, stdout, stderr as text) once ``process`` exits; killed and failed after ``timeout`` s."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{what}: still running after {timeout}s; stderr: {as_text(err)[-2000:]!r}") from None
    return process.returncode, as_text(out), as_text(err)


def as_text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def stop_problem(code: int, out: str, err: str, signum: int, out_file: Path) -> tuple[str, str | None]:
    """Judge a generator run stopped by ``signum``: (outcome, problem or None).

    "before": the signal came before the run started: exit 128 + signum,
    ``logpipe: interrupted``/``terminated`` the only stderr, no record written.
    "stopped": a clean stop: exit 0, no stderr, ``Shutdown signal received!``,
    lost=0, processed = produced, and the file holds seq 0..produced-1 once each.
    """
    if code == 128 + signum:
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        if err != f"logpipe: {word}\n" or len(generator_seqs(out_file)):
            return "before", f"exit {code}, stderr {err[-1000:]!r}"
        return "before", None
    if code != 0 or err:
        return "failed", f"exit {code}, stderr {err[-1000:]!r}"
    if "Shutdown signal received!" not in out:
        return "failed", "no 'Shutdown signal received!'"
    report = report_of(out)
    if report["lost"] != "0" or report["produced"] != report["processed"]:
        return "failed", f"report {report}"
    return "stopped", exactly_once_problem(generator_seqs(out_file), int(report["produced"]))


def patch_sink_writes(monkeypatch, fake: Callable[[int, object], int]) -> None:
    """Make ``fake`` every write(2) of the file and stdout sinks but a held batch's
    writev: os.write, and the writes of ``logpipe._filewrite.HeldWrites``."""
    import os

    from logpipe import _filewrite

    monkeypatch.setattr(os, "write", fake)
    monkeypatch.setattr(_filewrite, "_write_hook", fake)
