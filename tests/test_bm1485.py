"""agent.hardware.bm1485: reference frames byte for byte, round trips, the stream decoder."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.hardware import bm1485 as bm

# shared/reference/chips-bm1485.md §1.3 and §1.6
REFERENCE_FRAMES = [
    (bm.chain_inactive(), "53 04 00 00 1B"),
    (bm.set_address(0), "40 04 00 00 04"),
    (bm.set_address(3), "40 04 03 00 05"),
    (bm.read_register(bm.REG_CHIP_ADDR), "52 04 00 00 12"),
    (bm.read_register(bm.REG_HASHRATE), "52 04 00 04 06"),
    (
        bm.write_register(bm.REG_TICKET_MASK, bm.ticket_mask_value(0xFF)),
        "51 08 00 14 00 00 00 FF 1D",
    ),
    (bm.write_register(bm.REG_PLL_PARAMETER, bm.pll_for(384).value), "51 08 00 08 00 7B 02 41 06"),
    (bm.write_register(bm.REG_MISC_CONTROL, bm.MISC_CONTROL_ALL), "51 08 00 18 41 40 3A 10 00"),
    (bm.nonce_response(0x12345678, 5), "12 34 56 78 00 05 9E"),
    (bm.register_response(3, bm.REG_CHIP_ADDR, bytes(4)), "00 00 00 00 03 00 18"),
]


@pytest.mark.parametrize(("frame", "hexes"), REFERENCE_FRAMES)
def test_reference_frames(frame: bytes, hexes: str) -> None:
    assert frame == bytes.fromhex(hexes)


def test_crc_check_values() -> None:
    assert bm.crc16(b"123456789") == 0x29B1
    assert bm.crc5(bytes.fromhex("53050000"), 32) == 0x03  # BM1397 frame 55 AA 53 05 00 00 03
    assert bm.crc5(bytes.fromhex("1234567800059e"), 56) == 0  # a valid response checks to 0
    with pytest.raises(ValueError, match="bits"):
        bm.crc5(b"\0", 9)


def test_register_values() -> None:
    assert (
        bm.misc_control_value(rfs=True, tfs=3)
        == bm.MISC_CONTROL_SENSOR
        == bytes.fromhex("41407a70")
    )
    assert bm.iic_read_value(0x4C, 0x01) == bytes.fromhex("01980100")
    assert bm.iic_write_value(0x4C, 0x11, 0xD8) == bytes.fromhex("019911d8")
    assert bm.iic_auto_read_value() == bytes.fromhex("03980000")
    assert bm.core_cmd_value(13, bm.CORE_CMD_CLOCK_ENABLE) == bytes([0, 13, 0, 0])
    assert bm.core_cmd_value(2, 3, all_cores=True)[0] == 0x80
    with pytest.raises(ValueError, match="core"):
        bm.core_cmd_value(6, 0)
    assert bm.ticket_mask_difficulty(0xFF) == 256


@pytest.mark.parametrize("mhz", [100, 125, 200, 275, 303, 384, 400, 406, 500, 650])
def test_pll_any_frequency(mhz: float) -> None:
    pll = bm.pll_for(mhz)
    assert abs(pll.frequency_mhz - mhz) / mhz < 0.01
    assert bm.pll_from_value(pll.value) == pll
    assert 25 * pll.fbdiv / pll.refdiv <= bm.PLL_VCO_MAX_MHZ


def test_pll_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="frequency"):
        bm.pll_for(5)
    assert bm.chip_hashrate_hs(384) == pytest.approx(1.751e6, rel=1e-3)


def test_command_round_trip() -> None:
    for frame, want in [
        (bm.chain_inactive(), bm.Command(3, True, 0, 0, None)),
        (bm.set_address(0x57), bm.Command(0, False, 0x57, 0, None)),
        (bm.read_register(0x44, 0x0C), bm.Command(2, False, 0x0C, 0x44, None)),
        (bm.write_register(0x1C, b"\1\2\3\4", 0xC9), bm.Command(1, False, 0xC9, 0x1C, b"\1\2\3\4")),
    ]:
        assert bm.decode_command(frame) == want
    bad = bytearray(bm.chain_inactive())
    bad[-1] ^= 1
    with pytest.raises(bm.FrameError, match="CRC5"):
        bm.decode_command(bytes(bad))


def test_work_frame_round_trip_and_layout() -> None:
    header = bytes(range(76))
    frame = bm.work_frame(0x55, header)
    assert len(frame) == 82 and frame[:4] == bytes([0x20, 80, 0x55, 0])
    # data = header words 18..0: nbits (bytes 72..75) first, version (0..3) last
    assert frame[4:8] == header[72:76] and frame[76:80] == header[0:4]
    assert int.from_bytes(frame[-2:], "big") == bm.crc16(frame[:-2])
    assert bm.decode_work_frame(frame) == bm.WorkFrame(0x55, header)
    started = bm.work_frame(1, header, start_nonce=0x01020304)
    assert len(started) == 86 and started[0] == 0x21
    assert bm.decode_work_frame(started) == bm.WorkFrame(1, header, 0x01020304)
    with pytest.raises(bm.FrameError, match="CRC16"):
        bm.decode_work_frame(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(ValueError, match="7 bits"):
        bm.work_frame(128, header)


@given(st.integers(0, 2**32 - 1), st.integers(0, 127), st.integers(0, 63))
def test_nonce_response_round_trip(nonce: int, wid: int, diff: int) -> None:
    r = bm.decode_response(bm.nonce_response(nonce, wid, diff))
    assert r == bm.NonceResponse(nonce, wid, diff)
    assert r.core == nonce >> 28 and r.chip_field == (nonce >> 20) & 0xFF


@given(
    st.integers(0, 255), st.sampled_from(sorted(bm.REGISTERS)), st.binary(min_size=4, max_size=4)
)
def test_register_response_round_trip(chip: int, reg: int, value: bytes) -> None:
    assert bm.decode_response(bm.register_response(chip, reg, value)) == bm.RegisterResponse(
        chip, reg, value
    )


def test_nonce_maps_to_chip_and_core() -> None:
    r = bm.NonceResponse(0xD0C12345, 1)  # core 13, chip field 0x0C, counter 0x12345
    assert r.core == 13 and r.chip_field == 0x0C and r.chip_index(3) == 4


def test_decode_response_errors() -> None:
    with pytest.raises(bm.FrameError, match="7 bytes"):
        bm.decode_response(b"\0" * 6)
    frame = bytearray(bm.nonce_response(1, 2))
    frame[0] ^= 0x40
    with pytest.raises(bm.FrameError, match="CRC5"):
        bm.decode_response(bytes(frame))


def _frames(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            out.append(bm.nonce_response(rng.getrandbits(32), rng.randrange(128)))
        else:
            out.append(bm.register_response(rng.randrange(256), 4, rng.randbytes(4)))
    return out


def test_stream_decoder_in_sync_and_split_reads() -> None:
    rng = random.Random(1)
    frames = _frames(rng, 200)
    data = b"".join(frames)
    dec = bm.StreamDecoder()
    got: list[bm.Response] = []
    i = 0
    while i < len(data):
        n = rng.randrange(1, 20)
        got += dec.feed(data[i : i + n])
        i += n
    assert [bm.decode_response(f) for f in frames] == got
    assert dec.crc_errors == 0 and dec.skipped_bytes == 0


def test_stream_decoder_recovers_after_lost_byte() -> None:
    frames = _frames(random.Random(2), 50)
    stream = bytearray(b"".join(frames))
    del stream[7 * 10 + 3]  # frame 10 loses a byte
    dec = bm.StreamDecoder()
    got = dec.feed(bytes(stream)) + dec.flush()
    want = [bm.decode_response(f) for i, f in enumerate(frames) if i != 10]
    assert got == want
    assert dec.crc_errors == 1 and dec.skipped_bytes == 6


@given(st.binary(max_size=400))
def test_stream_decoder_never_raises_on_random_bytes(data: bytes) -> None:
    dec = bm.StreamDecoder()
    got = dec.feed(data) + dec.flush()
    assert dec.frames == len(got)
    assert dec.frames * 7 + dec.skipped_bytes + dec.pending == len(data)


@settings(derandomize=True, max_examples=200)
@given(
    st.lists(st.tuples(st.binary(max_size=20), st.integers(1, 5)), min_size=1, max_size=8),
    st.integers(0, 2**32),
)
def test_stream_decoder_recovers_frames_in_noise(
    bursts: list[tuple[bytes, int]], seed: int
) -> None:
    """Noise bursts between runs of frames: every frame comes out, in order, whenever the noise
    does not itself form a window that checks (then no decoder could tell it from a frame; that
    happens about once in 32 windows, and test_..._never_raises covers those streams)."""
    rng = random.Random(seed)
    stream = b""
    noise_at: set[int] = set()
    want: list[bm.Response] = []
    for noise, n in bursts:
        noise_at.update(range(len(stream), len(stream) + len(noise)))
        frames = _frames(rng, n)
        stream += noise + b"".join(frames)
        want += [bm.decode_response(f) for f in frames]
    for k in range(len(stream) - 6):
        if noise_at.intersection(range(k, k + 7)) and bm.response_ok(stream, k):
            assume(False)
    dec = bm.StreamDecoder()
    got = dec.feed(stream) + dec.flush()
    assert got == want


def test_stream_decoder_counts_corrupt_frames() -> None:
    frames = _frames(random.Random(3), 20)
    stream = bytearray(b"".join(frames))
    stream[7 * 5 + 2] ^= 0x10
    dec = bm.StreamDecoder()
    got = dec.feed(bytes(stream)) + dec.flush()
    assert dec.crc_errors == 1 and dec.skipped_bytes == 7
    assert got == [bm.decode_response(f) for i, f in enumerate(frames) if i != 5]


def test_header_word_order_is_its_own_inverse() -> None:
    h = os.urandom(76)
    assert bm.work_data_to_header(bm.header_to_work_data(h)) == h


def test_addressed_pll_and_clock_gating_frames() -> None:
    from agent.emulator.hashboard import _crc5 as emu_crc5

    # the reference's broadcast vector, through the new helper
    assert bm.pll_write(384) == bytes.fromhex("51 08 00 08 00 7B 02 41 06")
    # addressed: header 0x41, chip byte set, same value; CRC5 agrees with the emulator's own
    f = bm.pll_write(400, chip=0x0C)
    assert f[:8] == bytes([0x41, 8, 0x0C, 0x08]) + bm.pll_for(400).value
    assert f[8] == emu_crc5(f[:8], 64)
    assert bm.decode_command(f) == bm.Command(1, False, 0x0C, 0x08, bm.pll_for(400).value)
    assert bm.core_clock_value(9, True) == bytes([0, 9, 0, 0])
    assert bm.core_clock_value(9, False) == bytes([0, 9, 0, 1])
    assert bm.chip_clock_value(False) == bytes([0x80, 0, 0, 1])
    g = bm.write_register(bm.REG_CORE_CMD_IN, bm.core_clock_value(13, False), 0x03)
    assert g[:8] == bytes([0x41, 8, 0x03, 0x3C, 0, 13, 0, 1])
    assert g[8] == emu_crc5(g[:8], 64)
