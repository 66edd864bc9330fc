"""Builds the C scrypt core as agent._scrypt; all metadata lives in setup.cfg.

Flags go in extra_compile_args because a CFLAGS variable replaces Python's own flags in
isolated builds (reference/scrypt-performance.md §1.3). SIMD code is compiled per function
with target pragmas and chosen at run time, so no -march or -mfpu flag belongs here: a global
-mfpu=neon would let gcc put NEON into the portable code too."""

import glob
import os

from setuptools import Extension, setup

OPT = os.environ.get("DOGE_AGENT_OPT", "-O3")
FLAGS = ["-std=c11", OPT, "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"]

SOURCES = sorted(s for s in glob.glob("cext/*.c") if not s.endswith("selftest.c"))

setup(
    ext_modules=[
        Extension(
            "agent._scrypt",
            sources=SOURCES,
            depends=glob.glob("cext/*.h"),
            include_dirs=["cext"],
            extra_compile_args=FLAGS,
        )
    ]
)
