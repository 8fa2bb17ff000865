"""A finite input ends its run as soon as it is delivered, not a batch timeout later.

When the source knows the input is over (the generator's ``--count``, a file
read ``--once``, stdin at EOF), the last partial batch is flushed at once:
the run closes the ring, and a worker's wait for more records ends the
moment the ring is drained. Each case below runs with a batch timeout of an
hour and a batch size larger than the input, so a run that waited for either
would hit the test's timeout instead of exiting; every record must be in the
file, once (two workers write side by side, so in any order).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from _support import logpipe_command, report_of

EXIT_TIMEOUT = 60  # far below the hour of --batch-timeout; a run that waits for it fails
RECORDS = 1_037  # not a multiple of any batch size used here
WAITING_ARGS = ["--batch-timeout", "1h", "--batch-size", "4096", "--rate", "0", "--min-workers", "2"]


def lines(count: int) -> bytes:
    """``count`` JSON lines of mixed length: short ones, KiB ones, one of 40 KiB."""
    out = []
    for seq in range(count):
        pad = "x" * (40_000 if seq == 500 else 1_500 if seq % 97 == 0 else seq % 13)
        out.append(orjson.dumps({"seq": seq, "pad": pad}))
    return b"\n".join(out) + b"\n"


def run_to_exit(args: list[str], stdin: bytes = b"") -> dict[str, str]:
    """Run to its exit (stdin, then EOF); fails if it outlasts EXIT_TIMEOUT."""
    try:
        done = subprocess.run(
            [*logpipe_command(), "run", *args, *WAITING_ARGS],
            input=stdin, capture_output=True, timeout=EXIT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_TIMEOUT}s after its input ended: it waited for the batch timeout")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = report_of(done.stdout.decode())
    assert report["lost"] == "0" and report["produced"] == report["processed"] == str(RECORDS), report
    return report


def delivered_seqs(path: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for line in path.read_bytes().splitlines()]


def test_generator_count_flushes_its_last_batch_at_once(tmp_path):
    """--count: the last partial batch is written when the count is reached, not an hour later."""
    out = tmp_path / "out.ndjson"
    run_to_exit(["--count", str(RECORDS), "--sink", f"file:{out}"])
    assert sorted(delivered_seqs(out)) == list(range(RECORDS))


def test_file_once_flushes_its_last_batch_at_once(tmp_path):
    """file --once: at the end of the file the pipeline drains and exits without waiting."""
    source, out = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    source.write_bytes(lines(RECORDS))
    run_to_exit(["--source", f"file:{source}", "--once", "--sink", f"file:{out}"])
    # Two workers write their batches side by side: the same lines, in any order.
    assert sorted(out.read_bytes().splitlines()) == sorted(source.read_bytes().splitlines())


@pytest.mark.parametrize("line_ending", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_stdin_eof_flushes_its_last_batch_at_once(tmp_path, line_ending):
    """stdin: EOF ends the run at once; CRLF lines arrive without their CR."""
    out = tmp_path / "out.ndjson"
    data = lines(RECORDS).replace(b"\n", line_ending)
    run_to_exit(["--source", "stdin", "--sink", f"file:{out}"], stdin=data)
    # One trailing CR is removed from each line (docs/sources.md).
    assert sorted(out.read_bytes().split(b"\n")[:-1]) == sorted(lines(RECORDS).split(b"\n")[:-1])
