"""BM1485 (Antminer L3/L3+) wire protocol: frames, CRCs, registers, PLL (pure; no I/O).

Everything here follows shared/reference/chips-bm1485.md §1.3-1.6. Host -> chip frames have no
preamble: a command is [0x40 | broadcast 0x10 | cmd, length, chip, register, (4 value bytes), CRC5]
and a work frame is [0x20, 80, work id, 0, 76 data bytes, CRC16 big-endian]. Chip -> host frames are
always 7 bytes: a nonce response (byte 6 bit 7 set) or a register response, both closed by a CRC5,
so a byte stream without preamble is resynchronised by sliding to the window whose CRC5 checks."""

from __future__ import annotations

import array
import binascii
from dataclasses import dataclass, field

# a 4-byte array type for the header word reversal (4 bytes on every platform we build for)
_WORD = next(t for t in "IL" if array.array(t).itemsize == 4)

# ---------------------------------------------------------------------------- constants

CMD_SET_ADDRESS = 0
CMD_WRITE_REG = 1
CMD_READ_REG = 2
CMD_CHAIN_INACTIVE = 3
TYPE_COMMAND = 0x40
TYPE_WORK = 0x20
FLAG_BROADCAST = 0x10
WORK_FLAG_START_NONCE = 0x01

REG_CHIP_ADDR = 0x00
REG_HASHRATE = 0x04
REG_PLL_PARAMETER = 0x08
REG_SNO = 0x0C
REG_HCN = 0x10
REG_TICKET_MASK = 0x14
REG_MISC_CONTROL = 0x18
REG_GENERAL_IIC = 0x1C
REG_SECURITY_IIC = 0x20
REG_SIG_INPUT = 0x24
REG_SIG_NONCE_0 = 0x28
REG_SIG_NONCE_1 = 0x2C
REG_SIG_ID = 0x30
REG_SEC_CTRL_STATUS = 0x34
REG_MEMORY_STATUS = 0x38
REG_CORE_CMD_IN = 0x3C
REG_CORE_RESP_OUT = 0x40
REG_EXT_TEMP_SENSOR = 0x44
REGISTERS = frozenset(range(0x00, 0x48, 4))

CORES = (0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13)  # the 12 core numbers (nonce bits 31..28)
CORE_CMD_CLOCK_ENABLE = 0
CORE_CMD_CALC_MODE = 1
CORE_CMD_PROCESS_MONITOR = 2
CORE_CMD_TEMP_DIODE_SELECT = 3
CORE_CMD_VOLTAGE_MONITOR = 4

# MISC_CONTROL values the stock driver writes (§1.4): all chips, then the sensor chips.
MISC_CONTROL_ALL = bytes.fromhex("41403a10")
MISC_CONTROL_SENSOR = bytes.fromhex("41407a70")

# GENERAL_IIC byte 0 flags
IIC_REG_VALID = 0x01
IIC_AUTO_READ = 0x02
IIC_RW_FAIL = 0x40
IIC_BUSY = 0x80

# TMP451-class sensor behind the sensor chips' I2C master (§3.4)
TMP451_ADDR = 0x4C
TMP451_LOCAL = 0x00
TMP451_REMOTE_HIGH = 0x01
TMP451_STATUS = 0x02
TMP451_CONFIG = 0x03
TMP451_REMOTE_LOW = 0x10
TMP451_OFFSET_HIGH = 0x11
TMP451_OFFSET_LOW = 0x12

RESPONSE_BYTES = 7
WORK_DATA_BYTES = 76
REF_CLOCK_MHZ = 25.0
PLL_MIN_MHZ = 50.0
PLL_MAX_MHZ = 800.0
PLL_VCO_MAX_MHZ = 1600.0  # every refdiv-2 entry of the stock table up to 400 MHz stays under it
CHIP_HASHRATE_FACTOR = 12 * 0.95 / 2500 * 1e6  # H/s per MHz per chip (§1.1 rate model)


class FrameError(ValueError):
    """A chip frame that is malformed: says what was wrong."""


# ---------------------------------------------------------------------------- CRCs


def _crc5_bits(crc: int, byte: int, nbits: int) -> int:
    for i in range(nbits):
        top = (crc >> 4) & 1
        crc = (crc << 1) & 0x1F
        if top ^ ((byte >> (7 - i)) & 1):
            crc ^= 0x05
    return crc


# State x byte -> state: whole bytes in one lookup (the stream decoder checks many windows).
_CRC5 = [[_crc5_bits(c, b, 8) for b in range(256)] for c in range(32)]


def crc5(data: bytes, bits: int) -> int:
    """CRC5 of the first `bits` bits of data, MSB first: poly x^5+x^2+1, init 0x1F, no xorout."""
    if not 0 <= bits <= len(data) * 8:
        raise ValueError(f"crc5 over {bits} bits needs {(bits + 7) // 8} bytes, got {len(data)}")
    crc = 0x1F
    whole, rest = divmod(bits, 8)
    for i in range(whole):
        crc = _CRC5[crc][data[i]]
    return _crc5_bits(crc, data[whole], rest) if rest else crc


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected ("123456789" -> 0x29B1).
    binascii.crc_hqx is this CRC in C; a work frame is sent to every chain at each notify."""
    return binascii.crc_hqx(data, 0xFFFF)


# ---------------------------------------------------------------------------- commands


def _u8(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{what} must be a byte 0..255, got {value!r}")
    return value


def command(
    cmd: int, chip: int = 0, reg: int = 0, value: bytes | None = None, broadcast: bool = False
) -> bytes:
    """One command frame; the CRC5 covers every byte before it (32 or 64 bits)."""
    if cmd not in (CMD_SET_ADDRESS, CMD_WRITE_REG, CMD_READ_REG, CMD_CHAIN_INACTIVE):
        raise ValueError(f"unknown command {cmd}")
    head = TYPE_COMMAND | (FLAG_BROADCAST if broadcast else 0) | cmd
    body = bytes([head, 4, _u8(chip, "chip address"), _u8(reg, "register")])
    if value is not None:
        if len(value) != 4:
            raise ValueError(f"register value must be 4 bytes, got {len(value)}")
        body = bytes([head, 8]) + body[2:] + bytes(value)
    return body + bytes([crc5(body, len(body) * 8)])


def chain_inactive() -> bytes:
    return command(CMD_CHAIN_INACTIVE, broadcast=True)


def set_address(address: int) -> bytes:
    return command(CMD_SET_ADDRESS, chip=address)


def read_register(reg: int, chip: int | None = None) -> bytes:
    """Read `reg` from one chip, or from every chip when chip is None (broadcast)."""
    return command(CMD_READ_REG, chip=chip or 0, reg=reg, broadcast=chip is None)


def write_register(reg: int, value: bytes, chip: int | None = None) -> bytes:
    """Write 4 bytes (wire order) to `reg` of one chip, or of every chip when chip is None."""
    return command(CMD_WRITE_REG, chip=chip or 0, reg=reg, value=value, broadcast=chip is None)


def ticket_mask_value(mask: int = 0xFF) -> bytes:
    """TICKET_MASK goes out big-endian, no bit reversal (0xFF -> 00 00 00 FF)."""
    if not 0 <= mask <= 0xFFFFFFFF:
        raise ValueError(f"ticket mask must be 32 bits, got {mask}")
    return mask.to_bytes(4, "big")


def ticket_mask_difficulty(mask: int) -> int:
    """A mask of 2**k - 1 makes chips report nonces of difficulty 2**k (0xFF -> 256)."""
    return mask + 1


def misc_control_value(
    *,
    hashrate_ctrl1: int = 1,
    hashrate_ctrl2: int = 4,
    ldo18ctrl: int = 4,
    bt8d: int = 26,
    inv_clko: bool = True,
    rfs: bool = False,
    ldo09ctrl: int = 4,
    tfs: int = 0,
    ldo09_pd: bool = False,
) -> bytes:
    """MISC_CONTROL from its fields (defaults give the stock 41 40 3A 10)."""
    b0 = (hashrate_ctrl1 & 7) | (hashrate_ctrl2 & 7) << 4
    b1 = (ldo18ctrl & 7) << 4
    b2 = (bt8d & 0x1F) | (0x20 if inv_clko else 0) | (0x40 if rfs else 0)
    b3 = (ldo09ctrl & 7) << 2 | (tfs & 3) << 5 | (0x80 if ldo09_pd else 0)
    return bytes([b0, b1, b2, b3])


def core_cmd_value(
    core: int, cmd_type: int, data: int = 0, *, all_cores: bool = False, ana_sel: int = 0
) -> bytes:
    """CORE_CMD_IN: b0 ana_sel | all-cores, b1 core index, b2 command type, b3 data."""
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {core}")
    return bytes(
        [
            (ana_sel & 0x1F) | (0x80 if all_cores else 0),
            core,
            _u8(cmd_type, "core command"),
            _u8(data, "core command data"),
        ]
    )


# CORE_CMD_IN clock-enable data: the boot enables with data 0 (as the stock driver's open-block
# step); data 1 gates the clock off. [I] The reference names the command and the field, not the
# meaning of its data values; the emulator implements the same convention.
CORE_CLOCK_ON = 0x00
CORE_CLOCK_OFF = 0x01


def core_clock_value(core: int, enable: bool) -> bytes:
    """CORE_CMD_IN clock enable (or gate) for one core: [0, core, 0, 0 on / 1 off]."""
    return core_cmd_value(core, CORE_CMD_CLOCK_ENABLE, CORE_CLOCK_ON if enable else CORE_CLOCK_OFF)


def chip_clock_value(enable: bool) -> bytes:
    """CORE_CMD_IN clock enable (or gate) for all 12 cores of a chip (b0 bit 7, all-cores)."""
    data = CORE_CLOCK_ON if enable else CORE_CLOCK_OFF
    return core_cmd_value(CORES[0], CORE_CMD_CLOCK_ENABLE, data, all_cores=True)


def pll_write(frequency_mhz: float, chip: int | None = None) -> bytes:
    """PLL_PARAMETER write for `frequency_mhz` to one chip (addressed) or every chip (broadcast).
    Broadcast 384 MHz -> 51 08 00 08 00 7B 02 41 06 (reference §1.3)."""
    return write_register(REG_PLL_PARAMETER, pll_for(frequency_mhz).value, chip)


def iic_read_value(device: int, reg: int) -> bytes:
    """GENERAL_IIC: read sensor register `reg` of 7-bit `device` (0x4C, 0x01 -> 01 98 01 00)."""
    return bytes([IIC_REG_VALID, (device & 0x7F) << 1, _u8(reg, "sensor register"), 0])


def iic_write_value(device: int, reg: int, data: int) -> bytes:
    """GENERAL_IIC: write `data` to sensor register `reg` (0x4C, 0x11, vv -> 01 99 11 vv)."""
    return bytes(
        [
            IIC_REG_VALID,
            (device & 0x7F) << 1 | 1,
            _u8(reg, "sensor register"),
            _u8(data, "sensor data"),
        ]
    )


def iic_auto_read_value(device: int = TMP451_ADDR) -> bytes:
    """GENERAL_IIC: let the chip poll the sensor into EXT_TEMP_SENSOR (03 98 00 00)."""
    return bytes([IIC_REG_VALID | IIC_AUTO_READ, (device & 0x7F) << 1, 0, 0])


# ---------------------------------------------------------------------------- PLL


@dataclass(frozen=True)
class Pll:
    fbdiv: int
    refdiv: int
    postdiv1: int
    postdiv2: int

    @property
    def frequency_mhz(self) -> float:
        return REF_CLOCK_MHZ * self.fbdiv / (self.refdiv * self.postdiv1 * self.postdiv2)

    @property
    def value(self) -> bytes:
        """PLL_PARAMETER bytes: [0, FBDIV, REFDIV, POSTDIV1 << 4 | POSTDIV2]."""
        return bytes([0, self.fbdiv, self.refdiv, self.postdiv1 << 4 | self.postdiv2])


def pll_for(frequency_mhz: float) -> Pll:
    """The PLL setting closest to `frequency_mhz` (the stock table's style: REFDIV 2, POSTDIV2 1,
    VCO = 25 * FBDIV / 2 at most 1600 MHz; ties go to the higher VCO). 384 -> 00 7B 02 41."""
    if not PLL_MIN_MHZ <= frequency_mhz <= PLL_MAX_MHZ:
        raise ValueError(
            f"frequency must be in {PLL_MIN_MHZ:g}..{PLL_MAX_MHZ:g} MHz, got {frequency_mhz}"
        )
    best: tuple[float, float, Pll] | None = None
    for postdiv1 in range(1, 8):
        fb = round(frequency_mhz * 2 * postdiv1 / REF_CLOCK_MHZ)
        if not 1 <= fb <= 255 or REF_CLOCK_MHZ * fb / 2 > PLL_VCO_MAX_MHZ:
            continue
        pll = Pll(fb, 2, postdiv1, 1)
        key = (abs(pll.frequency_mhz - frequency_mhz), -fb)
        if best is None or key < best[:2]:
            best = (*key, pll)
    if best is None:  # unreachable for the allowed range, kept for a clear error
        raise ValueError(f"no PLL setting for {frequency_mhz} MHz")
    return best[2]


def pll_from_value(value: bytes) -> Pll:
    if len(value) != 4 or value[2] == 0 or value[3] >> 4 == 0 or value[3] & 0xF == 0:
        raise ValueError(f"not a PLL_PARAMETER value: {value.hex()}")
    return Pll(value[1], value[2], value[3] >> 4, value[3] & 0xF)


def chip_hashrate_hs(frequency_mhz: float) -> float:
    """The stock driver's per-chip rate model: f x 12 x 0.95 / 2500 MH/s."""
    return frequency_mhz * CHIP_HASHRATE_FACTOR


# ---------------------------------------------------------------------------- work


def header_to_work_data(header76: bytes) -> bytes:
    """The 76 data bytes of a work frame: header words 18..0 (nbits first, version last),
    each keeping its serialized byte order (the 80 reversed bytes minus the nonce word)."""
    if len(header76) != 76:
        raise ValueError(f"header76 must be 76 bytes, got {len(header76)}")
    words = array.array(_WORD, header76)  # reversing the array keeps each word's bytes
    words.reverse()
    return words.tobytes()


def work_data_to_header(data76: bytes) -> bytes:
    """Inverse of header_to_work_data (the word reversal is its own inverse)."""
    return header_to_work_data(data76)


def work_frame(work_id: int, header76: bytes, start_nonce: int | None = None) -> bytes:
    """Work frame for a 76-byte header: 82 bytes, or 86 with a start nonce (type 0x21)."""
    if not 0 <= work_id <= 0x7F:
        raise ValueError(f"work id must be 7 bits, got {work_id}")
    data = header_to_work_data(header76)
    if start_nonce is None:
        body = bytes([TYPE_WORK, 80, work_id, 0]) + data
    else:
        body = (
            bytes([TYPE_WORK | WORK_FLAG_START_NONCE, 84, work_id, 0])
            + start_nonce.to_bytes(4, "big")
            + data
        )
    return body + crc16(body).to_bytes(2, "big")


@dataclass(frozen=True)
class WorkFrame:
    work_id: int
    header76: bytes
    start_nonce: int | None = None


def decode_work_frame(frame: bytes) -> WorkFrame:
    """Parse a work frame (for tests and tools); FrameError says what was wrong."""
    if len(frame) < 4 or frame[0] & 0xFE != TYPE_WORK:
        raise FrameError(f"not a work frame: starts {frame[:2].hex()}")
    with_start = bool(frame[0] & WORK_FLAG_START_NONCE)
    want = 84 if with_start else 80
    if frame[1] != want or len(frame) != want + 2:
        raise FrameError(f"work frame length byte {frame[1]} / {len(frame)} bytes, want {want}")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "big"):
        raise FrameError("work frame CRC16 mismatch")
    data = frame[8:-2] if with_start else frame[4:-2]
    start = int.from_bytes(frame[4:8], "big") if with_start else None
    return WorkFrame(frame[2] & 0x7F, work_data_to_header(data), start)


@dataclass(frozen=True)
class Command:
    cmd: int
    broadcast: bool
    chip: int
    reg: int
    value: bytes | None


def decode_command(frame: bytes) -> Command:
    """Parse a command frame (for tests and tools); FrameError says what was wrong."""
    if len(frame) < 2 or frame[0] & 0xE0 != TYPE_COMMAND:
        raise FrameError(f"not a command frame: starts {frame[:1].hex()}")
    n = frame[1]
    if n not in (4, 8) or len(frame) != n + 1:
        raise FrameError(f"command length byte {n} with {len(frame)} bytes")
    if crc5(frame, n * 8) != frame[n]:
        raise FrameError(f"command CRC5 {frame[n]:#04x}, want {crc5(frame, n * 8):#04x}")
    return Command(
        frame[0] & 0x0F,
        bool(frame[0] & FLAG_BROADCAST),
        frame[2],
        frame[3],
        bytes(frame[4:8]) if n == 8 else None,
    )


# ---------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class NonceResponse:
    nonce: int
    work_id: int
    diff: int = 0

    @property
    def core(self) -> int:
        return self.nonce >> 28

    @property
    def chip_field(self) -> int:
        return (self.nonce >> 20) & 0xFF

    def chip_index(self, addr_interval: int) -> int:
        return self.chip_field // addr_interval


@dataclass(frozen=True)
class RegisterResponse:
    chip: int
    reg: int
    value: bytes


Response = NonceResponse | RegisterResponse


def nonce_response(nonce: int, work_id: int, diff: int = 0) -> bytes:
    body = nonce.to_bytes(4, "big") + bytes([diff & 0x3F, work_id & 0x7F, 0x80])
    return body[:6] + bytes([0x80 | crc5(body, 51)])


def register_response(chip: int, reg: int, value: bytes) -> bytes:
    body = bytes(value) + bytes([chip, reg, 0])
    return body[:6] + bytes([crc5(body, 51)])


def response_ok(frame: bytes | bytearray | memoryview, offset: int = 0) -> bool:
    """True when the 7 bytes at offset are a well-formed response (CRC5 over all 56 bits is 0,
    and a register response keeps byte 6 bits 6..5 clear)."""
    w = bytes(frame[offset : offset + RESPONSE_BYTES])
    if len(w) != RESPONSE_BYTES:
        return False
    if not w[6] & 0x80 and w[6] & 0x60:
        return False
    return crc5(w, 56) == 0


def decode_response(frame: bytes, *, checked: bool = False) -> Response:
    """A 7-byte chip response, checked by CRC5 (unless response_ok() has already passed it:
    `checked`); FrameError says what was wrong."""
    if len(frame) != RESPONSE_BYTES:
        raise FrameError(f"response must be 7 bytes, got {len(frame)}")
    if not checked and crc5(frame, 51) != frame[6] & 0x1F:
        raise FrameError(f"response CRC5 {frame[6] & 0x1F:#04x}, want {crc5(frame, 51):#04x}")
    if frame[6] & 0x80:
        return NonceResponse(int.from_bytes(frame[:4], "big"), frame[5] & 0x7F, frame[4] & 0x3F)
    if frame[6] & 0x60:
        raise FrameError(f"register response with byte 6 bits 6..5 set: {frame[6]:#04x}")
    return RegisterResponse(frame[4], frame[5], bytes(frame[:4]))


@dataclass
class StreamDecoder:
    """Cuts a chip byte stream into responses, resynchronising after lost or corrupt bytes.

    In sync it takes 7 bytes at a time. A window whose CRC5 fails starts a resync: it slides to the
    first window that checks, and among that one and the 6 overlapping it prefers the one followed
    by the longest run of valid windows (a random window checks 1 time in 32, a run almost never),
    waiting for enough bytes to judge unless flush() says none are coming."""

    LOOKAHEAD = 4  # windows in a run that decide between overlapping candidates

    frames: int = 0
    crc_errors: int = 0  # sync lost: a window failed its CRC5
    skipped_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _synced: bool = True
    _trust: bool = False  # the window at the front was chosen by a resync: take it

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        return self._process(final=False)

    def flush(self) -> list[Response]:
        """Decide with the bytes at hand (call when the line has gone quiet)."""
        return self._process(final=True)

    def _run(self, k: int) -> int:
        n = 0
        while n < self.LOOKAHEAD and response_ok(self._buf, k + 7 * n):
            n += 1
        return n

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        self.skipped_bytes += n

    def _process(self, final: bool) -> list[Response]:
        out: list[Response] = []
        buf = self._buf
        known: bool | None = None  # response_ok(buf) when the lookahead has already said
        while len(buf) >= RESPONSE_BYTES:
            if self._synced:
                ok = response_ok(buf) if known is None else known
                known = None
                # A window that checks but is followed by one that fails may be noise that
                # happens to check (1 in 32): judge it against its neighbours as in a resync.
                ahead = None if not ok or self._trust or len(buf) < 14 else response_ok(buf, 7)
                if ok and (self._trust or len(buf) < 14 or ahead):
                    out.append(decode_response(bytes(buf[:7]), checked=True))
                    self.frames += 1
                    self._trust = False
                    del buf[:7]
                    known = ahead  # that window is now the first: checked once is enough
                    continue
                self._synced = False
                if not ok:
                    self.crc_errors += 1
            first = next((k for k in range(len(buf) - 6) if response_ok(buf, k)), None)
            if first is None:
                self._skip(len(buf) - 6)
                break
            self._skip(first)
            if not final and len(buf) < 6 + 7 * self.LOOKAHEAD:
                break  # not enough bytes yet to choose between overlapping candidates
            runs = [
                self._run(j) if response_ok(buf, j) else -1 for j in range(min(7, len(buf) - 6))
            ]
            self._skip(runs.index(max(runs)))
            self._synced = self._trust = True
        if final and not self._synced and 0 < len(buf) < RESPONSE_BYTES:
            self._skip(len(buf))
        return out
