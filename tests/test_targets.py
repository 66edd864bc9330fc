"""Share-target maths against the public vectors (tests/data/scrypt-pow.json)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.mining import targets as T


def test_share_targets_match_vectors(vectors: dict) -> None:
    rows = vectors["scrypt_share_targets"]["rows"]
    assert int(vectors["scrypt_share_targets"]["diff1_target"], 16) == T.DIFF1_TARGET
    for row in rows:
        got = T.difficulty_to_target(row["stratum_difficulty"])
        if row["target_exact_floor"] is not None:
            assert got == int(row["target_exact_floor"], 16), row
        # cpuminer computes with doubles: its top 64 bits are right to double precision.
        cpuminer = int(row["target_cpuminer"], 16)
        assert abs(got - cpuminer) <= cpuminer >> 50, row


def test_nbits_vectors(vectors: dict) -> None:
    for row in vectors["nbits_to_target"]:
        bits = int(row["bits"], 16)
        assert T.nbits_to_target(bits) == int(row["target"], 16), row
        assert T.network_difficulty(bits) == pytest.approx(row["network_difficulty"], rel=1e-12)


def test_real_blocks_meet_their_nbits(vectors: dict) -> None:
    for block in vectors["real_blocks"]:
        assert T.nbits_to_target(int(block["bits"], 16)) == int(block["target"], 16)
        raw = bytes.fromhex(block["pow_hash"])[::-1]
        assert T.meets(raw, int(block["target"], 16))


def test_difficulty_one_costs_65536_hashes() -> None:
    assert T.hashes_for_difficulty(1) == 65536
    assert T.target_to_difficulty(T.difficulty_to_target(256)) == 256
    # 1/1024, the emulated board's ticket: one nonce per 64 hashes
    assert (1 << 256) // T.difficulty_to_target(Fraction(1, 1024)) == 64


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), -0.5])
def test_bad_difficulty_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="difficulty"):
        T.difficulty_to_target(bad)


@pytest.mark.parametrize("bad", ["1", None, True])
def test_non_number_difficulty_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        T.difficulty_to_target(bad)  # type: ignore[arg-type]


def test_bad_nbits() -> None:
    with pytest.raises(ValueError, match="negative"):
        T.nbits_to_target(0x1D80FFFF)
    with pytest.raises(ValueError, match="overflows"):
        T.nbits_to_target(0xFF7FFFFF)
    with pytest.raises(ValueError):
        T.nbits_to_target(1 << 32)
    assert T.nbits_to_target(0x01003456) == 0  # tiny exponent shifts the mantissa out


@given(st.integers(min_value=1, max_value=1 << 64))
def test_target_shrinks_as_difficulty_grows(d: int) -> None:
    assert T.difficulty_to_target(d + 1) <= T.difficulty_to_target(d)
    assert T.target_to_difficulty(T.difficulty_to_target(d)) == pytest.approx(d, rel=1e-9)
