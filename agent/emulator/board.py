"""A whole emulated L3+ class board: the BM1485 chains on pseudo-terminals (hashboard.py) and the
peripherals (peripherals.py: PICs and sensors on an SMBus-shaped bus, fans, GPIOs and LEDs in a
sysfs folder, the thermal model), tied together as the real board ties them:

* a chain whose DC-DC is off (the PIC) or whose board is unplugged goes silent;
* each chain's ASIC reset GPIO reaches its chips (held low: in reset; a pulse: power-on state);
* each chain's per-chip clocks and live cores (as one effective mean clock, which the linear power
  model turns into exactly the chips' sum) and chip count heat the thermal model;
* the PIC's voltage reaches the chips (it moves their stable clocks when a StabilityModel is on);
* the sensors behind the chips read the model's board and die temperatures.

The driver side opens `paths` with pyserial and `peripherals.bus` / the sysfs folder through the
same code that runs on the board."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from agent import defaults as D
from agent.emulator.hashboard import MAX_HASH_RATE_HS, EmulatedBoard, StabilityModel
from agent.emulator.peripherals import EmulatedPeripherals
from agent.hardware import profile as PR


class EmulatedL3Plus:
    def __init__(
        self,
        root: str | Path,
        *,
        chains: int = D.CHAINS,
        chips: int = D.CHIPS_PER_CHAIN,
        ticket_difficulty: float = D.TICKET_DIFFICULTY,
        ambient_c: float = D.EMULATOR_AMBIENT_C,
        rate_scale: float = 1.0,
        stability: StabilityModel | None = None,
        seed: int | None = None,
        max_hash_rate_hs: float = MAX_HASH_RATE_HS,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.chips = EmulatedBoard(
            chains, chips, ticket_difficulty=ticket_difficulty, temps=self._temps,
            rate_scale=rate_scale, stability=stability, seed=seed,
            max_hash_rate_hs=max_hash_rate_hs,
        )  # fmt: skip
        self.profile = PR.load(
            "emulated",
            overrides={
                "sysfs_root": str(self.root), "uarts": tuple(self.chips.paths),
                "chains": chains, "chips_per_chain": chips,
            },
        )  # fmt: skip
        self.peripherals = EmulatedPeripherals(self.profile, self.root, ambient_c=ambient_c)
        for i, chain in enumerate(self.chips.chains):
            chain.attach_reset_line(self.peripherals.sysfs.reset_path(i))
        self._silenced: set[int] = set()  # chains we silenced for lack of power
        # simulated seconds of heat, fans and PIC timers per real second: tests that need minutes
        # of thermal history (a heat ramp) run it faster; the chips' hashing is not sped up
        self.physics_speed = 1.0
        self._task: asyncio.Task[None] | None = None

    @property
    def paths(self) -> list[str]:
        return self.chips.paths

    def _temps(self, chain: int, position: int) -> tuple[float, float]:
        # force_chip_sensor() on the peripherals reaches the sensors the chains' UART reads
        chips = self.chips.chains[chain]._chips
        k = sum(1 for c in chips[:position] if c.sensor is not None)
        sensors = self.peripherals.chip_sensors[chain]
        if k < len(sensors) and sensors[k].forced_high is not None:
            forced = float(sensors[k].forced_high)
            return forced, forced
        thermal = self.peripherals.thermal
        return thermal.board_temp_c(chain), thermal.chip_temp_c(chain)

    def sync(self) -> None:
        """Power and clocks from one side to the other; called every tick."""
        for i, chain in enumerate(self.chips.chains):
            powered = self.peripherals.chain_powered(i)
            if not powered and i not in self._silenced:
                chain.set_powered(False)
                self._silenced.add(i)
            elif powered and i in self._silenced:
                self._silenced.discard(i)
                chain.set_powered(True)
            live = chain.live_chips() if powered else 0
            chain.set_voltage(self.peripherals.pics[i].voltage_v)
            self.peripherals.set_chain_clock(i, chain.effective_mhz(), live)

    def chain_power_w(self, chain: int) -> float:
        """The chain's power as the thermal model has it (0 with the DC-DC off)."""
        watts = self.peripherals.thermal.state.chain_w
        return watts[chain] if chain < len(watts) else 0.0

    @property
    def wall_w(self) -> float:
        return self.peripherals.thermal.wall_w

    async def start(self, tick_s: float = D.EMULATOR_TICK_S) -> None:
        self.chips.start()
        self.sync()
        self._task = asyncio.create_task(self._run(tick_s), name="emulated-board")

    async def _run(self, tick_s: float) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(tick_s)
            now = loop.time()
            self.peripherals.advance((now - last) * self.physics_speed)
            last = now
            self.sync()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.chips.stop()

    def describe(self) -> dict[str, Any]:
        return {"chains": len(self.chips.chains), "paths": self.paths, "root": str(self.root)}
