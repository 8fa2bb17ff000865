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
medians and the median of the per-round differences; then the same for the
CPU time each process used (user + system, from the kernel's accounting of
the child), which a busy neighbour disturbs less than the wall clock but
which leaves out what the process waited for (an fsync, a thread's wake-up).

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
import resource
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


def cpu_of_children() -> float:
    """User + system seconds of the children waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(command: list[str], env: dict[str, str], out: Path | None) -> tuple[float, float]:
    """The command's wall time and CPU time, in seconds."""
    if out is not None:
        out.unlink(missing_ok=True)
    cpu = cpu_of_children()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    cpu = cpu_of_children() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
    if out is not None and out.read_text() != RECORD:
        raise SystemExit(f"{' '.join(command)}: wrong output in {out}")
    return wall, cpu


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
        walls: list[list[float]] = [[] for _ in commands]
        cpus: list[list[float]] = [[] for _ in commands]
        for round_no in range(args.runs):
            shift = round_no % len(commands)
            for i in [*range(shift, len(commands)), *range(shift)]:
                _, command, env, check = commands[i]
                wall, cpu = time_once(command, env, check)
                walls[i].append(wall)
                cpus[i].append(cpu)

    labels = [label for label, *_ in commands]
    report("wall", labels, walls)
    report("CPU (user + system)", labels, cpus)


def report(what: str, labels: list[str], times: list[list[float]]) -> None:
    """Each command's median and IQR of ``times``, and what it takes over the floor (the first)."""
    floor = times[0]
    width = max(len(label) for label in labels)
    print(f"{what + ':':<{width}}  median ms  (IQR)          minus floor: medians  per round")
    for label, values in zip(labels, times):
        q1, median, q3 = quartiles(values)
        line = f"{label:<{width}}  {median * 1e3:9.1f}  ({q1 * 1e3:.1f}-{q3 * 1e3:.1f})"
        if values is not floor:
            diff = median - statistics.median(floor)
            paired = statistics.median(a - b for a, b in zip(values, floor))
            line = f"{line:<{width + 30}}  {diff * 1e3:20.1f}  {paired * 1e3:9.1f}"
        print(line)
    if len(labels) == 3:
        over = [statistics.median(a - b for a, b in zip(v, floor)) for v in times[1:]]
        print(f"{labels[2]} / {labels[1]}: {statistics.median(times[2]) / statistics.median(times[1]):.2f}x "
              f"the {what}, {over[1] / over[0]:.2f}x over the floor")


if __name__ == "__main__":
    main()
