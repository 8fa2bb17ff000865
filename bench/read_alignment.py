"""How the address of a read buffer changes the kernel's copy into it.

    python bench/read_alignment.py [--mb 400] [--repeat 5] [--dir /dev/shm]

Reads one file of --mb MB (made once, in --dir: tmpfs by default, so no
disk is involved and the copy is the whole cost) with ``os.readv`` in
256 KiB reads, the sources' chunk size, into windows of one page-aligned
buffer that start 0, 1, 8, 16, 31, 32, 64 and 4095 bytes past the page, and into
a plain ``bytearray`` as malloc places it; then receives the same number of
bytes over a loopback TCP connection with ``recv_into``, aligned and 16
bytes off. Last, the other direction: ``os.write`` of 256 KiB pieces from
the aligned buffer into a file in --dir, the file's offset 0, 8, 16, 31,
64 and 4080 bytes ahead of the buffer's place in its page (a sink's
write). Medians of --repeat runs, in one run, each as a ratio to the
aligned window.

On this project's AMD EPYC machines (Linux 6.18, ``rep movsb`` with FSRM)
a destination 1 to 31 bytes past a page boundary (where the source, a page
of the page cache, starts) made the file copy 3-4x slower, and a 256 KiB
bytearray sits 16 bytes past one; which is why the sources read into
``logpipe.infrastructure.sources._lines.ReadBuffer``. A write has the
same window (the page cache's page is then the destination): 1.7-2x the
time when the file's offset is 1 to 31 bytes ahead of the buffer's. The
file sink writes each batch from the batch's own buffer, and the file's
offset moves on by every batch's size, so a write lands there 31 times in
4,096 at random; in three traced runs of 2,440 writes each, never (docs/benchmarks.md, issue
9's eighth round).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

from logpipe._framing import aligned_offset
from logpipe.infrastructure.sources._lines import CHUNK_SIZE, ReadBuffer

OFFSETS = (0, 1, 8, 16, 31, 32, 64, 4095)


def read_file(path: str, window: memoryview) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        while os.readv(fd, (window,)):
            pass
        return time.perf_counter() - start
    finally:
        os.close(fd)


WRITE_LEADS = (0, 8, 16, 31, 64, 4080)


def write_file(directory: str | None, total: int, window: memoryview, lead: int) -> float:
    """Write ``total`` bytes from ``window`` to a new file whose offset is ``lead`` bytes ahead of it in the page."""
    with tempfile.TemporaryFile(dir=directory) as handle:
        fd = handle.fileno()
        os.write(fd, bytes(lead))  # untimed: puts the file offset `lead` bytes into its page
        start = time.perf_counter()
        for _ in range(total // len(window)):
            os.write(fd, window)
        return time.perf_counter() - start


def receive(total: int, window: memoryview) -> float:
    with socket.create_server(("127.0.0.1", 0)) as server:
        payload = b"x" * (1 << 20)

        def send() -> None:
            with socket.create_connection(server.getsockname()) as out:
                left = total
                while left > 0:
                    left -= out.send(payload[: min(left, len(payload))])

        sender = threading.Thread(target=send)
        sender.start()
        conn, _ = server.accept()
        with conn:
            start = time.perf_counter()
            while conn.recv_into(window):
                pass
            elapsed = time.perf_counter() - start
        sender.join(timeout=60)
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()

    total = args.mb << 20
    aligned = ReadBuffer(CHUNK_SIZE + 8192)
    windows = {f"page + {offset}": aligned.view[offset : offset + CHUNK_SIZE] for offset in OFFSETS}
    plain = bytearray(CHUNK_SIZE)
    past_page = -aligned_offset(plain, 4096) % 4096
    windows[f"bytearray (page + {past_page})"] = memoryview(plain)

    with tempfile.NamedTemporaryFile(dir=args.dir) as handle:
        block = (b"x" * 87 + b"\n") * (1 << 14)
        for _ in range(total // len(block) + 1):
            handle.write(block)
        handle.flush()
        file_times = {name: [] for name in windows}
        for _ in range(args.repeat):  # interleaved, so drift hits every window alike
            for name, window in windows.items():
                file_times[name].append(read_file(handle.name, window))

    tcp_windows = {name: windows[name] for name in ("page + 0", "page + 16")}
    tcp_times = {name: [] for name in tcp_windows}
    for _ in range(args.repeat):
        for name, window in tcp_windows.items():
            tcp_times[name].append(receive(total, window))

    write_times: dict[str, list[float]] = {f"file offset + {lead}": [] for lead in WRITE_LEADS}
    for _ in range(args.repeat):
        for lead in WRITE_LEADS:
            write_times[f"file offset + {lead}"].append(write_file(args.dir, total, windows["page + 0"], lead))

    print(f"python {sys.version.split()[0]}, {args.mb} MB, reads of {CHUNK_SIZE >> 10} KiB, "
          f"medians of {args.repeat}")
    tables = (("file (os.readv)", file_times), ("TCP loopback (recv_into)", tcp_times),
              ("write from page + 0 (os.write)", write_times))
    for title, times in tables:
        first = next(iter(times))
        base = statistics.median(times[first])
        print(f"\n{title:<30} {'GB/s':>7}  time vs {first}")
        for name, runs in times.items():
            median = statistics.median(runs)
            print(f"{name:<30} {total / median / 1e9:7.2f} {median / base:16.2f}x")


if __name__ == "__main__":
    main()
