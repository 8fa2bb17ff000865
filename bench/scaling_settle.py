"""Does the pool settle? The README's main command, run and timed line by line.

    python bench/scaling_settle.py [--runs 3] [--windows 1,3,6] [--pythonpath DIR]

Runs ``logpipe run --io-latency 20ms --load-duration 8s --duration 14s
--scale-interval 500ms`` once per run and per ``--scale-down-window`` value
(in turn, so the runs do not compete for the CPU), stamps every line it
prints, and reports for each run:

- ``steady``: scale events from 3 s to 8 s of the run, after the ramp-up
  (at 500 ms a step, 1 -> 5 workers takes 2 s) and before the load ends;
  a pool that settled has 0 here, a flapping one several;
- ``reversals``: how often the direction changed (UP after Down or Down
  after UP) while the load lasted;
- ``workers``: the pool at 3 s, at 8 s (the load ends) and at the end;
- ``last_down``: when the final scale-down came, in seconds of the run
  (must be before 14 s for the pool to be back at one worker).

Time 0 is one metrics interval before the first ``[METRICS]`` line (the
pipeline's start; the interpreter's start-up is left out). ``--pythonpath``
runs another checkout's ``src`` (e.g. the code before a change, with its
compiled modules beside it) for a side-by-side comparison; windows are then
not passed, since older code has no such flag. Not a test: the numbers
depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

COMMAND = ["run", "--io-latency", "20ms", "--load-duration", "8s", "--duration", "14s", "--scale-interval", "500ms"]
SCALE = re.compile(r"^Scaler: scaling (UP|Down), workers = (\d+)$")
STEADY = (3.0, 8.0)
LOAD_END = 8.0


def run_once(window: int | None, pythonpath: str | None) -> dict[str, object]:
    args = [sys.executable, "-m", "logpipe", *COMMAND]
    if window is not None:
        args += ["--scale-down-window", str(window)]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    stamped: list[tuple[float, str]] = []
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            stamped.append((time.monotonic(), line.rstrip("\n")))
    if child.returncode != 0:
        raise SystemExit(f"logpipe exited {child.returncode}: {stamped[-3:]}")
    first_metrics = next(t for t, line in stamped if line.startswith("[METRICS]"))
    origin = first_metrics - 1.0
    events = []  # (seconds into the run, direction, workers after)
    for t, line in stamped:
        match = SCALE.match(line)
        if match:
            events.append((t - origin, match[1], int(match[2])))

    def workers_at(second: float) -> int:
        return next((n for t, _, n in reversed(events) if t <= second), 1)

    during_load = [direction for t, direction, _ in events if t < LOAD_END]
    reversals = sum(a != b for a, b in zip(during_load, during_load[1:]))
    downs = [t for t, direction, _ in events if direction == "Down"]
    report = next(line for _, line in stamped if line.startswith("Report: "))
    return {
        "steady": sum(STEADY[0] <= t < STEADY[1] for t, _, _ in events),
        "reversals": reversals,
        "workers": f"{workers_at(STEADY[0])}/{workers_at(LOAD_END)}/{workers_at(1e9)}",
        "last_down": f"{downs[-1]:.1f}s" if downs else "-",
        "lost": re.search(r"lost=(\d+)", report)[1],
        "events": " ".join(f"{t:.1f}{'+' if d == 'UP' else '-'}{n}" for t, d, n in events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--windows", default="1,3,6", help="comma-separated --scale-down-window values")
    parser.add_argument("--pythonpath", help="run this src directory instead (no window flag)")
    parser.add_argument("--events", action="store_true", help="also print every scale event")
    args = parser.parse_args()
    windows: list[int | None] = [None] if args.pythonpath else [int(w) for w in args.windows.split(",")]
    print(f"{'window':>6} {'run':>3} {'steady':>6} {'reversals':>9} {'workers 3s/8s/end':>17} {'last_down':>9} {'lost':>4}")
    for window in windows:
        for run in range(1, args.runs + 1):
            result = run_once(window, args.pythonpath)
            label = "-" if window is None else str(window)
            print(
                f"{label:>6} {run:>3} {result['steady']:>6} {result['reversals']:>9} "
                f"{result['workers']:>17} {result['last_down']:>9} {result['lost']:>4}",
                flush=True,
            )
            if args.events:
                print(f"           {result['events']}", flush=True)


if __name__ == "__main__":
    main()
