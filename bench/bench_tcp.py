"""TCP -> file throughput: logpipe's TCP source against a naive pure-Python server.

    python bench/bench_tcp.py [--lines 2000000] [--connections 4] [--format raw|json|both]
                              [--mode pieces|pipeline] [--channel-size 16384] [--batch-size 1024]
                              [--repeat 3] [--dir DIR] [--senders threads|process]

The same pregenerated ~85-byte JSON lines (``--lines`` in all, split evenly
over ``--connections`` client connections, each sending its whole buffer
with ``sendall``) go, in the same run, through the sides below. The
senders are threads of this process (``--senders threads``, the default,
as in the rounds before issue 9's tenth), or threads of a child process
that is ready before each run's clock starts (``--senders process``: the
way real clients run, sharing only the CPUs; see :class:`Clients`).

* logpipe: ``TcpSource`` -> ``RingBuffer`` -> worker(s) -> ``FileSink``.
  ``--mode pieces`` (default) runs one writer thread doing
  ``get_batch`` + ``write_batch``; ``--mode pipeline`` runs the whole
  ``Pipeline`` (worker pool, autoscaler, metrics), as ``logpipe run
  --source tcp://... --sink file:OUT`` does.
* naive: ``socketserver.ThreadingTCPServer`` (one thread per connection,
  ``for line in rfile``, ``json.loads`` in json mode) -> ``queue.Queue``
  of the same capacity -> one thread writing each line to a buffered file.

* cat: the same bytes, first written to a file (untimed), then ``cat FILE >
  OUT``: the reference issue 9 names (coreutils copies
  inside the kernel). logpipe's line is given as a ratio of it too (goal:
  >= 0.7x). cat does not pay for the transfer over loopback, which here
  is on the same two CPUs as everything else: the senders' copies into
  the sockets and the receiver's copies out of them.
* recv+write: the physical work of TCP -> file with nothing else: the same
  senders, and per connection a thread doing ``recv_into`` a page-aligned
  256 KiB buffer (an anonymous mmap: the kernel's copy into a bytearray,
  16 bytes past a page boundary, is 2-3x slower here; see
  bench/read_alignment.py) and ``os.write`` of what came into one
  ``O_APPEND`` file (no framing, no lines: chunks of different
  connections interleave). This is
  "one read, one write" for a socket; logpipe's ratio to it is printed too.
* rsyslog (when ``rsyslogd`` is installed: Debian's 8.2302 here): the C
  engine the issue names, ``rsyslogd -n -f CONF -i PIDFILE`` with imtcp on
  a free port and omfile writing each message as received (``%rawmsg%``),
  plus mmjsonparse (``cookie=""``) with ``--format json``; started and
  listening before the clock starts, like the others.

Time runs from the first connection until the last line is in the output
file (page cache; no fsync on any side). Each output file is checked
for the right size, then deleted before the next run, which writes into
the memory it freed (these VMs hand memory freed a few seconds ago back
to the host, and writing into it again costs 2-3x: docs/benchmarks.md,
issue 9's eighth round). Each side runs ``--repeat`` times and its
fastest run is shown: noise here only ever adds time. ``--dir /dev/shm``
keeps the outputs in memory. Absolute numbers depend on the machine;
the ratio is what to read.
"""

from __future__ import annotations

import argparse
import io
import json
import mmap
import os
import queue
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from _rsyslog import AVAILABLE as rsyslog_available
from _rsyslog import Rsyslog

from logpipe import Closed, RingBuffer
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.infrastructure.deadletter import DeadLetter
from logpipe.infrastructure.sinks.file import FileSink
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.tcp import TcpSource, TcpSourceConfig

LINE_SIZE = 85  # bytes, newline included
MAX_LINE = 1 << 20
TIMEOUT = 600.0


def make_payloads(lines: int, connections: int) -> list[bytes]:
    """``connections`` buffers of newline-terminated JSON lines, LINE_SIZE bytes each."""
    prefix = b'{"level":"INFO","msg":"hello from tcp","ts":1712345678123456,"c":%d,"seq":'
    payloads = []
    per_conn, extra = divmod(lines, connections)
    for conn in range(connections):
        head = prefix % conn
        digits = LINE_SIZE - len(head) - 2  # '}' and '\n'
        assert len(str(per_conn)) <= digits, "too many lines per connection"
        fmt = head + b"%" + str(digits).encode() + b"d}\n"  # "seq":     42}: valid JSON
        count = per_conn + (1 if conn < extra else 0)
        payloads.append(b"".join(fmt % seq for seq in range(count)))
    assert all(len(p) % LINE_SIZE == 0 for p in payloads)
    return payloads


def send_all(address: tuple[str, int], payloads: list[bytes], errors: list[BaseException],
             timeout: float | None = TIMEOUT) -> list[threading.Thread]:
    """Start one thread per payload: connect, sendall, close; a thread's failure goes to ``errors``.

    ``timeout=None``: a blocking socket, whose ``sendall`` is one loop of
    ``send(2)`` in C, without a ``poll(2)`` before each send."""

    def send(payload: bytes) -> None:
        try:
            with socket.create_connection(address, timeout=timeout) as sock:
                sock.sendall(payload)
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=send, args=(p,), daemon=True) for p in payloads]
    for thread in threads:
        thread.start()
    return threads


class Clients:
    """The senders of one run: one connection per payload, each sent whole with ``sendall``.

    ``process=False`` (``--senders threads``, as in the rounds before issue 9's
    tenth): threads of this process, which share its GIL with the receiving
    side (``sendall`` takes it back between its sends). ``process=True``
    (``--senders process``): threads of one child process that builds its
    own copy of the payloads and is ready before the clock starts, the way
    real clients run, sharing only the CPUs.
    """

    def __init__(self, payloads: list[bytes], process: bool) -> None:
        self._payloads = payloads
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._child: subprocess.Popen[str] | None = None
        if process:
            lines = sum(len(p) for p in payloads) // LINE_SIZE
            here = os.path.dirname(os.path.abspath(__file__))
            code = f"import sys; sys.path.insert(0, {here!r}); import bench_tcp; " \
                   f"bench_tcp.child_sender({lines}, {len(payloads)})"
            self._child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
            assert self._child.stdout is not None
            if self._child.stdout.readline().strip() != "ready":
                raise SystemExit("the sender process did not start")

    def send(self, address: tuple[str, int]) -> None:
        """Connect and send every payload (the clock has started)."""
        if self._child is None:
            self._threads = send_all(address, self._payloads, self._errors)
            return
        assert self._child.stdin is not None
        self._child.stdin.write(f"{address[0]} {address[1]}\n")
        self._child.stdin.flush()

    def join(self) -> None:
        """Wait until every payload is sent."""
        for thread in self._threads:
            thread.join(TIMEOUT)
        if self._errors:
            raise SystemExit(f"a sender failed: {self._errors[0]}")
        if self._child is not None and self._child.wait(TIMEOUT) != 0:
            raise SystemExit(f"the sender process failed (exit {self._child.returncode})")


def child_sender(lines: int, connections: int) -> None:
    """The child of ``Clients(process=True)``: build the payloads, say ready, send them to the
    address read from stdin; exit 1 if a connection failed."""
    payloads = make_payloads(lines, connections)
    print("ready", flush=True)
    host, port = sys.stdin.readline().split()
    failed: list[BaseException] = []
    # No timeout: the parent's wait for this process bounds a run that hangs.
    for thread in send_all((host, int(port)), payloads, failed, timeout=None):
        thread.join(TIMEOUT)
    if failed:
        print(f"sender: {failed[0]}", file=sys.stderr)
        raise SystemExit(1)


def wait_for(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)


def check_output(path: str, expected_bytes: int, label: str) -> None:
    size = os.path.getsize(path)
    if size != expected_bytes:
        raise SystemExit(f"{label}: output has {size} bytes, expected {expected_bytes}")


# --- logpipe -------------------------------------------------------------------------


def logpipe_pieces(
    payloads: list[bytes], fmt: str, out: str, channel_size: int, batch_size: int, workdir: str,
    process_senders: bool = False,
) -> float:
    context = SourceContext(
        format=fmt,
        max_line=MAX_LINE,
        metrics=Metrics(),
        dead_letter=DeadLetter(os.path.join(workdir, "dead-letter.ndjson")),
        max_connections=max(256, len(payloads)),
    )
    source: TcpSource = TcpSourceConfig(port=0).build(context)
    ring = RingBuffer(channel_size, max_record_size=MAX_LINE)
    sink = FileSink(out, fsync=False)
    stop = threading.Event()
    total = sum(len(p) for p in payloads) // LINE_SIZE

    def write() -> None:
        while True:
            try:
                batch = ring.get_batch(batch_size, timeout=0.1)
            except Closed:
                return
            if len(batch):
                sink.write_batch(batch)

    source_thread = threading.Thread(target=source.run, args=(ring, stop), daemon=True)
    writer = threading.Thread(target=write, daemon=True)
    source_thread.start()
    writer.start()
    clients = Clients(payloads, process_senders)
    started = time.perf_counter()
    clients.send(source.address)
    clients.join()
    wait_for(lambda: source.records + source.invalid >= total, "logpipe to read every line")
    stop.set()
    source_thread.join(TIMEOUT)
    ring.close()
    writer.join(TIMEOUT)
    elapsed = time.perf_counter() - started
    sink.close()
    if source.invalid:
        raise SystemExit(f"logpipe rejected {source.invalid} lines")
    return elapsed


def logpipe_pipeline(
    payloads: list[bytes], fmt: str, out: str, channel_size: int, batch_size: int, workdir: str,
    process_senders: bool = False,
) -> float:
    from logpipe.application.pipeline import Pipeline
    from logpipe.domain.config import PipelineConfig

    config = PipelineConfig(
        channel_size=channel_size,
        batch_size=batch_size,
        batch_timeout=0.05,
        max_record_size=MAX_LINE,
        format=fmt,
    )
    context = SourceContext(
        format=fmt,
        max_line=MAX_LINE,
        metrics=Metrics(),
        dead_letter=DeadLetter(os.path.join(workdir, "dead-letter.ndjson")),
        max_connections=max(256, len(payloads)),
    )
    source = TcpSourceConfig(port=0).build(context)
    pipeline = Pipeline(config, FileSink(out, fsync=False), source=source, console=Console(io.StringIO()))
    total = sum(len(p) for p in payloads) // LINE_SIZE
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    clients = Clients(payloads, process_senders)
    started = time.perf_counter()
    clients.send(source.address)
    clients.join()
    wait_for(lambda: pipeline.metrics.processed.value >= total, "the pipeline to write every line")
    elapsed = time.perf_counter() - started
    pipeline.request_stop("benchmark done")
    runner.join(TIMEOUT)
    return elapsed


# --- the naive pipeline --------------------------------------------------------------


def naive(payloads: list[bytes], fmt: str, out: str, channel_size: int, process_senders: bool = False) -> float:
    lines: queue.Queue[bytes | None] = queue.Queue(channel_size)
    validate = fmt == "json"
    total = sum(len(p) for p in payloads) // LINE_SIZE
    written = [0]

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                if validate:
                    try:
                        json.loads(line)
                    except ValueError:
                        continue
                lines.put(line)

    def write() -> None:
        with open(out, "wb") as f:
            while (line := lines.get()) is not None:
                f.write(line + b"\n")
                written[0] += 1
                if written[0] == total:
                    f.flush()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    writer = threading.Thread(target=write, daemon=True)
    serving.start()
    writer.start()
    clients = Clients(payloads, process_senders)
    started = time.perf_counter()
    clients.send(server.server_address)
    clients.join()
    wait_for(lambda: written[0] >= total, "the naive pipeline to write every line")
    elapsed = time.perf_counter() - started
    server.shutdown()
    server.server_close()
    lines.put(None)
    writer.join(TIMEOUT)
    return elapsed


# --- the physical reference ----------------------------------------------------------


def best_of(repeat: int, once: Callable[[], float]) -> float:
    """The shortest of ``repeat`` runs: noise here only ever adds time."""
    return min(once() for _ in range(max(1, repeat)))


def checked(copy: Callable[[str], float], out: str, expected_bytes: int, label: str) -> float:
    """Run ``copy(out)``, check ``out`` holds every byte, delete it (the next run reuses its memory); the time."""
    seconds = copy(out)
    check_output(out, expected_bytes, label)
    os.unlink(out)
    return seconds


def cat_reference(payloads: list[bytes], workdir: str, repeat: int = 3) -> float:
    """Best of ``repeat`` ``cat FILE > OUT`` of the same bytes; the file is written first, untimed."""
    src = os.path.join(workdir, "cat-in.ndjson")
    with open(src, "wb") as f:
        for payload in payloads:
            f.write(payload)
    nbytes = os.path.getsize(src)

    def copy(out: str) -> float:
        started = time.perf_counter()
        with open(out, "wb") as f:
            subprocess.run(["cat", src], check=True, stdout=f)
        return time.perf_counter() - started

    best = best_of(repeat, lambda: checked(copy, os.path.join(workdir, "cat-out.ndjson"), nbytes, "cat"))
    os.unlink(src)
    return best


def recv_write(payloads: list[bytes], out: str, process_senders: bool = False) -> float:
    """Per connection a thread: recv_into a 256 KiB buffer, os.write it to one O_APPEND file."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def receive(conn: socket.socket) -> None:
        buffer = mmap.mmap(-1, 256 * 1024)  # page aligned
        view = memoryview(buffer)
        with conn:
            while n := conn.recv_into(view):
                os.write(fd, view[:n])

    def accept() -> None:
        for _ in payloads:
            conn, _addr = listener.accept()
            threading.Thread(target=receive, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    nbytes = sum(len(p) for p in payloads)
    clients = Clients(payloads, process_senders)
    started = time.perf_counter()
    clients.send(listener.getsockname())
    clients.join()
    wait_for(lambda: os.fstat(fd).st_size >= nbytes, "recv+write to write every byte")
    elapsed = time.perf_counter() - started
    acceptor.join(TIMEOUT)
    listener.close()
    os.close(fd)
    return elapsed


def rsyslog(payloads: list[bytes], fmt: str, out: str, workdir: str, process_senders: bool = False) -> float:
    """rsyslogd: imtcp -> [mmjsonparse] -> omfile, listening before the clock starts."""
    with socket.socket() as probe:  # a free port for imtcp
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    params = f'address="127.0.0.1" port="{port}"'
    with Rsyslog(workdir, "imtcp", params, out, json=fmt == "json") as daemon:

        def listening() -> bool:
            daemon.check_running()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, "rsyslogd to listen")
        nbytes = sum(len(p) for p in payloads)
        clients = Clients(payloads, process_senders)
        started = time.perf_counter()
        clients.send(("127.0.0.1", port))
        clients.join()
        wait_for(lambda: os.path.exists(out) and os.path.getsize(out) >= nbytes, "rsyslogd to write every line")
        return time.perf_counter() - started


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--format", choices=("raw", "json", "both"), default="both")
    parser.add_argument("--mode", choices=("pieces", "pipeline"), default="pieces")
    parser.add_argument("--channel-size", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--skip-naive", action="store_true", help="run logpipe only")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the fastest is shown (default 3)")
    parser.add_argument("--dir", default=None, help="where the output files go (default: the system's temp dir)")
    parser.add_argument("--senders", choices=("threads", "process"), default="threads",
                        help="the clients: threads of this process (default), or threads of a child process "
                             "made ready before the clock starts, as real clients are")
    args = parser.parse_args(argv)
    process = args.senders == "process"

    payloads = make_payloads(args.lines, args.connections)
    nbytes = sum(len(p) for p in payloads)
    formats = ("raw", "json") if args.format == "both" else (args.format,)
    print(
        f"TCP -> file: {args.lines:,} lines of {LINE_SIZE} bytes ({nbytes / 1e6:.0f} MB) over "
        f"{args.connections} connections; channel {args.channel_size}, batch {args.batch_size}, "
        f"logpipe mode {args.mode}, senders: {args.senders}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'pipeline':<28}{'seconds':>9}{'lines/s':>14}{'MB/s':>9}{'ratio':>9}{'vs cat':>8}"
          f"{'vs recv+write':>15}{'vs rsyslog':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-tcp-", dir=args.dir) as workdir:
        cat = cat_reference(payloads, workdir, args.repeat)
        print(f"{'cat FILE > OUT':<28}{cat:>9.2f}{args.lines / cat:>14,.0f}{nbytes / cat / 1e6:>9.0f}")
        physical = best_of(args.repeat, lambda: checked(
            lambda out: recv_write(payloads, out, process), os.path.join(workdir, "recv-write.ndjson"), nbytes, "recv+write"))
        print(f"{'recv+write (per connection)':<28}{physical:>9.2f}{args.lines / physical:>14,.0f}"
              f"{nbytes / physical / 1e6:>9.0f}")
        for fmt in formats:
            engine = None
            if rsyslog_available:
                engine = best_of(args.repeat, lambda: checked(
                    lambda out: rsyslog(payloads, fmt, out, workdir, process),
                    os.path.join(workdir, f"rsyslog-{fmt}.ndjson"), nbytes, f"rsyslog {fmt}"))
                print(f"{'rsyslog (' + fmt + ')':<28}{engine:>9.2f}{args.lines / engine:>14,.0f}"
                      f"{nbytes / engine / 1e6:>9.0f}")
            run = logpipe_pieces if args.mode == "pieces" else logpipe_pipeline
            fast = best_of(args.repeat, lambda: checked(
                lambda out: run(payloads, fmt, out, args.channel_size, args.batch_size, workdir, process),
                os.path.join(workdir, f"logpipe-{fmt}.ndjson"), nbytes, f"logpipe {fmt}"))
            slow = None
            if not args.skip_naive:
                slow = best_of(args.repeat, lambda: checked(
                    lambda out: naive(payloads, fmt, out, args.channel_size, process),
                    os.path.join(workdir, f"naive-{fmt}.ndjson"), nbytes, f"naive {fmt}"))
            for label, seconds in ((f"logpipe ({fmt})", fast), (f"naive Python ({fmt})", slow)):
                if seconds is None:
                    continue
                ours = label.startswith("logpipe")
                ratio = f"{slow / fast:.1f}x" if slow is not None and ours else ""
                vs_cat = f"{cat / seconds:.2f}x" if ours else ""
                vs_physical = f"{physical / seconds:.2f}x" if ours else ""
                vs_engine = f"{engine / seconds:.1f}x" if ours and engine is not None else ""
                print(
                    f"{label:<28}{seconds:>9.2f}{args.lines / seconds:>14,.0f}"
                    f"{nbytes / seconds / 1e6:>9.0f}{ratio:>9}{vs_cat:>8}{vs_physical:>15}{vs_engine:>12}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
