"""Tests for logpipe.infrastructure.exporters.report_json and `logpipe run --report-json PATH`.

The file must hold exactly what the run reported (Report.as_dict, with the
loss ledger), be written whole, and a path it cannot be written to must be
a one-line error before the run starts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from logpipe.exceptions import ConfigError
from logpipe.infrastructure.exporters import check_report_path, write_report_json
from logpipe.infrastructure.sinks import NullSink

LOGPIPE = [sys.executable, "-m", "logpipe"]
TIMEOUT = 60

LEDGER_KEYS = {
    "received", "produced", "delivered", "in_ring", "in_batches", "dropped", "dropped_by_reason",
    "invalid", "undelivered", "difference", "collecting_max", "balanced", "exact",
}


def test_a_run_s_report_is_written_as_json_with_its_ledger(background, tmp_path) -> None:
    """After a real run the file parses to report.as_dict(): every counter, rate, ok and the ledger's terms."""
    run, _ = background(NullSink(), rate=0, count=30_000)
    report = run.finish(stop=False)
    path = tmp_path / "report.json"
    write_report_json(report, path)
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.as_dict()))
    assert data["produced"] == data["processed"] == 30_000
    assert data["lost"] == 0 and data["ok"] is True and data["reason"] == "source finished"
    assert data["rate"] == pytest.approx(report.rate)
    assert set(data["ledger"]) == LEDGER_KEYS
    assert data["ledger"]["received"] == data["ledger"]["delivered"] == 30_000
    assert data["ledger"]["balanced"] is True and data["ledger"]["exact"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_an_existing_report_is_replaced_whole(background, tmp_path) -> None:
    """Writing over a longer file leaves only the new JSON (no tail of the old one)."""
    path = tmp_path / "report.json"
    path.write_text("x" * 100_000)
    run, _ = background(NullSink(), rate=0, count=100)
    write_report_json(run.finish(stop=False), path)
    assert json.loads(path.read_text())["produced"] == 100


@pytest.mark.parametrize("where", ["missing/report.json", "."])
def test_a_path_that_cannot_be_written_is_one_line_naming_the_flag(tmp_path, where) -> None:
    """A missing directory or a directory as the path: ConfigError '--report-json: cannot write PATH (...)'."""
    path = str(tmp_path / where)
    with pytest.raises(ConfigError) as caught:
        check_report_path(path)
    message = str(caught.value)
    assert message.startswith(f"--report-json: cannot write {path} (") and "\n" not in message


def test_writing_fails_with_one_line_when_the_directory_vanished(background, tmp_path) -> None:
    """An OS error at write time is a ConfigError naming the flag and path, not a traceback."""
    run, _ = background(NullSink(), rate=0, count=10)
    report = run.finish(stop=False)
    path = tmp_path / "gone" / "r.json"
    with pytest.raises(ConfigError, match=r"^--report-json: cannot write .*gone/r\.json \(No such file or directory\)$"):
        write_report_json(report, path)


def test_the_command_writes_the_report_it_prints(tmp_path) -> None:
    """`logpipe run --count 20000 --rate 0 --report-json F`: F's numbers are the Report line's, ok, exit 0."""
    path = tmp_path / "out" / "report.json"
    path.parent.mkdir()
    done = subprocess.run(
        [*LOGPIPE, "run", "--count", "20000", "--rate", "0", "--report-json", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert path.exists(), "no report file (is --report-json wired in cli.py?)"
    data = json.loads(path.read_text())
    line = next(l for l in done.stdout.splitlines() if l.startswith("Report: "))
    printed = dict(re.findall(r"(\w+)=(\d+)(?:\s|$)", line))
    for key in ("produced", "processed", "dropped", "invalid", "lost", "backpressure_sleeps",
                "scale_ups", "scale_downs", "sink_errors", "peak_workers"):
        assert data[key] == int(printed[key]), key
    assert data["produced"] == 20_000 and data["ok"] is True
    assert data["ledger"]["exact"] is True and data["ledger"]["delivered"] == 20_000


def test_the_command_refuses_an_unwritable_report_path_before_running(tmp_path) -> None:
    """`--report-json` into a missing directory: exit 2 with one error line, and no run."""
    path = tmp_path / "missing" / "r.json"
    done = subprocess.run(
        [*LOGPIPE, "run", "--count", "100", "--report-json", str(path)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr == f"logpipe: error: --report-json: cannot write {path} (no directory {path.parent})\n"
    assert "Program finished" not in done.stdout
