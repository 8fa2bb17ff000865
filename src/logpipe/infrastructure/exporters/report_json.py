"""``--report-json PATH``: the final report as JSON, for scripts and CI.

The file holds :meth:`Report.as_dict <logpipe.application.pipeline.Report.as_dict>`:
every counter of the report, ``rate``, ``ok``, and ``ledger`` with each term
of the loss ledger and whether it balanced. It is written whole or not at
all (a temporary file renamed over the path), so a reader never sees half a
report.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

from logpipe.exceptions import ConfigError

__all__ = ["check_report_path", "write_report_json"]

FLAG = "--report-json"


class _Report(Protocol):
    def as_dict(self) -> dict[str, object]: ...


def check_report_path(path: str | os.PathLike[str]) -> None:
    """Fail early, before a run, if the report could not be written there.

    Raises:
        ConfigError: ``--report-json: cannot write PATH (why)``.
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        raise ConfigError(f"{FLAG}: cannot write {target} (it is a directory)")
    if not os.path.isdir(folder):
        raise ConfigError(f"{FLAG}: cannot write {target} (no directory {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{FLAG}: cannot write {target} (directory {folder} is not writable)")


def write_report_json(report: _Report, path: str | os.PathLike[str]) -> None:
    """Write ``report.as_dict()`` to ``path`` as indented JSON, atomically.

    Raises:
        ConfigError: ``--report-json: cannot write PATH (why)``, on any OS error.
    """
    import tempfile  # with shutil, ~4 ms: only runs that write a report pay for it

    target = os.fspath(path)
    text = json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n"
    folder = os.path.dirname(os.path.abspath(target))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json.tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ConfigError(f"{FLAG}: cannot write {target} ({exc.strerror or exc})") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
