"""LogpipeHandler from logging.config.dictConfig and under structlog, and the name ``logging`` inside logpipe."""

from __future__ import annotations

import ast
import logging
import logging.config
import sys
from pathlib import Path

import pytest
import structlog

import logpipe
import logpipe.logging as logpipe_logging
from logpipe.logging import LogpipeHandler

from logging_handler.conftest import read_lines


def test_dict_config(tmp_path: Path) -> None:
    """dictConfig builds the handler from "class": "logpipe.logging.LogpipeHandler" with its
    keyword arguments (a duration string included), level and filters applied as usual."""
    out = tmp_path / "app.ndjson"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "pipe": {
                "class": "logpipe.logging.LogpipeHandler",
                "sink": f"file:{out}",
                "when_full": "drop",
                "capacity": 4096,
                "batch_timeout": "50ms",
                "level": "INFO",
                "sigterm": False,
            },
        },
        "loggers": {"dictconfig-app": {"handlers": ["pipe"], "level": "DEBUG", "propagate": False}},
    })
    logger = logging.getLogger("dictconfig-app")
    (handler,) = logger.handlers
    try:
        assert isinstance(handler, LogpipeHandler) and handler.when_full == "drop"
        logger.debug("not at the handler's level")
        logger.info("configured %s", "by dict", extra={"request_id": "r-1"})
    finally:
        logger.removeHandler(handler)
        handler.close()
    (line,) = read_lines(out)
    assert (line["msg"], line["level"], line["extra"]) == ("configured by dict", "INFO", {"request_id": "r-1"})


def test_dict_config_bad_value_names_it(tmp_path: Path) -> None:
    """A bad handler argument in a dictConfig fails with dictConfig's error, caused by our one line."""
    with pytest.raises(ValueError, match="Unable to configure handler 'pipe'") as caught:
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"pipe": {"class": "logpipe.logging.LogpipeHandler", "sink": f"file:{tmp_path / 'x'}",
                                  "when_full": "sometimes", "sigterm": False}},
        })
    assert str(caught.value.__cause__).startswith("LogpipeHandler: when_full 'sometimes' is not one of")


@pytest.fixture
def structlog_to_stdlib():
    """structlog routed into the standard library (its stdlib integration); reset after."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.render_to_log_kwargs,  # event -> msg, the rest -> extra
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_structlog_key_values_become_extra(tmp_path: Path, make_logger, structlog_to_stdlib) -> None:
    """structlog's bound and context variables arrive as the line's extra fields, its event as msg,
    its exceptions as exc."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    stdlib_logger = make_logger(handler)
    structlog.contextvars.bind_contextvars(request_id="5f1c")
    log = structlog.get_logger(stdlib_logger.name).bind(user=42)
    log.info("user logged in", method="password")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("division failed")
    handler.close()
    login, failure = read_lines(out)
    assert login["msg"] == "user logged in" and login["logger"] == stdlib_logger.name
    assert login["extra"] == {"request_id": "5f1c", "user": 42, "method": "password"}
    assert failure["level"] == "ERROR" and failure["exc"].endswith("ZeroDivisionError: division by zero")


def test_structlog_processor_formatter(tmp_path: Path, make_logger) -> None:
    """With structlog's ProcessorFormatter as the handler's formatter, msg is what it rendered."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.KeyValueRenderer(
            key_order=["event"])],
    ))
    logger = make_logger(handler)
    logger.info("plain stdlib call")
    handler.close()
    (line,) = read_lines(out)
    assert line["msg"] == "event='plain stdlib call'"


def test_logging_inside_logpipe_is_the_standard_library() -> None:
    """No logpipe module binds the name ``logging`` to logpipe.logging: the handler module's own
    ``logging`` is the standard library, and no source imports ``logging`` from logpipe."""
    assert logpipe_logging.logging is sys.modules["logging"]
    assert logpipe_logging.LogpipeHandler.__mro__[1] is sys.modules["logging"].Handler
    source_root = Path(logpipe.__file__).parent
    offenders = []
    for path in source_root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and any(alias.name == "logging" for alias in node.names):
                if node.level > 0 or (node.module or "").startswith("logpipe"):
                    offenders.append(f"{path.relative_to(source_root)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(
                alias.name == "logpipe.logging" and alias.asname == "logging" for alias in node.names
            ):
                offenders.append(f"{path.relative_to(source_root)}:{node.lineno}")
    assert offenders == []


def test_import_logpipe_stays_light() -> None:
    """``import logpipe`` does not import the handler (or the pipeline) until it is asked for;
    logpipe.LogpipeHandler is the same class, loaded on first use."""
    import subprocess

    code = (
        "import sys, logpipe; heavy = [m for m in ('logpipe.logging', 'logpipe.application') if m in sys.modules];"
        "print(heavy); from logpipe import LogpipeHandler; import logpipe.logging as l;"
        "print(LogpipeHandler is l.LogpipeHandler)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\nTrue\n"
