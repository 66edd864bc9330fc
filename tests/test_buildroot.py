"""The Buildroot BR2_EXTERNAL tree (buildroot/) and the L3+ board files (board/l3plus/).

Buildroot itself is not available here (a real image build needs its source tree, a toolchain
build and network downloads), so these tests check what can be checked without it: the Kconfig
files parse with kconfiglib against a small stub that defines the Buildroot symbols our
Config.in files use (the names are those of Buildroot's package tree: python-serial,
python-smbus2, python-cryptography, uboot-tools), the package .mk declares every runtime
dependency of setup.cfg, the board scripts pass shellcheck, and the image layout, udev rules,
bootloader files and default config agree with each other and with board/profiles/l3plus.toml."""

from __future__ import annotations

import configparser
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, require_peer

from agent import config as agent_config

BR = ROOT / "buildroot"
BOARD = ROOT / "board" / "l3plus"
OVERLAY = BOARD / "rootfs-overlay"
MK = BR / "package" / "doge-agent" / "doge-agent.mk"
PKG_CONFIG = BR / "package" / "doge-agent" / "Config.in"
PROFILE = ROOT / "board" / "profiles" / "l3plus.toml"

# setup.cfg distribution name -> Buildroot package, where the name is not simply python-<name>
BUILDROOT_NAMES = {
    "pyserial": "python-serial",
}

# What Buildroot defines and our Config.in files use: bool symbols, and those that a typical
# ARM glibc configuration turns on.
STUB_SYMBOLS = {
    "BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS": "y",
    "BR2_USE_MMU": "y",
    "BR2_USE_WCHAR": "y",
    "BR2_TOOLCHAIN_HAS_THREADS": "y",
    "BR2_STATIC_LIBS": "n",
    "BR2_PACKAGE_PYTHON3": "n",
    "BR2_PACKAGE_PYTHON3_SSL": "n",
    "BR2_PACKAGE_PYTHON3_HASHLIB": "n",
    "BR2_PACKAGE_PYTHON_SERIAL": "n",
    "BR2_PACKAGE_PYTHON_SMBUS2": "n",
    "BR2_PACKAGE_PYTHON_CRYPTOGRAPHY": "n",
    "BR2_PACKAGE_PYTHON_PSUTIL": "n",
    "BR2_PACKAGE_UBOOT_TOOLS": "n",
    "BR2_PACKAGE_UBOOT_TOOLS_FWPRINTENV": "n",
}


def requirement_name(req: str) -> str:
    """'prometheus_client>=0.17' -> 'prometheus-client' (PEP 503 normalised)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert name, req
    return re.sub(r"[-_.]+", "-", name[1]).lower()


def install_requires(setup_cfg_text: str) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read_string(setup_cfg_text)
    lines = cfg["options"]["install_requires"].splitlines()
    return [requirement_name(r) for r in lines if r.strip() and not r.strip().startswith("#")]


def buildroot_package(name: str) -> str:
    return BUILDROOT_NAMES.get(name, f"python-{name}")


def kconfig_symbol(package: str) -> str:
    return "BR2_PACKAGE_" + package.upper().replace("-", "_")


def mk_variable(mk_text: str, var: str) -> list[str]:
    """Every word assigned (=, :=, +=) to `var`, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", mk_text)
    words: list[str] = []
    for m in re.finditer(rf"^{re.escape(var)}\s*(?:\+|:)?=(.*)$", joined, re.M):
        words += m[1].split()
    return words


def missing_dependencies(setup_cfg_text: str, mk_text: str, config_in_text: str) -> list[str]:
    """The install_requires entries that the .mk's DOGE_AGENT_DEPENDENCIES or the Config.in's
    selects lack, as 'name -> package'."""
    deps = set(mk_variable(mk_text, "DOGE_AGENT_DEPENDENCIES"))
    selects = set(re.findall(r"^\s*select\s+(\S+)", config_in_text, re.M))
    missing = []
    for name in install_requires(setup_cfg_text):
        pkg = buildroot_package(name)
        if pkg not in deps or kconfig_symbol(pkg) not in selects:
            missing.append(f"{name} -> {pkg}")
    return missing


# ---------------------------------------------------------------------------- Kconfig


@pytest.fixture
def kconf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    kconfiglib = pytest.importorskip("kconfiglib", reason="pip install kconfiglib (test extra)")
    stub = ['mainmenu "Buildroot stub for the doge-agent external tree"', ""]
    for sym, default in STUB_SYMBOLS.items():
        stub += [f"config {sym}", f'\tbool "{sym}"', f"\tdefault {default}", ""]
    stub.append('source "$BR2_EXTERNAL_DOGE_AGENT_PATH/Config.in"')
    (tmp_path / "Config.in").write_text("\n".join(stub) + "\n")
    monkeypatch.setenv("BR2_EXTERNAL_DOGE_AGENT_PATH", str(BR))
    monkeypatch.setenv("srctree", str(tmp_path))
    k = kconfiglib.Kconfig(str(tmp_path / "Config.in"), warn_to_stderr=False)
    return k


def test_external_tree_layout() -> None:
    desc = (BR / "external.desc").read_text()
    assert re.search(r"^name: DOGE_AGENT$", desc, re.M)
    assert re.search(r"^desc: \S", desc, re.M)
    assert "$(BR2_EXTERNAL_DOGE_AGENT_PATH)/package/*/*.mk" in (BR / "external.mk").read_text()
    # every package folder is sourced from the top Config.in and has its .mk
    top = (BR / "Config.in").read_text()
    for pkg in sorted(p for p in (BR / "package").iterdir() if p.is_dir()):
        assert f'source "$BR2_EXTERNAL_DOGE_AGENT_PATH/package/{pkg.name}/Config.in"' in top
        assert (pkg / f"{pkg.name}.mk").is_file(), pkg


def test_kconfig_files_parse_with_kconfiglib(kconf) -> None:
    assert kconf.warnings == [], kconf.warnings
    # every symbol our files mention is defined: by the stub or by the external tree
    # (MODULES is kconfiglib's own, always present)
    undefined = sorted(n for n, s in kconf.syms.items() if not s.nodes and n != "MODULES")
    assert undefined == [], f"symbols used but not defined: {undefined}"
    for sym, prompt in (("BR2_PACKAGE_DOGE_AGENT", "doge-agent"),):
        node = kconf.syms[sym].nodes[0]
        assert node.prompt[0] == prompt
        assert node.filename.startswith(str(BR)), node.filename
        assert node.help, sym


def test_selecting_the_agent_selects_its_runtime(kconf) -> None:
    agent = kconf.syms["BR2_PACKAGE_DOGE_AGENT"]
    assert agent.set_value("y") and agent.str_value == "y"
    wanted = ["BR2_PACKAGE_PYTHON3"]
    wanted += [kconfig_symbol(buildroot_package(n)) for n in install_requires(_setup_cfg())]
    wanted += ["BR2_PACKAGE_UBOOT_TOOLS_FWPRINTENV"]
    for sym in wanted:
        assert kconf.syms[sym].str_value == "y", sym
    # without a Rust-capable architecture (python-cryptography) the agent cannot be chosen
    kconf.syms["BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS"].set_value("n")
    assert agent.str_value == "n"


def _setup_cfg() -> str:
    return (ROOT / "setup.cfg").read_text()


# ---------------------------------------------------------------------------- package .mk


def test_mk_declares_every_install_requires() -> None:
    names = install_requires(_setup_cfg())
    assert {"pyserial", "smbus2", "cryptography"} <= set(names)
    # the agent writes /metrics itself and reads /proc itself: neither is on the board
    assert not {"prometheus-client", "psutil"} & set(names)
    assert missing_dependencies(_setup_cfg(), MK.read_text(), PKG_CONFIG.read_text()) == []


def test_a_new_setup_cfg_dependency_without_the_mk_is_caught() -> None:
    text = _setup_cfg().replace(
        "install_requires =\n", "install_requires =\n    PyYAML>=6\n    aiohttp_retry>=2\n", 1
    )
    assert missing_dependencies(text, MK.read_text(), PKG_CONFIG.read_text()) == [
        "pyyaml -> python-pyyaml",
        "aiohttp-retry -> python-aiohttp-retry",
    ]


def test_mk_builds_this_checkout_with_the_python_infrastructure() -> None:
    mk = MK.read_text()
    assert mk_variable(mk, "DOGE_AGENT_SITE") == ["$(BR2_EXTERNAL_DOGE_AGENT_PATH)/.."]
    assert mk_variable(mk, "DOGE_AGENT_SITE_METHOD") == ["local"]
    assert mk_variable(mk, "DOGE_AGENT_SETUP_TYPE") == ["setuptools"]
    assert "$(eval $(python-package))" in mk
    # a host-built extension must never be copied into the target build
    assert "--exclude '*.so'" in mk
    # setup.py's flags live in extra_compile_args; the .mk adds no global NEON flag
    assert "-mfpu" not in " ".join(mk_variable(mk, "DOGE_AGENT_ENV"))
    assert "DOGE_AGENT_OPT" in " ".join(mk_variable(mk, "DOGE_AGENT_ENV"))
    assert "DOGE_AGENT_OPT" in (ROOT / "setup.py").read_text()
    # the version comes from the package itself
    assert "agent/__init__.py" in mk


def test_mk_installs_the_systemd_files_and_profiles() -> None:
    mk = MK.read_text()
    units = mk_variable(mk, "DOGE_AGENT_SYSTEMD_UNITS")
    shipped = sorted(p.name for p in (ROOT / "systemd").glob("*.service"))
    shipped += sorted(p.name for p in (ROOT / "systemd").glob("*.timer"))
    assert sorted(units) == sorted(shipped)
    for name in ("doge-agent.sysusers", "doge-agent.tmpfiles", "port-80.conf"):
        assert name in mk, name
    assert "enable doge-agent-confirm.timer" in mk
    # where agent.hardware.profile looks for profiles: <site-packages>/board/profiles
    assert "site-packages/board/profiles" in mk and "board/profiles/*.toml" in mk
    users = " ".join(mk_variable(mk, "DOGE_AGENT_USERS"))
    assert "dialout,i2c" in users


def test_defconfig_paths_exist() -> None:
    defconfig = (BR / "configs" / "doge_agent_l3plus_defconfig").read_text()
    for line in ("BR2_cortex_a8=y", "BR2_ARM_EABIHF=y", "BR2_ARM_FPU_NEON=y",
                 "BR2_TOOLCHAIN_BUILDROOT_GLIBC=y", "BR2_INIT_SYSTEMD=y",
                 "BR2_PACKAGE_PYTHON3=y", "BR2_PACKAGE_DOGE_AGENT=y",
                 'BR2_TARGET_UBOOT_BOARD_DEFCONFIG="am335x_evm"',
                 "BR2_PACKAGE_HOST_GENIMAGE=y", "BR2_LINUX_KERNEL=y"):  # fmt: skip
        assert line in defconfig, line
    paths = re.findall(r'"\$\(BR2_EXTERNAL_DOGE_AGENT_PATH\)/([^"]+)"', defconfig)
    assert len(paths) >= 4
    for rel in paths:
        assert (BR / rel).exists(), rel


# ---------------------------------------------------------------------------- board files


def board_scripts() -> list[Path]:
    scripts = sorted(BOARD.glob("*.sh"))
    scripts += [
        p
        for p in sorted(OVERLAY.rglob("*"))
        if p.is_file() and p.read_bytes().startswith(b"#!") and b"bash" in p.read_bytes()[:40]
    ]
    return scripts


def test_board_scripts_are_shellcheck_clean() -> None:
    shellcheck = require_peer("shellcheck")
    scripts = board_scripts()
    names = {p.name for p in scripts}
    assert {"post-build.sh", "post-image.sh", "confirm-slot"} <= names, names
    for p in scripts:
        assert "set -euo pipefail" in p.read_text(), p
    res = subprocess.run(
        [shellcheck, "-x", *map(str, scripts)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr


def genimage_partitions(text: str) -> list[tuple[str, dict[str, str]]]:
    """(name, options) of every partition of the hdimage, in order."""
    parts = []
    for m in re.finditer(r"^\s*partition\s+(\S+)\s*\{(.*?)\}", text, re.M | re.S):
        opts = dict(re.findall(r"^\s*([\w-]+)\s*=\s*\"?([^\"\n]*)\"?\s*$", m[2], re.M))
        parts.append((m[1], opts))
    return parts


def test_genimage_has_two_rootfs_slots_and_a_data_partition() -> None:
    parts = genimage_partitions((BOARD / "genimage.cfg").read_text())
    names = [n for n, _ in parts]
    assert names == ["boot", "rootfs-a", "rootfs-b", "data"], names
    opts = dict(parts)
    assert opts["boot"]["bootable"] == "true" and opts["boot"]["image"] == "boot.vfat"
    assert opts["rootfs-a"]["image"] == opts["rootfs-b"]["image"] == "rootfs.ext4"
    assert opts["rootfs-a"]["size"] == opts["rootfs-b"]["size"]
    assert opts["data"]["image"] == "data.ext4"
    # boot.cmd: slot A is partition 2, slot B partition 3, in the same order as genimage's
    boot = (BOARD / "boot.cmd").read_text()
    assert names.index("rootfs-a") + 1 == 2 and names.index("rootfs-b") + 1 == 3
    assert (
        'if test "${boot_slot}" = "B"; then setenv rootpart 3; else setenv rootpart 2; fi' in boot
    )
    assert "altbootcmd" in boot and "upgrade_available" in boot
    # the data partition is mounted at the agent's state_dir
    conf = tomllib.loads((OVERLAY / "etc" / "doge-agent" / "config.toml").read_text())
    assert f"LABEL=doge-data {conf['agent']['state_dir']} " in (BOARD / "post-build.sh").read_text()
    assert 'label = "doge-data"' in (BOARD / "genimage.cfg").read_text()


def test_bootloader_environment_agrees_with_uboot() -> None:
    """fw_env.config (what fw_setenv writes) names the same two copies U-Boot reads, and they lie
    before the first partition."""
    fragment = (BOARD / "uboot.fragment").read_text()
    env = dict(re.findall(r"^(CONFIG_ENV_\w+)=(0x[0-9a-fA-F]+)$", fragment, re.M))
    rows = [
        line.split()
        for line in (OVERLAY / "etc" / "fw_env.config").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [(int(r[1], 16), int(r[2], 16)) for r in rows] == [
        (int(env["CONFIG_ENV_OFFSET"], 16), int(env["CONFIG_ENV_SIZE"], 16)),
        (int(env["CONFIG_ENV_OFFSET_REDUND"], 16), int(env["CONFIG_ENV_SIZE"], 16)),
    ]
    assert "CONFIG_BOOTCOUNT_ENV=y" in fragment
    first = re.search(r"offset = (\d+)M", (BOARD / "genimage.cfg").read_text())
    assert first
    assert all(int(r[1], 16) + int(r[2], 16) <= int(first[1]) * 1024 * 1024 for r in rows)


def test_udev_rules_name_every_uart_of_the_profile() -> None:
    rules = (OVERLAY / "etc" / "udev" / "rules.d" / "60-doge-agent.rules").read_text()
    lines = [line for line in rules.splitlines() if line.strip() and not line.startswith("#")]
    profile = tomllib.loads(PROFILE.read_text())
    uarts = profile["chains"]["uarts"]
    assert len(uarts) == 4
    for chain, dev in enumerate(uarts):
        name = Path(dev).name  # ttyO1
        rule = [
            line
            for line in lines
            if re.search(rf'KERNEL=="[^"]*\b{name}\b', line) and 'GROUP="dialout"' in line
        ]
        assert rule, (name, rules)
        assert f'SYMLINK+="doge-chain{chain}"' in rule[0]
        # the 8250_omap name of the same UART gets the profile's name as a link
        assert f'KERNEL=="ttyS{name[4:]}", SYMLINK+="{name}"' in rules
    i2c = Path(profile["i2c"]["i2c_bus"]).name
    assert any(f'KERNEL=="{i2c}"' in line and 'GROUP="i2c"' in line for line in lines)
    # the groups the rules hand out are those the service joins
    unit = (ROOT / "systemd" / "doge-agent.service").read_text()
    assert "SupplementaryGroups=dialout i2c" in unit
    for dev in uarts:
        assert f"DeviceAllow={dev} rw" in unit


def test_overlay_config_is_valid_for_the_l3plus() -> None:
    path = OVERLAY / "etc" / "doge-agent" / "config.toml"
    assert agent_config.check(path) == []
    conf = tomllib.loads(path.read_text())
    assert conf["board"]["kind"] == "l3plus"
    assert conf["agent"]["state_dir"] == "/var/lib/doge-agent"
    # the confirm unit reads /api/health where this config serves it
    port = conf["api"]["http_listen"].rsplit(":", 1)[1]
    service = (ROOT / "systemd" / "doge-agent-confirm.service").read_text()
    assert f"DOGE_AGENT_HEALTH_URL=http://127.0.0.1:{port}/api/health" in service


STUB_MK = """\
# Buildroot's few helpers that the .mk files use, and python-package as a no-op
BR2_EXTERNAL_DOGE_AGENT_PATH := {br}
INSTALL := install
PYTHON3_VERSION_MAJOR := 3.12
define sep


endef
python-package :=
include $(BR2_EXTERNAL_DOGE_AGENT_PATH)/external.mk

.PHONY: version deps install
version:
\t@echo $(DOGE_AGENT_VERSION)
deps:
\t@echo $(DOGE_AGENT_DEPENDENCIES)
install:
\t$(DOGE_AGENT_INSTALL_INIT_SYSTEMD)
\t$(foreach h,$(DOGE_AGENT_POST_INSTALL_TARGET_HOOKS),$($(h))$(sep))
"""


def test_mk_files_evaluate_and_install_with_gnu_make(tmp_path: Path) -> None:
    """GNU make reads the .mk files (with Buildroot's helpers stubbed), computes the version from
    agent/__init__.py, and the install recipes put the units, sysusers, tmpfiles, preset and
    profiles where a target root expects them (run here from this checkout as $(@D))."""
    make = require_peer("make")
    stub = tmp_path / "stub.mk"
    stub.write_text(STUB_MK.format(br=BR))

    def run(*args: str) -> str:
        res = subprocess.run(
            [make, "--no-print-directory", "-C", str(ROOT), "-f", str(stub), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    from agent import __version__

    assert run("version").split() == [__version__]
    assert "python-cryptography" in run("deps").split()
    target = tmp_path / "target"
    run("install", f"TARGET_DIR={target}")
    for rel in (
        "usr/lib/systemd/system/doge-agent.service",
        "usr/lib/systemd/system/doge-agent-confirm.service",
        "usr/lib/systemd/system/doge-agent-confirm.timer",
        "usr/lib/sysusers.d/doge-agent.conf",
        "usr/lib/tmpfiles.d/doge-agent.conf",
        "usr/share/doge-agent/port-80.conf",
        "usr/lib/python3.12/site-packages/board/profiles/l3plus.toml",
    ):
        assert (target / rel).is_file(), rel
    preset = (target / "usr/lib/systemd/system-preset/80-doge-agent.preset").read_text()
    assert preset.split("\n")[:2] == [
        "enable doge-agent.service",
        "enable doge-agent-confirm.timer",
    ]
