"""Type stubs for the compiled batch encoder (logpipe._encoder)."""

import numpy as np
import numpy.typing as npt

from logpipe._ringbuf import RingBuffer

def encode_logs(
    seqs: npt.NDArray[np.uint64], ts: npt.NDArray[np.int64], msg_json: bytes, level_json: bytes
) -> bytes: ...
def put_logs(
    ring: RingBuffer,
    seqs: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    msg_json: bytes,
    level_json: bytes,
    timeout: float | None = None,
) -> int: ...
