"""Builds the C scrypt core as agent._scrypt; all metadata lives in setup.cfg.

Flags go in extra_compile_args because a CFLAGS variable replaces Python's own flags in
isolated builds (reference/scrypt-performance.md §1.3). SIMD code is compiled per function
with target attributes and chosen at run time, so no -march flag is needed here."""

import glob
import os
import platform

from setuptools import Extension, setup

OPT = os.environ.get("DOGE_AGENT_OPT", "-O3")
FLAGS = ["-std=c11", OPT, "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"]
if platform.machine().startswith("arm") and not platform.machine().startswith("arm64"):
    FLAGS.append("-mfpu=neon")

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
