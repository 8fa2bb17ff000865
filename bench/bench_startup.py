"""Start-up time of `logpipe run` on a one-line file, against the interpreter's own start-up.

    python bench/bench_startup.py [--runs 20] [--src DIR ...] [--bytecode]

Times, wall clock from spawn to exit, ``--runs`` rounds of

* floor: ``python -c pass`` (the interpreter and site, nothing of logpipe);
* logpipe: ``logpipe run --source file:ONE_LINE --once --rate 0 --sink file:OUT``
  (the console script beside the interpreter, else ``python -m logpipe``),
  its output checked each time.

The commands are interleaved, round by round (in a rotating order), so a
noisy neighbour slows them alike. Reported: each command's median and
interquartile range, and logpipe minus the floor: the difference of the
medians and the median of the per-round differences.

``--src DIR`` (repeatable) times the logpipe of a source tree instead of the
installed one (``PYTHONPATH=DIR``, which comes before the editable install),
each as a variant of its own in the same rounds: a before/after comparison
is ``--src /tmp/base/src --src src``, where /tmp/base/src is the base
commit's ``src/`` (``git archive BASE src | tar -x -C /tmp/base``) with
compiled extensions of the same Cython sources copied into its logpipe/
(``cp src/logpipe/*.so /tmp/base/src/logpipe/``).

By default the children inherit PYTHONDONTWRITEBYTECODE (set on the
project's machines: every run then compiles logpipe's sources);
``--bytecode`` unsets it for them, so the sources are compiled once (in a
warm-up run) and read from __pycache__ after that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORD = '{"msg": "hello", "level": "INFO", "seq": 1}\n'


def logpipe_command() -> list[str]:
    script = Path(sys.executable).with_name("logpipe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "logpipe"]


def time_once(command: list[str], env: dict[str, str], out: Path | None) -> float:
    if out is not None:
        out.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
    if out is not None and out.read_text() != RECORD:
        raise SystemExit(f"{' '.join(command)}: wrong output in {out}")
    return wall


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--src", action="append", default=[], metavar="DIR",
                        help="time the logpipe of this source tree (repeatable; default: the installed one)")
    parser.add_argument("--bytecode", action="store_true",
                        help="unset PYTHONDONTWRITEBYTECODE for the children (sources compiled once)")
    args = parser.parse_args()

    base_env = dict(os.environ)
    if args.bytecode:
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        source = Path(tmp, "one.ndjson")
        source.write_text(RECORD)
        out = Path(tmp, "out.ndjson")
        run_args = ["run", "--source", f"file:{source}", "--once", "--rate", "0", "--sink", f"file:{out}"]

        # (label, command, env, output file to check)
        commands: list[tuple[str, list[str], dict[str, str], Path | None]] = [
            ("floor: python -c pass", [sys.executable, "-c", "pass"], base_env, None)
        ]
        if not args.src:
            commands.append(("logpipe run (installed)", logpipe_command() + run_args, base_env, out))
        for src in args.src:
            env = {**base_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(src).resolve()), base_env.get("PYTHONPATH")]))}
            commands.append((f"logpipe run ({src})", logpipe_command() + run_args, env, out))

        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"PYTHONDONTWRITEBYTECODE {'unset' if args.bytecode else repr(base_env.get('PYTHONDONTWRITEBYTECODE'))}, "
              f"{args.runs} rounds")
        for _, command, env, check in commands:  # warm-up: the OS's caches, __pycache__ with --bytecode
            time_once(command, env, check)
        times: list[list[float]] = [[] for _ in commands]
        for round_no in range(args.runs):
            shift = round_no % len(commands)
            for i in [*range(shift, len(commands)), *range(shift)]:
                _, command, env, check = commands[i]
                times[i].append(time_once(command, env, check))

    floor = times[0]
    width = max(len(label) for label, *_ in commands)
    print(f"{'command':<{width}}  median ms  (IQR)          minus floor: medians  per round")
    for (label, *_), values in zip(commands, times):
        q1, median, q3 = quartiles(values)
        line = f"{label:<{width}}  {median * 1e3:9.1f}  ({q1 * 1e3:.1f}-{q3 * 1e3:.1f})"
        if values is not floor:
            diff = median - statistics.median(floor)
            paired = statistics.median(a - b for a, b in zip(values, floor))
            line = f"{line:<{width + 30}}  {diff * 1e3:20.1f}  {paired * 1e3:9.1f}"
        print(line)
    if len(commands) == 3:
        over = [statistics.median(a - b for a, b in zip(v, floor)) for v in times[1:]]
        print(f"{commands[2][0]} / {commands[1][0]}: {statistics.median(times[2]) / statistics.median(times[1]):.2f}x "
              f"the wall time, {over[1] / over[0]:.2f}x the time over the floor")


if __name__ == "__main__":
    main()
