"""Pack a built tree of the agent (agent/ with a cross-compiled _scrypt extension, and the board
profiles) into a wheel for another platform: what tools/cross-armhf.sh installs under qemu.

setuptools cannot cross-compile the extension, so the tree is built by the cross compiler and
only packed here. Metadata comes from setup.cfg, so the wheel declares the same dependencies.

usage: python tools/pack_wheel.py TREE OUTDIR TAG      (TAG e.g. cp311-cp311-linux_armv7l)
prints the wheel's path."""

from __future__ import annotations

import base64
import configparser
import hashlib
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "doge_agent"


def version() -> str:
    text = (ROOT / "agent" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if match is None:
        raise SystemExit("pack_wheel: no __version__ in agent/__init__.py")
    return match.group(1)


def metadata(ver: str) -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    lines = [
        "Metadata-Version: 2.1",
        "Name: doge-agent",
        f"Version: {ver}",
        f"Summary: {cfg['metadata']['description']}",
        f"Requires-Python: {cfg['options']['python_requires']}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    return "\n".join(lines) + "\n"


def digest(data: bytes) -> str:
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pack(tree: Path, outdir: Path, tag: str) -> Path:
    ver = version()
    info = f"{NAME}-{ver}.dist-info"
    files: dict[str, bytes] = {}
    for top in ("agent", "board/profiles"):
        for path in sorted((tree / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(tree).as_posix()] = path.read_bytes()
    if not any(name.endswith(".so") for name in files):
        raise SystemExit(f"pack_wheel: no compiled extension under {tree / 'agent'}")
    files[f"{info}/METADATA"] = metadata(ver).encode()
    files[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: doge-agent tools/pack_wheel.py\n"
        f"Root-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\ndoge-agent = agent.cli:main\n"
    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items())
    record += f"{info}/RECORD,,\n"
    outdir.mkdir(parents=True, exist_ok=True)
    wheel = outdir / f"{NAME}-{ver}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[-1])
    print(pack(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
