"""Build the Cython extensions.

Build switches (environment variables, read when the extensions are built,
so ``LOGPIPE_SANITIZE=address pip install '.[test]'`` works; pip passes the
environment through to its isolated build):

LOGPIPE_DEBUG=1
    A debug build: Cython annotations (HTML next to each .pyx), line tracing
    for coverage and profilers, and C asserts left on.

LOGPIPE_PORTABLE=1
    No SIMD intrinsics: the JSON validator's SSE2 string and digit scans are
    replaced by the portable SWAR code that other CPUs compile
    (``logpipe._framing.SIMD`` is then False). .ci/run builds one of its
    extra interpreters' venvs this way, so the portable code is tested too.

LOGPIPE_SANITIZE=address
    AddressSanitizer plus UndefinedBehaviorSanitizer: every extension is
    compiled and linked with ``-fsanitize=address,undefined
    -fno-omit-frame-pointer -O1 -g``, C asserts left on (no NDEBUG). The
    interpreter itself is not instrumented, so the ASan runtime must be
    loaded first and CPython's small-object allocator bypassed::

        LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
        PYTHONMALLOC=malloc \\
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \\
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \\
        python -m pytest tests/test_ringbuf.py

    (.ci/run does exactly this.)

LOGPIPE_SANITIZE=thread
    ThreadSanitizer: ``-fsanitize=thread -fno-omit-frame-pointer -O1 -g``,
    no NDEBUG; run with ``LD_PRELOAD=$(gcc -print-file-name=libtsan.so)``.
    The interpreter is not instrumented, so reports are only meaningful for
    memory the extensions touch without the GIL (the ring's slots).

A sanitizer build goes to its own build directory (build/sanitize-<kind>),
so objects of an ordinary build in build/ are never reused for it, nor its
objects for an ordinary build. Any other value of LOGPIPE_SANITIZE is an
error.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LOGPIPE_DEBUG") == "1"
SANITIZE = os.environ.get("LOGPIPE_SANITIZE", "").strip()
SANITIZERS = {"address": "address,undefined", "thread": "thread"}
if SANITIZE and SANITIZE not in SANITIZERS:
    raise SystemExit(
        f"LOGPIPE_SANITIZE={SANITIZE!r}: expected one of {', '.join(sorted(SANITIZERS))} (or unset)"
    )

compile_args = ["-O3", "-std=gnu11", "-Wno-unused-function"]
link_args: list[str] = []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}
# Both halves of a build use every core: cythonize's .pyx -> .c (nthreads) and
# the C compiles (build_ext's parallel option). On CI's 2 cores this takes an
# install from ~50 s of compiling to about half that, and CI installs 4 times.
JOBS = os.cpu_count() or 1
options: dict[str, dict[str, str]] = {"build_ext": {"parallel": str(JOBS)}}
if DEBUG:
    compile_args = ["-O0", "-g", "-std=gnu11"]
    directives.update(linetrace=True, boundscheck=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
elif not SANITIZE:
    macros.append(("NDEBUG", "1"))
if os.environ.get("LOGPIPE_PORTABLE") == "1":
    macros.append(("LP_PORTABLE", "1"))
if SANITIZE:
    flags = [f"-fsanitize={SANITIZERS[SANITIZE]}", "-fno-omit-frame-pointer"]
    # -O1 -g after any -O3/-O0 above: the last -O wins.
    compile_args = [*compile_args, *flags, "-O1", "-g"]
    link_args = [*flags, "-g"]
    options["build"] = {"build_base": f"build/sanitize-{SANITIZE}"}


def extension(name: str) -> Extension:
    return Extension(
        f"logpipe.{name}",
        [f"src/logpipe/{name}.pyx"],
        include_dirs=["src/logpipe"],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(
    ext_modules=cythonize(
        [
            extension(name)
            for name in ("_ringbuf", "_encoder", "_nogil_stress", "_framing", "_filewrite")
        ],
        compiler_directives=directives,
        annotate=DEBUG,
        nthreads=JOBS,
    ),
    options=options,
)
