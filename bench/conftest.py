"""Configuration for the benchmarks in bench/ (run explicitly, never by plain `pytest`).

pyproject.toml sets ``testpaths = ["tests"]``, so a plain ``pytest`` never
collects this directory; run it by naming it:

    .venv/bin/python -m pytest bench/ --benchmark-only

pyproject's addopts include ``--import-mode=importlib``, which does not put a
test's directory on sys.path; this conftest does it for bench/, so the
benchmark modules can ``import baselines``. logpipe itself is imported from
the installed (built) package, as in tests/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# LOGPIPE_BENCH_ONE_CPU=1 pins the run to one CPU before logpipe is
# imported (the ring decides at import whether lingering for the GIL can
# help: not on one CPU), to measure what a one-CPU container gets.
if os.environ.get("LOGPIPE_BENCH_ONE_CPU") == "1":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

_BENCH_DIR = str(Path(__file__).resolve().parent)
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

from baselines import make_records, ringbuf_build  # noqa: E402

#: The largest number of records any benchmark round moves.
MAX_RECORDS = 200_000


@pytest.fixture(scope="session")
def records() -> list[bytes]:
    """200,000 distinct 70-byte records, built once (outside every timing)."""
    return make_records(MAX_RECORDS)


_BUILD_AT_START = ringbuf_build()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Name the exact ring buffer build and the machine's load in the JSON.

    The core changes often and the machine is shared, so a table is only
    meaningful next to the build it measured and the load it ran under. If the
    .so on disk changed during the run (a rebuild), say so: the loaded module
    is the one from the start, but the numbers may not match either.
    """
    build = dict(_BUILD_AT_START)
    if ringbuf_build()["sha256"] != build["sha256"]:
        build["warning"] = "the .so on disk was rebuilt during this run"
    machine_info["logpipe_ringbuf"] = build
    machine_info["loadavg_at_end"] = os.getloadavg()
    machine_info["nproc"] = os.cpu_count()
