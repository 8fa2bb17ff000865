"""`logpipe run` imports the heavy optional modules only for the features that use them.

asyncio and nats-py (the NATS sink and source), prometheus_client
(``--metrics-addr``), rich (``--ui`` and the input progress bar) and numpy
(the generator) cost some 15-70 ms each at start-up. Each test runs the command through its
real entry point (``logpipe._entry.main``, as the console script does) in a
fresh interpreter and reads the names in ``sys.modules`` once it returns.
The second group shows that the same probe does see each module when its
feature is used, so the first group cannot pass for want of looking.

The same goes for lighter standard modules and for logpipe's own: a file
run loads neither the other sinks and sources nor the checkpoint store.
The last group checks the entry point's use of the garbage collector.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

HEAVY = ("asyncio", "nats", "numpy", "prometheus_client", "rich")

# Lighter, but together ~25 ms of every start-up when they were imported
# whatever the run: the TCP source's socket and select, the NATS specs'
# urllib.parse and ipaddress, the state file's hashlib, the TOML loader,
# difflib (error hints), tempfile and shutil (the JSON report; argparse's
# default help width).
# Then decimal (a duration other than 0: ~1.5 ms), random (the jitter of
# a retried write: ~1 ms), and orjson with what its import loads (datetime,
# uuid, platform: ~10-15 ms), which only the dead letter (a rejected line),
# RingBuffer.put_objects and the generator use.
# And dataclasses, with the inspect it imports (~15 ms with the code it
# generated per class): logpipe's value classes are frozen records
# (logpipe.domain.records), which need neither.
LIGHT = (
    "dataclasses", "inspect", "json",
    "datetime", "decimal", "difflib", "hashlib", "ipaddress", "orjson", "platform", "random", "select",
    "shutil", "socket", "tempfile", "tomllib", "urllib", "uuid",
)  # fmt: skip

# logpipe's own modules that a file run to a file has no use for: the other
# sinks (the null and stdout sinks' modules cost ~0.5-1 ms each, mostly their
# frozen dataclasses), the checkpoint store (--state-dir), the other sources
# (the generator's spec and producer, with its compiled encoder, too), the
# exporters (--report-json, --metrics-addr), the views drawn with rich, the
# logging handler.
NOT_FOR_A_FILE_RUN = (
    "logpipe.application.producer",
    "logpipe._encoder",
    "logpipe.infrastructure.sinks.null",
    "logpipe.infrastructure.sinks.stdout",
    "logpipe.infrastructure.sinks.nats",
    "logpipe.infrastructure.sinks.nats_config",
    "logpipe.infrastructure.sources.checkpoint_store",
    "logpipe.infrastructure.sources.generator",
    "logpipe.infrastructure.sources.stdin",
    "logpipe.infrastructure.sources.tcp",
    "logpipe.infrastructure.sources.nats",
    "logpipe.infrastructure.sources.nats_config",
    "logpipe.infrastructure.exporters",
    "logpipe.infrastructure.exporters.prometheus",
    "logpipe.infrastructure.exporters.report_json",
    "logpipe.infrastructure.ui.live",
    "logpipe.infrastructure.ui.progress",
    "logpipe.logging",
)

# Runs `logpipe ARGS...` in-process through the entry point, then writes the
# names of the imported modules (a package's and its submodules') to
# MODULES_FILE, one per line (written without json, which is one of the
# modules checked).
_PROBE = """
import sys
modules_file, args = sys.argv[1], sys.argv[2:]
sys.argv = ["logpipe", *args]
from logpipe._entry import main
code = main()
names = sorted(sys.modules)
with open(modules_file, "w") as out:
    out.write("\\n".join(names))
sys.exit(code)
"""


def _imported(tmp_path: Path, args: list[str], *, tty: bool = False) -> tuple[int, set[str], str]:
    """Run ``logpipe ARGS``; return its exit code, the modules it imported, its stderr.

    The modules are full names (``logpipe.infrastructure.sinks.file``); a
    package is there with its submodules (``urllib`` with ``urllib.parse``).

    With ``tty`` its stdout is a pseudo-terminal (TERM=xterm), so the
    terminal UI may draw.
    """
    modules_file = tmp_path / "modules.json"
    command = [sys.executable, "-c", _PROBE, str(modules_file), *args]
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    if not tty:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        code, err = done.returncode, done.stderr
    else:
        master, slave = pty.openpty()
        drawn = bytearray()

        def drain() -> None:  # keep the terminal's buffer from filling up
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    return
                if not chunk:
                    return
                drawn.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            process = subprocess.Popen(command, stdout=slave, stderr=subprocess.PIPE, text=True, env=env)
        finally:
            os.close(slave)
        try:
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
            reader.join(5)
            os.close(master)
        code = process.returncode
    modules = set(modules_file.read_text().split("\n")) if modules_file.exists() else set()
    return code, modules, err


@pytest.fixture
def one_line(tmp_path: Path) -> Path:
    path = tmp_path / "in.ndjson"
    path.write_text('{"msg": "hello"}\n')
    return path


def _file_run(source: Path, tmp_path: Path, *extra: str, sink: str | None = None) -> list[str]:
    """``run --source file:SOURCE --once --rate 0 --sink file:TMP/out.ndjson EXTRA...`` (or ``--sink SINK``)."""
    sink = sink or f"file:{tmp_path / 'out.ndjson'}"
    return ["run", "--source", f"file:{source}", "--once", "--rate", "0", "--sink", sink, *extra]


# --- not used: not imported ----------------------------------------------------------


def test_a_file_run_imports_none_of_the_optional_modules(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path))
    assert code == 0, err
    assert (tmp_path / "out.ndjson").read_text() == '{"msg": "hello"}\n'
    assert "logpipe" in modules  # the probe saw the run's imports
    assert sorted(modules.intersection(HEAVY)) == []


def test_a_file_run_imports_none_of_the_light_modules_it_does_not_use(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path))
    assert code == 0, err
    assert "logpipe" in modules
    assert sorted(modules.intersection(LIGHT)) == []


def test_a_file_run_imports_none_of_the_other_components(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path))
    assert code == 0, err
    assert "logpipe.infrastructure.sinks.file" in modules  # the probe sees logpipe's modules
    assert sorted(modules.intersection(NOT_FOR_A_FILE_RUN)) == []


def test_a_file_run_with_a_report_imports_none_of_them(tmp_path: Path, one_line: Path) -> None:
    report = tmp_path / "report.json"
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, "--report-json", str(report)))
    assert code == 0, err
    assert json.loads(report.read_text())
    assert sorted(modules.intersection(HEAVY)) == []
    assert "logpipe.infrastructure.exporters.report_json" in modules


def test_a_nats_spec_is_parsed_without_asyncio(tmp_path: Path) -> None:
    """--dry-run parses the NATS sink's and source's specs: the config classes are light."""
    args = [
        "run", "--dry-run",
        "--source", "nats://127.0.0.1:4222/in?stream=LOGS&durable=d",
        "--sink", "nats://127.0.0.1:4222/out?mode=batch",
    ]  # fmt: skip
    code, modules, err = _imported(tmp_path, args)
    assert code == 0, err
    assert sorted(modules.intersection(HEAVY)) == []


def test_an_unknown_scheme_still_lists_the_nats_specs(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, sink="kafka://x"))
    assert code == 2
    assert "nats://HOST:PORT/SUBJECT" in err
    assert sorted(modules.intersection(HEAVY)) == []


# --- used: imported ------------------------------------------------------------------


def test_metrics_addr_imports_prometheus_client(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, "--metrics-addr", "127.0.0.1:0"))
    assert code == 0, err
    assert "prometheus_client" in modules
    assert sorted(modules.intersection(HEAVY) - {"prometheus_client"}) == []


def test_a_nats_sink_imports_asyncio_and_nats(tmp_path: Path, one_line: Path) -> None:
    """Port 1 has no server: the sink fails to connect, after importing its client."""
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, sink="nats://127.0.0.1:1/logs"))
    assert code == 2, err
    assert "--sink:" in err
    assert {"asyncio", "nats"} <= modules


def test_a_nats_source_imports_asyncio_and_nats(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    args = ["run", "--source", "nats://127.0.0.1:1/logs?durable=d", "--sink", f"file:{out}"]
    code, modules, err = _imported(tmp_path, args)
    assert code == 2, err
    assert "--source:" in err
    assert {"asyncio", "nats"} <= modules


def test_the_light_modules_are_imported_by_the_features_that_use_them(tmp_path: Path, one_line: Path) -> None:
    """--config loads tomllib, --report-json tempfile and json, --state-dir hashlib and the checkpoint
    store, a duration other than 0 decimal, a TCP source socket."""
    config = tmp_path / "logpipe.toml"
    config.write_text("batch_size = 10\n")
    extra = [
        "--config", str(config), "--report-json", str(tmp_path / "r.json"), "--state-dir", str(tmp_path),
        "--batch-timeout", "100ms",
    ]  # fmt: skip
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, *extra))
    assert code == 0, err
    assert {"tomllib", "tempfile", "json", "hashlib", "decimal",
            "logpipe.infrastructure.sources.checkpoint_store"} <= modules
    code, modules, err = _imported(tmp_path, ["run", "--source", "tcp://127.0.0.1:1", "--dry-run"])
    assert code == 0, err
    assert "socket" in modules


def test_orjson_is_imported_by_the_first_rejected_line(tmp_path: Path) -> None:
    """A file run whose only line is not JSON writes it to the dead letter, which loads orjson."""
    bad = tmp_path / "bad.ndjson"
    bad.write_text("not json\n")
    extra = ["--format", "json", "--state-dir", str(tmp_path)]
    code, modules, err = _imported(tmp_path, _file_run(bad, tmp_path, *extra))
    assert code == 0, err
    assert "orjson" in modules
    assert b"not json" in (tmp_path / "dead-letter.ndjson").read_bytes()


def test_put_objects_imports_orjson() -> None:
    """RingBuffer.put_objects loads orjson on its first call, not with the ring."""
    probe = (
        "import sys; from logpipe import RingBuffer; ring = RingBuffer(4); before = 'orjson' in sys.modules; "
        "ring.put_objects([{'a': 1}]); print(before, 'orjson' in sys.modules, ring.get())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", """b'{"a":1}'"""]


@pytest.mark.parametrize("sink", ["null", "stdout"])
def test_the_null_and_stdout_sinks_are_imported_when_named(tmp_path: Path, one_line: Path, sink: str) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, sink=sink))
    assert code == 0, err
    assert f"logpipe.infrastructure.sinks.{sink}" in modules


# Runs a pipeline whose sink fails its first write, and prints whether random
# (the retry's jitter) was imported before the run and after it.
_FAILING_WRITE = """
import sys
from logpipe.application.pipeline import Pipeline
from logpipe.domain.config import PipelineConfig

class OneRecord:
    name = "one"
    def run(self, ring, stop):
        ring.put(b'{"msg": "hello"}')

class FailsOnce:
    writes = 0
    def write_batch(self, batch):
        self.writes += 1
        if self.writes == 1:
            raise OSError("disk full, once")
    def flush(self): pass
    def close(self): pass

before = "random" in sys.modules
report = Pipeline(PipelineConfig(sink="null"), FailsOnce(), source=OneRecord()).run()
print(before, "random" in sys.modules, report.lost)
"""


def test_random_is_imported_by_a_failed_write() -> None:
    done = subprocess.run([sys.executable, "-c", _FAILING_WRITE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["False", "True", "0"]


def test_the_generator_imports_numpy(tmp_path: Path) -> None:
    code, modules, err = _imported(tmp_path, ["run", "--count", "10", "--rate", "0", "--sink", "null"])
    assert code == 0, err
    assert {"numpy", "logpipe.infrastructure.sources.generator", "logpipe.application.producer"} <= modules
    assert sorted(modules.intersection(HEAVY) - {"numpy"}) == []


def test_a_progress_bar_on_a_terminal_imports_rich(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path), tty=True)
    assert code == 0, err
    assert "rich" in modules
    assert sorted(modules.intersection(HEAVY) - {"rich"}) == []


def test_ui_on_a_terminal_imports_rich(tmp_path: Path) -> None:
    code, modules, err = _imported(tmp_path, ["run", "--count", "10", "--rate", "0", "--sink", "null", "--ui"], tty=True)
    assert code == 0, err
    assert "rich" in modules


def test_ui_off_a_terminal_does_not_import_rich(tmp_path: Path, one_line: Path) -> None:
    code, modules, err = _imported(tmp_path, _file_run(one_line, tmp_path, "--ui"))
    assert code == 0, err
    assert "not a terminal" in err
    assert "rich" not in modules


# --- the garbage collector -----------------------------------------------------------

# Reports, from inside the run and after main() returned, whether the
# collector is on and how many objects are frozen.
_GC_PROBE = """
import gc, json, sys
sys.argv = ["logpipe", *json.loads(sys.argv[1])]
from logpipe.application.pipeline import Pipeline
seen = []
run = Pipeline.run
def watched(self):
    seen.append((gc.isenabled(), gc.get_freeze_count()))
    return run(self)
Pipeline.run = watched
from logpipe._entry import main
code = main()
seen.append((gc.isenabled(), gc.get_freeze_count()))
print(json.dumps(seen))
sys.exit(code)
"""


def test_the_collector_runs_during_the_run_and_is_frozen_at_the_end(tmp_path: Path, one_line: Path) -> None:
    """The entry point pauses it only while importing the command (what the imports made is
    frozen), then freezes everything once the command is over."""
    args = json.dumps(_file_run(one_line, tmp_path))
    done = subprocess.run([sys.executable, "-c", _GC_PROBE, args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (running, during), (after_on, after) = json.loads(done.stdout.splitlines()[-1])
    assert running and after_on  # the collector is on during the run, and left on
    assert 0 < during < after  # the imports' objects frozen, then everything


# --- numpy's BLAS threads ---------------------------------------------------------------

# After a generator run (which imports numpy): the BLAS variables, and the
# native threads of the process against the Python threads still alive (a
# thread the run joined may take a moment to leave /proc: given up to WAIT s).
_BLAS_PROBE = """
import json, os, sys, threading, time
deadline = time.monotonic() + float(sys.argv[1])
sys.argv = ["logpipe", "run", "--count", "1000", "--rate", "0", "--sink", "null"]
from logpipe._blas import BLAS_THREAD_VARIABLES
from logpipe._entry import main
code = main()
while len(os.listdir("/proc/self/task")) > threading.active_count() and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({
    "numpy": "numpy" in sys.modules,
    "variables": {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES},
    "native_threads": len(os.listdir("/proc/self/task")),
    "python_threads": threading.active_count(),
}))
sys.exit(code)
"""


def _blas_probe(wait: float, **preset: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", _BLAS_PROBE, str(wait)], capture_output=True, text=True,
                          timeout=60, env={**env, **preset})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: BLAS starts no thread of its own anyway")
def test_a_generator_run_starts_no_blas_threads() -> None:
    """numpy's BLAS would start a spinning thread per further CPU: the entry point asks for one
    BLAS thread (the caller's), so the process has no native thread Python does not know of."""
    seen = _blas_probe(wait=5.0)
    assert seen["numpy"]  # the generator imported it
    assert set(seen["variables"].values()) == {"1"}
    assert seen["native_threads"] == seen["python_threads"]


def test_the_users_blas_setting_is_kept() -> None:
    seen = _blas_probe(wait=0.0, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="3")
    assert seen["variables"] == {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
