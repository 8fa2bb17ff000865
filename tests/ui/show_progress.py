"""Show an InputProgress on the terminal for about a second (for test_progress; not a test module).

A fake input of 8 MiB is "read" at a steady pace in 1.2 s while four status
lines are written through the bar's stream; then the bar stops and one more
line is printed.
"""

from __future__ import annotations

import sys
import time

from logpipe.infrastructure.ui import InputProgress

TOTAL = 8 * 1024 * 1024
SECONDS = 1.2


def main() -> int:
    start = time.monotonic()
    bar = InputProgress(TOTAL, lambda: min(TOTAL, int((time.monotonic() - start) / SECONDS * TOTAL)))
    bar.start()
    for i in range(4):
        bar.stream.write(f"status line {i}\n")
        time.sleep(SECONDS / 4)
    bar.stop()
    print(f"after the bar: completed={bar.completed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
