"""Print the ring buffer benchmarks as markdown tables: records/s and ratio vs queue.Queue.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/report.py                      # run bench/ now, then report
    .venv/bin/python bench/report.py --json out.json      # run, keep the JSON, report
    .venv/bin/python bench/report.py --from out.json      # report an earlier run only
    .venv/bin/python bench/report.py --stat best          # fastest round instead of median

Every ratio compares two queues measured in the same run (the machine is
shared and noisy; only side-by-side ratios mean much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

GROUPS = {
    "S1": "S1: one thread, put+get per item",
    "S2": "S2: 1 producer -> 1 consumer thread, per item",
    "S3": "S3: 1 producer -> 4 consumer threads, per item",
    "S4": "S4: 1 producer -> 1 consumer thread, batches of 100",
}


def run_benchmarks(json_path: Path, extra: list[str]) -> None:
    """Run bench/ with pytest-benchmark, writing its JSON to json_path."""
    cmd = [sys.executable, "-m", "pytest", "bench/", "--benchmark-only",
           f"--benchmark-json={json_path}", "-q", *extra]
    print("$", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)
    if done.returncode != 0:
        sys.exit(f"benchmarks failed (pytest exit {done.returncode})")


def rate(bench: dict[str, Any], stat: str) -> float:
    """Records per second of one benchmark, from its stats and its record count."""
    n = bench["extra_info"]["records"]
    seconds = bench["stats"]["min" if stat == "best" else "median"]
    return n / seconds


def fmt_rate(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    return f"{v / 1e3:.0f} k"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def tables(data: dict[str, Any], stat: str) -> str:
    """Markdown: one table per group, fastest first, ratios against queue.Queue."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        by_group.setdefault(b["group"], []).append(b)

    # The per-item queue.Queue of S2 is the second yardstick of S4 (the
    # targets say "x queue.Queue" without saying batched or not).
    s2_ref = next((rate(b, stat) for b in by_group.get("S2", []) if b["extra_info"].get("reference")), None)

    out = []
    for group in sorted(by_group):
        rows = sorted(by_group[group], key=lambda b: rate(b, stat), reverse=True)
        ref = next((rate(b, stat) for b in rows if b["extra_info"].get("reference")), None)
        with_s2 = group == "S4" and s2_ref is not None
        out.append(f"### {GROUPS.get(group, group)}\n")
        head = "| queue | records/round | records/s | vs queue.Queue |"
        rule = "|---|---:|---:|---:|"
        if with_s2:
            head += " vs per-item queue.Queue (S2) |"
            rule += "---:|"
        out += [head, rule]
        for b in rows:
            r = rate(b, stat)
            line = (f"| {b['extra_info']['queue']} | {b['extra_info']['records']:,} | {fmt_rate(r)} | "
                    f"{fmt_ratio(r / ref if ref else None)} |")
            if with_s2:
                line += f" {fmt_ratio(r / s2_ref)} |"
            out.append(line)
        out.append("")
    return "\n".join(out)


def machine(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or _cpu_model()
    line = (f"Machine: {cpu}, {info.get('nproc', os.cpu_count())} CPUs, "
            f"Python {info.get('python_version', sys.version.split()[0])} "
            f"({info.get('python_implementation', '')}); run {data.get('datetime', '?')}")
    ring = info.get("logpipe_ringbuf")
    if ring:
        line += f"\nRing buffer build: _ringbuf .so sha256 {ring['sha256']}, built {ring['built']}"
        if ring.get("warning"):
            line += f" (WARNING: {ring['warning']})"
    if "loadavg_at_end" in info:
        line += "; load average at the end of the run: " + " ".join(f"{x:.2f}" for x in info["loadavg_at_end"])
    return line


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", type=Path, help="report this pytest-benchmark JSON; run nothing")
    p.add_argument("--json", type=Path, help="where to keep the JSON of the run made now")
    p.add_argument("--stat", choices=["median", "best"], default="median",
                   help="round time to turn into records/s (default: median)")
    args, extra = p.parse_known_args(argv)

    if args.source:
        path = args.source
    else:
        path = args.json or Path(tempfile.mkstemp(prefix="logpipe-bench-", suffix=".json")[1])
        run_benchmarks(path.resolve(), extra)
    data = json.loads(path.read_text())
    print(machine(data))
    print(f"records/s = records per round / {args.stat} round time\n")
    print(tables(data, args.stat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
