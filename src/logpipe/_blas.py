"""One BLAS thread for the ``logpipe`` command: numpy's would only spin.

The generator builds its columns with numpy (``arange``, ``full``), and
importing numpy starts its BLAS library's thread pool: one thread per
further CPU, which spins for a while waiting for work that logpipe, doing
no linear algebra, never gives it. On the project's 2-CPU VM that thread
took ~13% of a generator run's CPU samples, next to the two threads doing
the work, and ``logpipe run --rate 0`` moved ~1.16x more records a second
without it (docs/benchmarks.md, issue 9's thirteenth round).

:func:`limit_blas_threads` asks for a single BLAS thread through the
environment variables the BLAS libraries read when numpy loads them, each
only if the user has not set it. The entry point calls it for the
command's own process; a program that imports logpipe as a library keeps
its own settings (nothing here runs on import).
"""

from __future__ import annotations

import os

__all__ = ["BLAS_THREAD_VARIABLES", "limit_blas_threads"]

#: OpenBLAS (numpy's wheels), OpenMP builds of it, and MKL (conda's numpy).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """Ask for one BLAS thread where the environment does not say; call before numpy is imported."""
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
