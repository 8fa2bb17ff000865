"""Tests for logpipe.cli: flags, config files, --dry-run and validate (in process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from logpipe.cli import build_parser, format_config, main
from logpipe.domain.config import OPTIONS, PipelineConfig, build_config
from logpipe.exceptions import SinkError


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run main(argv) in process; return (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits for usage errors, --help, --version
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "logpipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


DURATION_RULE = "(use a number with a unit: ns, us/µs, ms, s, m, h; e.g. 100us, 500ms, 1s)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "10 parsecs"], f"--rate: '10 parsecs' is not a duration {DURATION_RULE}"),
        (["--batch-timeout", "5"], f"--batch-timeout: '5' is not a duration (missing unit; {DURATION_RULE[1:]}"),
        (["--channel-size", "ten"], "--channel-size: 'ten' is not an integer"),
        (["--scale-up", "high"], "--scale-up: 'high' is not a number"),
        (["--channel-size", "0"], "--channel-size: 0 is out of range (must be >= 1)"),
        (["--scale-up", "1.5"], "--scale-up: 1.5 is out of range (must be > 0 and <= 1)"),
        (["--scale-down-window", "0"], "--scale-down-window: 0 is out of range (must be >= 1)"),
        (["--scale-down-window", "3s"], "--scale-down-window: '3s' is not an integer"),
        (["--batch-timeout", "0"], "--batch-timeout: 0s is out of range (must be > 0s)"),
        (
            ["--duration", "0"],
            "--duration: 0s is out of range (must be > 0s; leave it unset to run until a signal)",
        ),
        (
            ["--scale-down", "0.8"],
            "--scale-down: 0.8 is not below --scale-up, which is 0.8 "
            "(must be 0 < scale-down < scale-up <= 1)",
        ),
        (
            ["--scale-up", "0.5", "--scale-down", "0.6"],
            "--scale-down: 0.6 is not below --scale-up, which is 0.5 "
            "(must be 0 < scale-down < scale-up <= 1)",
        ),
        (
            ["--min-workers", "5", "--max-workers", "2"],
            "--max-workers: 2 is below --min-workers, which is 5 (must be max-workers >= min-workers)",
        ),
        (["--sink", "kafka://x"], "--sink: unknown sink 'kafka://x' (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)"),
        (["--sink", "file:"], "--sink: 'file:' has no PATH (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)"),
        (["--source", "kafka://x"], "--source: unknown source 'kafka://x' (known: file:PATH, generator, nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME, stdin, tcp://HOST:PORT)"),
        (["--count"], "--count: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--dur", "1s"], "unrecognized arguments: --dur 1s"),  # no abbreviations
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_flag_is_one_line_and_exit_2(capsys, argv, message, dry_run):
    """Every bad flag value prints exactly one line, `logpipe: error: <flag>: <why>`, and exits 2."""
    extra = ["--dry-run"] if dry_run else []
    code, out, err = cli(capsys, "run", *extra, *argv)
    assert code == 2
    assert out == ""
    assert err == f"logpipe: error: {message}\n"


def test_missing_sink_directory_is_a_usage_error(capsys, tmp_path):
    """A file sink in a missing directory is reported before anything runs, exit 2."""
    path = tmp_path / "nowhere" / "out.ndjson"
    code, out, err = cli(capsys, "run", "--sink", f"file:{path}", "--count", "10")
    assert code == 2
    assert err == (
        f"logpipe: error: --sink: cannot open file:{path}: directory "
        f"{str(tmp_path / 'nowhere')!r} does not exist (logpipe does not create it)\n"
    )
    assert out == ""


def test_no_command_is_a_usage_error(capsys):
    """`logpipe` alone says to choose a command, on one line, exit 2."""
    code, out, err = cli(capsys)
    assert code == 2
    assert err == "logpipe: error: choose a command: run or validate (see logpipe --help)\n"


def test_unknown_command_is_one_line(capsys):
    """An unknown command is one line, exit 2."""
    code, _, err = cli(capsys, "launch")
    assert code == 2
    assert err.startswith("logpipe: error: ") and err.count("\n") == 1
    assert "'launch'" in err


def test_bad_value_in_a_real_process_is_one_line():
    """The installed command, not only main(): one line on stderr, nothing on stdout, exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "logpipe", "run", "--rate", "10 parsecs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"logpipe: error: --rate: '10 parsecs' is not a duration {DURATION_RULE}\n"


def test_help_lists_every_option(capsys):
    """`run --help` shows a flag for every entry of OPTIONS, plus --config and --dry-run."""
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0
    for option in OPTIONS:
        assert option.flag in out
    assert "--config" in out and "--dry-run" in out
    assert "file:PATH, nats://HOST:PORT/SUBJECT, null, stdout" in " ".join(out.split())


def test_parser_has_one_flag_per_option():
    """The run parser's destinations are exactly the options plus config and dry_run."""
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert {o.name for o in OPTIONS} | {"config", "dry_run", "command", "handler"} == set(vars(args))
    assert all(getattr(args, o.name) is None for o in OPTIONS)  # None = not given


def test_version(capsys):
    """--version prints the package version."""
    from logpipe import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out == f"logpipe {__version__}\n"


# --- --dry-run ----------------------------------------------------------------------


def dry_run_values(out: str) -> dict[str, str]:
    lines = out.splitlines()
    assert all(" = " in line for line in lines)
    return dict(line.lstrip("# ").split(" = ", 1) for line in lines)


def test_dry_run_prints_every_option_once(capsys):
    """--dry-run prints one `name = value` line per option, in OPTIONS order, and exits 0."""
    code, out, err = cli(capsys, "run", "--dry-run")
    assert (code, err) == (0, "")
    names = [line.lstrip("# ").split(" = ")[0] for line in out.splitlines()]
    assert names == [option.name for option in OPTIONS]
    values = dry_run_values(out)
    assert values["rate"] == '"100µs"'
    assert values["channel_size"] == "1500"
    assert values["batch_timeout"] == '"500ms"'
    assert values["scale_up"] == "0.8"
    assert values["sink"] == '"null"'
    assert values["verbose"] == "false"
    assert values["duration"] == "unset (run until a signal)"


def test_dry_run_shows_flags_over_the_config_file(capsys, tmp_path):
    """Flags override the file, the file overrides defaults."""
    config = write(tmp_path, 'channel_size = 64\nrate = "1ms"\nverbose = true\n')
    code, out, _ = cli(
        capsys, "run", "--config", str(config), "--rate", "0", "--no-verbose", "--dry-run"
    )
    assert code == 0
    values = dry_run_values(out)
    assert values["channel_size"] == "64"
    assert values["rate"] == '"0s"'
    assert values["verbose"] == "false"


def test_dry_run_output_is_a_config_file_for_the_same_run(capsys, tmp_path):
    """Saved as TOML, the --dry-run output gives back exactly the same configuration."""
    argv = [
        "--rate", "250us", "--channel-size", "777", "--scale-up", "0.7", "--scale-down", "0.1",
        "--duration", "1m30s", "--sink", f"file:{tmp_path}/o \"q\".ndjson", "--message", 'say "hi"\n',
        "--verbose",
    ]  # fmt: skip
    code, out, _ = cli(capsys, "run", "--dry-run", *argv)
    assert code == 0
    saved = write(tmp_path, out)
    tomllib.loads(out)  # valid TOML
    expected = PipelineConfig(
        rate=250e-6, channel_size=777, scale_up=0.7, scale_down=0.1, duration=90.0,
        sink=f"file:{tmp_path}/o \"q\".ndjson", message='say "hi"\n', verbose=True,
    )  # fmt: skip
    assert build_config(saved) == expected
    assert not (tmp_path / 'o "q".ndjson').exists()  # a dry run opens nothing


def test_format_config_of_defaults():
    """format_config(PipelineConfig()) starts with the spec's rate and queue size."""
    text = format_config(PipelineConfig())
    assert text.splitlines()[:2] == ['rate = "100µs"', "channel_size = 1500"]


# --- config files -------------------------------------------------------------------


def test_bad_config_file_is_one_line_exit_2(capsys, tmp_path):
    """A bad value in --config names the file and the key, exit 2."""
    config = write(tmp_path, 'batch_timeout = "soon"\n')
    code, out, err = cli(capsys, "run", "--config", str(config), "--dry-run")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"logpipe: error: {config}: batch_timeout: 'soon' is not a duration")


def test_unreadable_config_file(capsys, tmp_path):
    """A missing --config file is one line, exit 2."""
    missing = tmp_path / "nope.toml"
    code, _, err = cli(capsys, "run", "--config", str(missing))
    assert code == 2
    assert err.startswith(f"logpipe: error: {missing}: cannot read the file (")
    assert err.count("\n") == 1


def test_bad_sink_in_config_file_names_the_file(capsys, tmp_path):
    """An unknown sink from the file is reported against the file's key, not --sink."""
    config = write(tmp_path, 'sink = "kafka://x"\n')
    code, _, err = cli(capsys, "run", "--config", str(config), "--dry-run")
    assert code == 2
    assert err == (
        f"logpipe: error: {config}: sink: unknown sink 'kafka://x' (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)\n"
    )


def test_flag_fixes_a_config_file_rule(capsys, tmp_path):
    """A file's min_workers above the default max is fine once --max-workers raises the max."""
    config = write(tmp_path, "min_workers = 20\n")
    code, _, err = cli(capsys, "run", "--config", str(config), "--dry-run")
    assert code == 2
    assert "--max-workers: 10 is below --min-workers, which is 20" in err
    code, out, _ = cli(capsys, "run", "--config", str(config), "--max-workers", "30", "--dry-run")
    assert code == 0
    assert "min_workers = 20\nmax_workers = 30" in out


# --- validate -----------------------------------------------------------------------


def test_validate_good_file(capsys, tmp_path):
    """A good file: `<path>: config OK` on stdout, exit 0."""
    config = write(tmp_path, 'rate = "1ms"\nchannel-size = 100\nsink = "file:/tmp/x.ndjson"\n')
    code, out, err = cli(capsys, "validate", str(config))
    assert (code, out, err) == (0, f"{config}: config OK\n", "")


def test_validate_lists_every_problem(capsys, tmp_path):
    """Every problem is listed, one per line, on stderr; exit 1."""
    config = write(tmp_path, 'rate = "fast"\nchannel_size = 0\ncolour = "red"\n')
    code, out, err = cli(capsys, "validate", str(config))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{config}: rate: 'fast' is not a duration")
    assert lines[1] == f"{config}: channel_size: 0 is out of range (must be >= 1)"
    assert lines[2].startswith(f"{config}: colour: unknown key")


def test_validate_checks_rules_across_options(capsys, tmp_path):
    """scale_down >= scale_up in a file is reported by validate."""
    config = write(tmp_path, "scale_down = 0.9\n")
    code, _, err = cli(capsys, "validate", str(config))
    assert code == 1
    assert "scale_down: 0.9 is not below scale_up (default)" in err


def test_validate_checks_sink_and_source_specs(capsys, tmp_path):
    """An unknown sink or source in the file is a problem too."""
    config = write(tmp_path, 'sink = "kafka"\nsource = "udp://:1"\n')
    code, _, err = cli(capsys, "validate", str(config))
    assert code == 1
    assert err.splitlines() == [
        f"{config}: sink: unknown sink 'kafka' (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)",
        f"{config}: source: unknown source 'udp://:1' (known: file:PATH, generator, nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME, stdin, tcp://HOST:PORT)",
    ]


def test_validate_missing_file(capsys, tmp_path):
    """A missing file is a problem, exit 1."""
    code, _, err = cli(capsys, "validate", str(tmp_path / "nope.toml"))
    assert code == 1
    assert "cannot read the file" in err


def test_validate_needs_a_file(capsys):
    """`logpipe validate` without a file is a usage error."""
    code, _, err = cli(capsys, "validate")
    assert code == 2
    assert err == "logpipe: error: the following arguments are required: CONFIG\n"


# --- a short run in process ----------------------------------------------------------


def test_run_in_process_writes_the_count_and_restores_signal_handlers(capsys, tmp_path):
    """main(['run', '--count', ...]) returns 0, writes every record, and puts the old handlers back."""
    out_file = tmp_path / "out.ndjson"
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, out, err = cli(
        capsys, "run", "--count", "2000", "--rate", "0", "--sink", f"file:{out_file}"
    )
    assert code == 0, err
    assert "Program finished" in out and "lost=0" in out
    assert len(out_file.read_bytes().splitlines()) == 2000
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


class _CloseFails:
    """A sink whose final close (its fsync) fails."""

    def write_batch(self, batch) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        raise SinkError("file:/x: fsync failed (Input/output error)", retryable=False)


def test_sink_failure_exits_1_with_one_line(capsys, monkeypatch):
    """A sink that fails at the end of the run: one `logpipe: error:` line, exit 1."""
    import logpipe.cli

    monkeypatch.setattr(logpipe.cli, "open_sink", lambda spec, **kw: _CloseFails())
    code, _, err = cli(capsys, "run", "--count", "100", "--rate", "0")
    assert code == 1
    assert err == "logpipe: error: file:/x: fsync failed (Input/output error)\n"


def test_lost_records_exit_1(capsys, monkeypatch):
    """A report with lost > 0 makes the exit code 1."""
    import logpipe.application.pipeline as pipeline_module

    class LossyPipeline:
        draining = False

        def __init__(self, config, sink, **kwargs) -> None:
            pass

        def run(self):
            return SimpleNamespace(ok=False, lost=3)

    monkeypatch.setattr(pipeline_module, "Pipeline", LossyPipeline)
    code, _, _ = cli(capsys, "run", "--count", "100")
    assert code == 1
