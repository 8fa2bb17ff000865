"""Where a file source remembers how far its input has been written.

One small JSON file per input path in the state directory, named after a
hash of the path's absolute form (``file-source-3f2a9c0d1b4e5f67.json``)::

    {"path": "/var/log/app.log", "device": 2049, "inode": 1311, "offset": 81920}

``device`` and ``inode`` say which file the offset belongs to: after a
rotation the same path names another file, and an offset into the old one
means nothing in the new one.

Writes are atomic: the new content goes to a temporary file in the same
directory, is fsynced, and replaces the old file with ``os.replace`` (then
the directory is fsynced, so the rename itself survives a power cut). A
reader, or a restart after ``kill -9`` at any instant, sees the old
checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os

import orjson

from logpipe.domain.records import frozen

__all__ = ["Checkpoint", "CheckpointStore", "state_file_name"]


@frozen
class Checkpoint:
    """A position in one file: every byte before ``offset`` has been written.

    Attributes:
        path: the input path (for people reading the state file).
        device: ``st_dev`` of the file the offset belongs to.
        inode: ``st_ino`` of that file.
        offset: bytes of that file whose lines have all been delivered.
    """

    path: str
    device: int
    inode: int
    offset: int

    def same_file(self, st: os.stat_result) -> bool:
        """Whether ``st`` describes the file this checkpoint belongs to."""
        return (st.st_dev, st.st_ino) == (self.device, self.inode)


def state_file_name(path: str) -> str:
    """The state file's name for input ``path`` (its absolute form, hashed)."""
    import hashlib  # only runs with a state directory pay for it (~3 ms)

    digest = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return f"file-source-{digest[:16]}.json"


class CheckpointStore:
    """Loads and saves the checkpoint of one input path.

    Args:
        state_dir: the directory (created on the first save if missing).
        path: the input path the checkpoint is about.

    Attributes:
        file: the state file's path.
        problem: why the last :meth:`load` found nothing usable although a
            state file exists (unreadable, not JSON, fields missing); None
            otherwise. The source then starts from the beginning, which
            may duplicate lines but never skips any.
    """

    def __init__(self, state_dir: str, path: str) -> None:
        self.state_dir = state_dir
        self.input_path = os.path.abspath(path)
        self.file = os.path.join(state_dir, state_file_name(path))
        self.problem: str | None = None

    def load(self) -> Checkpoint | None:
        """The saved checkpoint, or None (none saved yet, or unusable: see :attr:`problem`)."""
        self.problem = None
        try:
            with open(self.file, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problem = f"cannot read {self.file}: {exc.strerror or exc}"
            return None
        try:
            data = orjson.loads(raw)
            checkpoint = Checkpoint(
                path=str(data["path"]),
                device=_natural(data["device"]),
                inode=_natural(data["inode"]),
                offset=_natural(data["offset"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.problem = f"{self.file} is not a valid checkpoint ({exc})"
            return None
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the saved checkpoint atomically and durably.

        Raises:
            OSError: the state directory cannot be created or written.
        """
        os.makedirs(self.state_dir, exist_ok=True)
        payload = orjson.dumps(
            {
                "path": checkpoint.path,
                "device": checkpoint.device,
                "inode": checkpoint.inode,
                "offset": checkpoint.offset,
            }
        )
        tmp = f"{self.file}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.state_dir)


def _natural(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _fsync_dir(directory: str) -> None:
    # Makes the rename durable; some filesystems refuse fsync on a directory.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
