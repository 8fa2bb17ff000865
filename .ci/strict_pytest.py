"""pytest plugin for CI's extra steps (``-p strict_pytest``, .ci on PYTHONPATH).

A step whose tests were skipped, or that ran none, did not test what it
claims: it fails. (pytest already exits 5 when nothing was collected; this
also catches "collected, but every test deselected or skipped".)
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", []))
    passed = len(reporter.stats.get("passed", []))
    if skipped:
        reporter.ensure_newline()
        reporter.write_line(f"[ci] {skipped} test(s) skipped: CI runs every test, none may be skipped", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if passed == 0 and session.exitstatus == pytest.ExitCode.OK:
        reporter.ensure_newline()
        reporter.write_line("[ci] no test passed", red=True)
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
