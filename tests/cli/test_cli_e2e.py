"""End to end: `python -m logpipe run` as a real subprocess, checked record by record.

Every run writes to a file sink whose lines carry the producer's ``seq``;
a run is correct when the seqs are exactly 0..N-1, each once, N is the
report's ``produced``, and the report says ``lost=0``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from _support import finish_within, report_of

LOGPIPE = [sys.executable, "-m", "logpipe"]
TIMEOUT = 60  # seconds any single run may take before the test fails
SIGINT_RUNS = 20


def seqs_of(path: Path) -> np.ndarray:
    """Every line of an NDJSON file parsed with orjson; its seq fields, in file order."""
    return np.array([orjson.loads(line)["seq"] for line in path.read_bytes().splitlines()], dtype=np.int64)


def assert_exactly_once(path: Path, produced: int) -> None:
    """The file holds seq 0..produced-1, each exactly once."""
    seqs = seqs_of(path)
    assert len(seqs) == produced, f"{len(seqs)} lines for {produced} produced"
    seqs.sort()
    missing_or_twice = np.flatnonzero(seqs != np.arange(produced))
    assert missing_or_twice.size == 0, f"first bad position {missing_or_twice[:5]}"


def assert_clean_stderr(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception" not in stderr, stderr


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOGPIPE, *args], capture_output=True, text=True, timeout=timeout)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LOGPIPE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_data(process: subprocess.Popen[str], path: Path) -> None:
    """Until records reach the file: the run has started and its signal handlers are in."""
    deadline = time.monotonic() + TIMEOUT
    while not (path.exists() and path.stat().st_size > 0):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no records written"
        time.sleep(0.01)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    return finish_within(process, TIMEOUT)


def test_count_writes_every_seq_exactly_once(tmp_path):
    """`run --count 100000 --rate 0 --sink file:OUT` writes seq 0..99999 once each and reports lost=0."""
    out_file = tmp_path / "out.ndjson"
    done = run("run", "--count", "100000", "--rate", "0", "--sink", f"file:{out_file}")
    assert done.returncode == 0, done.stderr
    assert_clean_stderr(done.stderr)
    assert "Program finished" in done.stdout
    report = report_of(done.stdout)
    assert report["produced"] == report["processed"] == "100000"
    assert report["lost"] == "0"
    assert_exactly_once(out_file, 100_000)
    first = orjson.loads(out_file.read_bytes().split(b"\n", 1)[0])
    assert set(first) == {"msg", "level", "ts", "seq"}
    assert (first["msg"], first["level"]) == ("hello from producer", "INFO")


def test_count_appends_to_an_existing_file(tmp_path):
    """Two runs into one file: the second appends, the first's records stay."""
    out_file = tmp_path / "out.ndjson"
    for _ in range(2):
        assert run("run", "--count", "3000", "--rate", "0", "--sink", f"file:{out_file}").returncode == 0
    seqs = seqs_of(out_file)
    assert len(seqs) == 6000
    assert sorted(seqs[:3000]) == sorted(seqs[3000:]) == list(range(3000))


def interrupted_run(tmp_path: Path, trial: int, seed: int) -> str | None:
    """One run under full load, sent SIGINT 0.3-1.5 s after start; a failure's description or None."""
    delay = random.Random(seed).uniform(0.3, 1.5)
    out_file = tmp_path / f"sigint-{trial}.ndjson"
    started = time.monotonic()
    process = start("run", "--rate", "0", "--sink", f"file:{out_file}")
    try:
        wait_for_data(process, out_file)
        time.sleep(max(0.0, started + delay - time.monotonic()))
        process.send_signal(signal.SIGINT)
        code, out, err = finish(process)
        assert code == 0, f"exit {code}; {err[-1000:]}"
        assert_clean_stderr(err)
        assert "Shutdown signal received!" in out
        assert "Program finished" in out
        report = report_of(out)
        assert report["lost"] == "0", report
        produced = int(report["produced"])
        assert produced > 0 and int(report["processed"]) == produced, report
        assert_exactly_once(out_file, produced)
        return None
    except AssertionError as exc:
        return f"trial {trial} (seed {seed}, SIGINT at {delay:.2f}s): {exc}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out_file.unlink(missing_ok=True)  # up to ~150 MB each


@pytest.mark.slow
def test_sigint_at_random_moments_loses_nothing(tmp_path):
    """20 runs at --rate 0, each interrupted at a random moment: every produced seq is in the file exactly once."""
    base = int(os.environ.get("LOGPIPE_TEST_SEED", time.time_ns() % 1_000_000))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda i: interrupted_run(tmp_path, i, base + i), range(SIGINT_RUNS))
        )
    failures = [result for result in results if result is not None]
    assert failures == [], f"LOGPIPE_TEST_SEED={base}: " + " | ".join(failures)


def test_sigterm_drains_like_sigint(tmp_path):
    """SIGTERM is a shutdown signal too: the same zero-loss drain, exit 0."""
    out_file = tmp_path / "out.ndjson"
    process = start("run", "--rate", "0", "--sink", f"file:{out_file}")
    wait_for_data(process, out_file)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 0, err
    assert_clean_stderr(err)
    assert "Shutdown signal received!" in out
    report = report_of(out)
    assert report["lost"] == "0"
    assert_exactly_once(out_file, int(report["produced"]))


def test_second_sigint_during_shutdown_says_still_draining(tmp_path):
    """A second and third signal while slow workers drain print the still-draining line; no traceback, nothing lost."""
    out_file = tmp_path / "out.ndjson"
    # 1000 queued records in batches of 50 at 100 ms each: about 2 s of draining.
    process = start(
        "run", "--rate", "0", "--channel-size", "1000", "--batch-size", "50",
        "--io-latency", "100ms", "--max-workers", "1", "--sink", f"file:{out_file}",
    )  # fmt: skip
    wait_for_data(process, out_file)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 0, err
    assert_clean_stderr(err)
    draining = re.findall(
        r"^Still draining \((\d+) records left\); logpipe exits when every record is flushed\.$",
        err,
        re.MULTILINE,
    )
    assert len(draining) == 2, err
    assert int(draining[0]) > 0
    assert out.count("Shutdown signal received!") == 1
    assert re.search(r"^Worker 1 flushed batch of \d+ logs$", out, re.MULTILINE)
    report = report_of(out)
    assert report["lost"] == "0"
    assert_exactly_once(out_file, int(report["produced"]))


def test_io_latency_slows_the_producer_and_scales_the_pool_up():
    """With 20 ms per flush and logs due every 50 us, the pool scales up and the producer sleeps."""
    done = run(
        "run", "--io-latency", "20ms", "--max-workers", "4", "--scale-interval", "200ms",
        "--rate", "50us", "--duration", "4s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_clean_stderr(done.stderr)
    assert "Scaler: scaling UP, workers = 2" in done.stdout
    assert re.search(r"^\[METRICS\] Produced=\d+/s \| Processed=\d+/s \| Queue=\d+/1500 \| Workers=\d+$",
                     done.stdout, re.MULTILINE)  # fmt: skip
    report = report_of(done.stdout)
    assert int(report["backpressure_sleeps"]) > 0
    assert int(report["scale_ups"]) >= 1
    assert int(report["peak_workers"]) > 1
    assert report["lost"] == "0"
    assert "Program finished" in done.stdout


def test_pool_scales_down_after_the_load_ends():
    """With --load-duration, the pool grows under load, then shrinks back to one worker once it ends."""
    # 3 s of idle is 15 intervals: the default 3-interval window and the
    # three steps from 4 workers to 1 need 6 of them.
    done = run(
        "run", "--io-latency", "20ms", "--max-workers", "4", "--scale-interval", "200ms",
        "--load-duration", "2s", "--duration", "5s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    load_over = lines.index("Load finished; idling until the run ends")
    assert any(line.startswith("Scaler: scaling UP") for line in lines[:load_over])
    downs = [line for line in lines[load_over:] if line.startswith("Scaler: scaling Down")]
    assert downs and downs[-1] == "Scaler: scaling Down, workers = 1"
    report = report_of(done.stdout)
    assert report["lost"] == "0" and int(report["scale_downs"]) >= 1


SCALE_EVENT = re.compile(r"^Scaler: scaling (UP|Down), workers = (\d+)$")


@pytest.mark.slow
def test_readme_main_command_settles_then_scales_down():
    """The README's main command: the pool grows, stays put while the load lasts, then shrinks to one worker.

    Before scale-downs weighed the work, every run went 5 -> 4 -> 3 -> 4 -> 5
    every two seconds: six changes of direction during the 8 s load. Now
    the pool may overshoot once, or take workers more when a busy machine
    stalls the run (and give them back once it recovers), but it does not
    go back and forth: at most two changes of direction during the load.
    After it, the 3-interval window and one step per interval take up to 8
    workers back to one within the 12 intervals left. (Counted in
    lines, not seconds: nothing here depends on how fast the machine is.)
    """
    done = run("run", "--io-latency", "20ms", "--load-duration", "8s", "--duration", "14s", "--scale-interval", "500ms")
    assert done.returncode == 0, done.stderr
    assert_clean_stderr(done.stderr)
    lines = done.stdout.splitlines()
    load_over = lines.index("Load finished; idling until the run ends")
    during = [SCALE_EVENT.match(line)[1] for line in lines[:load_over] if SCALE_EVENT.match(line)]
    assert during[:4] == ["UP"] * 4, during  # 1 -> 5 workers first
    reversals = sum(a != b for a, b in zip(during, during[1:]))
    assert reversals <= 2, f"the pool flapped under steady load: {during}"
    report = report_of(done.stdout)
    assert report["lost"] == "0"
    peak = int(report["peak_workers"])
    assert peak >= 5
    after = [line for line in lines[load_over:] if SCALE_EVENT.match(line)]
    assert after and after[-1].startswith("Scaler: scaling Down, workers = "), after
    if peak <= 8:
        assert after[-1] == "Scaler: scaling Down, workers = 1", after
    assert lines.index(after[-1]) < lines.index("Shutdown: --duration 14s elapsed")


def test_duration_ends_the_run_on_its_own():
    """`--duration 2s` stops by itself after about 2 s with `Program finished` and lost=0."""
    started = time.monotonic()
    done = run("run", "--duration", "2s")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert_clean_stderr(done.stderr)
    assert "Program finished" in done.stdout
    report = report_of(done.stdout)
    assert report["lost"] == "0"
    assert 1.9 <= float(report["elapsed"].removesuffix("s")) < 4
    assert 2 <= took < 10


def test_stdout_sink_keeps_records_and_status_lines_apart():
    """`--sink stdout`: stdout holds exactly the records; status lines go to stderr."""
    done = run("run", "--count", "5000", "--rate", "0", "--sink", "stdout")
    assert done.returncode == 0, done.stderr
    seqs = sorted(orjson.loads(line)["seq"] for line in done.stdout.splitlines())
    assert seqs == list(range(5000))
    assert "Program finished" in done.stderr
    assert report_of(done.stderr)["lost"] == "0"


def test_reader_closing_the_pipe_ends_the_run():
    """`logpipe run --sink stdout | head -1`: logpipe exits (code 1) with a one-line reason, no hang, no traceback."""
    process = start("run", "--rate", "0", "--sink", "stdout")
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()
    try:
        _, err = process.communicate(timeout=15)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        code = None
    assert code == 1, "logpipe kept running after its reader went away"
    assert_clean_stderr(err)
    assert "broken pipe" in err


def test_installed_console_script():
    """The `logpipe` script installed beside the interpreter runs the same command."""
    script = Path(sys.executable).with_name("logpipe")
    if not script.exists():
        pytest.skip("the logpipe script is not installed in this environment")
    done = subprocess.run([str(script), "run", "--dry-run", "--count", "7"], capture_output=True,
                          text=True, timeout=TIMEOUT)  # fmt: skip
    assert done.returncode == 0
    assert "count = 7" in done.stdout.splitlines()
