"""End to end with production-like input: the real ``logpipe`` command reads a
corpus of realistic lines (tests/_corpus.py) from stdin, ``file:PATH --once``
and ``tcp://127.0.0.1:PORT``, and writes them to ``file:OUT``.

The expected output is computed from the documented line rule
(docs/sources.md; ``_corpus.frame_by_rule``), never from a run:

- every line that fits ``--max-record-size`` is in OUT exactly once, byte for
  byte, after one trailing ``\\r`` is removed (workers may write batches in any
  order, so OUT is compared as a multiset of records);
- empty lines (``\\n``, ``\\r\\n``) are skipped: not in OUT, not invalid;
- lines longer than ``--max-record-size`` are counted in the report's
  ``invalid`` and written to the dead-letter file with reason ``too long`` and
  their full size;
- the report says ``produced == processed == records`` and ``lost=0``.

Each source runs at the spec's sizes (``--channel-size 1500 --batch-size 50``,
1 MiB records), at large ones (65536/1024, a 131072-byte record limit) and on
a tiny ring (7/3, a 65536-byte record limit); on the tiny ring with
``--max-workers 1`` the output must also keep the input's order. ``test_control_*`` runs a corpus
with no record longer than a slot's inline payload: when it passes and the
others fail, the fault is in how long records are moved, not in this test.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from _corpus import Corpus, frame_by_rule, make_corpus, multiset_difference, records_of_output
from _support import finish_within

LOGPIPE = [sys.executable, "-m", "logpipe"]
SEED = int(os.environ.get("LOGPIPE_CORPUS_SEED", "8"))
LINES = 20_000
RUN_TIMEOUT = 120.0  # seconds a single run may take (sanitizer builds are several times slower)

SIZES = {
    "spec-defaults": [],  # --channel-size 1500 --batch-size 50 --max-record-size 1048576
    "large": ["--channel-size", "65536", "--batch-size", "1024", "--max-record-size", "131072"],
    "tiny-ring": ["--channel-size", "7", "--batch-size", "3", "--max-record-size", "65536"],
}
MAX_RECORD = {"spec-defaults": 1 << 20, "large": 131072, "tiny-ring": 65536}
# One worker: the input's order is promised end to end (docs/sinks.md, "Order").
SIZES["one-worker"] = ["--max-workers", "1", *SIZES["tiny-ring"]]
MAX_RECORD["one-worker"] = MAX_RECORD["tiny-ring"]


@functools.cache
def corpus(max_record_size: int, long_records: bool = True) -> Corpus:
    made = make_corpus(SEED, LINES, max_record_size=max_record_size, long_records=long_records)
    # The generator's intent and the documented rule applied to its bytes agree.
    records, too_long, blank = frame_by_rule(made.data, max_record_size)
    assert records == made.records
    assert too_long == made.too_long
    assert blank == made.blank
    return made


def report_of(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line.startswith("Report: ")]
    assert len(lines) == 1, stdout[-3000:]
    return dict(re.findall(r"(\w+)=(\S+)", lines[0]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_args(tmp_path: Path, sizes: str) -> list[str]:
    return [
        "--sink", f"file:{tmp_path / 'out.ndjson'}", "--dead-letter", str(tmp_path / "dead.ndjson"),
        "--rate", "0", *SIZES[sizes],
    ]  # fmt: skip


def communicate(process: subprocess.Popen[bytes], what: str) -> tuple[int, str, str]:
    return finish_within(process, RUN_TIMEOUT, what)


def run_stdin(tmp_path: Path, sizes: str, data: bytes) -> tuple[int, str, str]:
    path = tmp_path / "input.log"
    path.write_bytes(data)
    with path.open("rb") as stdin:
        process = subprocess.Popen(
            [*LOGPIPE, "run", "--source", "stdin", *common_args(tmp_path, sizes)],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        )  # fmt: skip
        return communicate(process, "stdin")


def run_file(tmp_path: Path, sizes: str, data: bytes) -> tuple[int, str, str]:
    path = tmp_path / "input.log"
    path.write_bytes(data)
    process = subprocess.Popen(
        [*LOGPIPE, "run", "--source", f"file:{path}", "--once", *common_args(tmp_path, sizes)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    return communicate(process, "file --once")


def run_tcp(tmp_path: Path, sizes: str, data: bytes, expected_bytes: int) -> tuple[int, str, str]:
    """Send the corpus on one connection, close it; once OUT holds every record (or
    nothing more arrives for a while), SIGTERM: a tcp source never ends by itself."""
    port = free_port()
    out = tmp_path / "out.ndjson"
    process = subprocess.Popen(
        [*LOGPIPE, "run", "--source", f"tcp://127.0.0.1:{port}", *common_args(tmp_path, sizes)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT)
                break
            except ConnectionRefusedError:
                assert process.poll() is None, f"logpipe exited early: {communicate(process, 'tcp')}"
                assert time.monotonic() < deadline, "the tcp source never listened"
                time.sleep(0.02)
        with client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        # Wait for the records: a run that corrupts or loses some stops growing short of the total.
        last_size, last_change = -1, time.monotonic()
        while process.poll() is None:
            size = out.stat().st_size if out.exists() else 0
            if size >= expected_bytes:
                break
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > 15:
                break  # stuck: stop it and let the comparison say what is missing
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return communicate(process, "tcp")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stderr_excerpt(stderr: str) -> str:
    """A sanitizer report from its start (where the faulting frames are), else the tail."""
    start = stderr.find("ERROR: AddressSanitizer")
    if start < 0:
        start = stderr.find("runtime error:")  # UBSan
    return stderr[max(0, start - 100) : start + 4000] if start >= 0 else stderr[-3000:]


def check_run(tmp_path: Path, made: Corpus, result: tuple[int, str, str]) -> None:
    code, stdout, stderr = result
    assert code == 0, f"exit code {code}; stderr: {stderr_excerpt(stderr)}"
    assert "Traceback" not in stderr, stderr[-3000:]
    out = tmp_path / "out.ndjson"
    written = records_of_output(out.read_bytes() if out.exists() else b"")
    difference = multiset_difference(written, made.records)
    assert difference == "", difference
    report = report_of(stdout)
    assert report["lost"] == "0", report
    assert int(report["produced"]) == int(report["processed"]) == len(made.records), report
    assert int(report["invalid"]) == len(made.too_long), report
    dead = tmp_path / "dead.ndjson"
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
    assert sorted(letter["size"] for letter in letters) == sorted(made.too_long), letters
    assert {letter["reason"] for letter in letters} <= {"too long"}, letters


RUNNERS = {"stdin": run_stdin, "file": run_file, "tcp": run_tcp}


def run_source(source: str, tmp_path: Path, sizes: str, made: Corpus) -> tuple[int, str, str]:
    if source == "tcp":
        return run_tcp(tmp_path, sizes, made.data, made.record_bytes)
    return RUNNERS[source](tmp_path, sizes, made.data)


@pytest.mark.parametrize("sizes", [name for name in SIZES if name != "one-worker"])
@pytest.mark.parametrize("source", list(RUNNERS))
def test_every_fitting_line_exactly_once(tmp_path, source, sizes):
    """The production-like corpus through each line source at each size: every fitting line once, oversized ones dead-lettered."""
    made = corpus(MAX_RECORD[sizes])
    check_run(tmp_path, made, run_source(source, tmp_path, sizes, made))


@pytest.mark.parametrize("source", list(RUNNERS))
def test_one_worker_writes_the_records_in_input_order(tmp_path, source):
    """With --max-workers 1 the output is the input's records in order (a tiny ring: thousands of batches)."""
    made = corpus(MAX_RECORD["one-worker"])
    result = run_source(source, tmp_path, "one-worker", made)
    check_run(tmp_path, made, result)
    written = records_of_output((tmp_path / "out.ndjson").read_bytes())
    first = next((i for i, (a, b) in enumerate(zip(written, made.records)) if a != b), None)
    assert first is None, f"out of order from record {first}"
    assert report_of(result[1])["peak_workers"] == "1"


@pytest.mark.parametrize("source", list(RUNNERS))
def test_control_corpus_without_long_records(tmp_path, source):
    """The same checks on a corpus whose records all fit a slot inline (no out-of-line records)."""
    made = corpus(1 << 20, long_records=False)
    check_run(tmp_path, made, run_source(source, tmp_path, "spec-defaults", made))


def test_corpus_is_what_the_docstring_says():
    """The corpus holds the kinds of lines the e2e tests rely on (a cheap check of the generator)."""
    made = corpus(1 << 20)
    lengths = [len(r) for r in made.records]
    assert 15_000 < len(made.records) < 30_000
    assert sum(60 <= n <= 300 for n in lengths) > 0.9 * len(lengths)
    assert sum(2048 <= n <= 8192 for n in lengths) > 0.005 * len(lengths)
    assert any(10_000 <= n <= 60_000 for n in lengths)
    for n in (1, 111, 112, 113, 1 << 20):
        assert n in lengths
    assert len(made.too_long) >= 3 and made.blank > 0
    assert b"\r\n" in made.data
    assert any(r.endswith(b"\r") for r in made.records)  # "a\r\r\n" keeps one \r
    assert any(b"\xff" in r or b"\xc3\x28" in r for r in made.records)
    assert not made.data.endswith(b"\n")  # the last line has no newline
    control = corpus(1 << 20, long_records=False)
    assert max(len(r) for r in control.records) <= 112
