"""What every line source does around the Cython line framer.

The framer (:class:`logpipe._framing.LineFramer`) splits bytes into lines,
validates them and pushes the records into the ring without the GIL. Around
it a source must still: keep leaving the ring's waits often enough to see
its stop signal, send rejected lines to the dead letter and count them, and
know how many records it has pushed and how many input bytes they account
for. :class:`LineInput` does exactly that, for one input stream.
"""

from __future__ import annotations

from collections.abc import Callable

from logpipe._framing import LineFramer, aligned_offset
from logpipe.domain.ports import Ring, StopFlag
from logpipe.infrastructure.sources.context import SourceContext

__all__ = ["CHUNK_SIZE", "PUSH_SLICE", "READ_ALIGNMENT", "LineInput", "ReadBuffer"]

# One read(2) per chunk, framed in one call. The framer's thread takes the
# GIL back after each read and each framing, and while a worker holds it
# (through its batch writes) that thread waits until the ring runs dry:
# each chunk costs one stall of the pipeline, ~30 context switches. At the
# spec's defaults 1 MiB chunks made a file -> file run 1.2x faster than
# 256 KiB ones (19k -> 5k context switches for 2 M lines; larger chunks
# gained no more), and no slower with tuned batches (docs/benchmarks.md,
# issue 9's eleventh round). 1 MiB is also the L2 cache of our machines.
CHUNK_SIZE = 1024 * 1024
# The longest a push waits on a full ring before the stop signal is checked.
PUSH_SLICE = 0.01
#: Where a ReadBuffer's first byte lies: on a page boundary.
READ_ALIGNMENT = 4096


class ReadBuffer:
    """A reused buffer for ``read(2)``, its first byte page aligned.

    The kernel copies file and socket data out of pages that start on a
    4 KiB boundary, with ``rep movsb`` on x86. On this project's AMD EPYC
    machines that copy crawls when the destination lies 1 to 31 bytes
    past the source's place in its page (store and load addresses alias
    within the page), and a 256 KiB bytearray always lies 16 bytes past a
    page boundary (malloc maps it and puts its own header first): reading
    a 439 MB file from tmpfs into one took 0.21-0.24 s, into a page-aligned
    buffer 0.07 s (``bench/read_alignment.py`` reruns it). In ``logpipe
    run --source file:... --once`` that copy was 60% of the reading
    thread's time. So the sources read into :attr:`view`, a window of a
    slightly larger bytearray that starts on a page boundary (the window
    pins the bytearray: it can never be resized or moved).

    Args:
        size: bytes one read may fill (``len(view)``).
    """

    __slots__ = ("_storage", "view")

    def __init__(self, size: int) -> None:
        self._storage = bytearray(size + READ_ALIGNMENT - 1)
        start = aligned_offset(self._storage, READ_ALIGNMENT)
        self.view = memoryview(self._storage)[start : start + size]

    def __len__(self) -> int:
        return len(self.view)


class LineInput:
    """One input stream's framer, with stop checks and rejected-line reporting.

    Args:
        ring: where records go.
        context: format (``json`` validates), max_line, metrics, dead_letter.
        spec: the source spec rejected lines are filed under (``file:PATH``).
        progress: called after every call into the framer (a file source
            notes its checkpoint marks there), also while the ring is full.
    """

    def __init__(
        self,
        ring: Ring,
        context: SourceContext,
        spec: str,
        *,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.framer = LineFramer(ring, max_line=context.max_line, validate_json=context.format == "json")
        self._context = context
        self._spec = spec
        self._progress = progress
        self._invalid = 0  # framer.invalid already added to metrics.invalid

    @property
    def records(self) -> int:
        """Records pushed into the ring so far."""
        return int(self.framer.records)

    @property
    def consumed(self) -> int:
        """Input bytes fully accounted for: their lines are pushed, rejected or blank."""
        return int(self.framer.consumed)

    @property
    def closed(self) -> bool:
        """Whether a push found the ring closed."""
        return bool(self.framer.closed)

    def feed(self, data: bytes | memoryview, stop: StopFlag) -> bool:
        """Frame ``data`` and push its complete lines, waiting while the ring is full.

        The framer copies what it keeps (a partial line, lines the ring had no
        room for), so ``data`` may be reused once this returns.

        Returns:
            True once every complete line is pushed (or rejected); False if
            ``stop`` was set or the ring closed first, the rest being held
            by the framer (a later :meth:`feed` or :meth:`finish` resumes).
        """
        framer = self.framer
        framer.feed(data, timeout=PUSH_SLICE)
        # pending_lines, not pending: that one counts a held partial line too.
        while framer.pending_lines:
            self.report()
            if stop.is_set() or framer.closed:
                return False
            framer.feed(b"", timeout=PUSH_SLICE)
        self.report()
        return True

    def read_from(self, fd: int, buffer: memoryview, stop: StopFlag, *, once: bool = False) -> tuple[int, bool]:
        """Read ``fd`` into ``buffer`` and push the complete lines, waiting while the ring is full.

        The framer reads and frames chunk after chunk without the GIL
        (``LineFramer.feed_from``) for up to ``PUSH_SLICE`` while reads fill
        ``buffer`` (``once``: one read), so a busy worker holding the GIL
        never keeps this thread from its next read: between chunks it used
        to wait for the GIL twice, and the ring ran dry meanwhile.

        Returns:
            (bytes read, True once every complete line is pushed); 0 bytes
            read means the end of the input. False as with :meth:`feed`: the
            rest is held by the framer.

        Raises:
            OSError: the read failed.
        """
        framer = self.framer
        n = framer.feed_from(fd, buffer, timeout=PUSH_SLICE, once=once)
        while framer.pending_lines:
            self.report()
            if stop.is_set() or framer.closed:
                return n, False
            framer.feed(b"", timeout=PUSH_SLICE)
        self.report()
        return n, True

    def finish(self, stop: StopFlag | None = None) -> bool:
        """Push what is held, a final line without newline included (end of input).

        Args:
            stop: checked between waits on a full ring; None waits until
                everything is pushed.

        Returns:
            True if everything was pushed; False if stopped or the ring closed.
        """
        framer = self.framer
        framer.finish(timeout=PUSH_SLICE)
        while framer.pending_lines:
            self.report()
            if framer.closed or (stop is not None and stop.is_set()):
                return False
            framer.finish(timeout=PUSH_SLICE)
        self.report()
        return True

    def report(self) -> None:
        """Note progress; send lines rejected since the last call to the dead letter and count them."""
        if self._progress is not None:
            self._progress()
        # The framer's count, not len(rejected): past its limit of waiting
        # rejections it keeps counting lines it no longer keeps.
        invalid = int(self.framer.invalid)
        rejected = self.framer.take_rejected()
        if invalid != self._invalid:
            self._context.metrics.invalid.add(invalid - self._invalid)
            self._invalid = invalid
        dead_letter = self._context.dead_letter
        for reason, line, size in rejected:
            dead_letter.reject(self._spec, reason, line, size)
