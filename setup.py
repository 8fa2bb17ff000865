"""Build the Cython extensions.

Set LOGPIPE_DEBUG=1 for a debug build: Cython annotations (HTML next to each
.pyx), line tracing for coverage and profilers, and C asserts left on.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LOGPIPE_DEBUG") == "1"

compile_args = ["-O3", "-std=gnu11", "-Wno-unused-function"]
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}
if DEBUG:
    compile_args = ["-O0", "-g", "-std=gnu11"]
    directives.update(linetrace=True, boundscheck=True)
    macros.append(("CYTHON_TRACE_NOGIL", "1"))
else:
    macros.append(("NDEBUG", "1"))


def extension(name: str) -> Extension:
    return Extension(
        f"logpipe.{name}",
        [f"src/logpipe/{name}.pyx"],
        include_dirs=["src/logpipe"],
        define_macros=macros,
        extra_compile_args=compile_args,
    )


setup(
    ext_modules=cythonize(
        [extension("_ringbuf"), extension("_encoder"), extension("_nogil_stress"), extension("_framing")],
        compiler_directives=directives,
        annotate=DEBUG,
    ),
)
