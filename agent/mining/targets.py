"""Share-target maths for scrypt (pure).

Scrypt pools use the stratum convention target(D) = floor(0xffff * 2**224 / D): difficulty 1 is a
target 65536 times easier than Bitcoin's, so a nonce meeting difficulty D costs D * 65536 hashes on
average. Network difficulty from nBits has no such factor (same formula as Bitcoin)."""

from __future__ import annotations

from fractions import Fraction

MAX_TARGET = (1 << 256) - 1
DIFF1_TARGET = 0xFFFF << 224  # stratum difficulty 1 for scrypt
BITCOIN_DIFF1_TARGET = 0xFFFF << 208  # network difficulty 1 (nBits 0x1d00ffff)
HASHES_PER_DIFF1 = 1 << 16  # expected scrypt hashes per difficulty-1 share: 2**256 / DIFF1_TARGET


def _fraction(difficulty: float | int | Fraction, what: str) -> Fraction:
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | float | Fraction):
        raise TypeError(f"{what} must be a number, not {type(difficulty).__name__}")
    try:
        value = Fraction(difficulty)  # exact, so integer difficulties give exact targets
    except (ValueError, OverflowError):
        raise ValueError(f"{what} must be finite, got {difficulty}") from None
    if value <= 0:
        raise ValueError(f"{what} must be > 0, got {difficulty}")
    return value


def difficulty_to_target(difficulty: float | int | Fraction) -> int:
    """floor(0xffff * 2**224 / D), capped at 2**256 - 1 (every hash meets a very easy one)."""
    d = _fraction(difficulty, "difficulty")
    return min(MAX_TARGET, DIFF1_TARGET * d.denominator // d.numerator)


def target_to_difficulty(target: int) -> float:
    """Stratum difficulty of a target: 0xffff * 2**224 / target."""
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be an int, not {type(target).__name__}")
    if not 0 < target <= MAX_TARGET:
        raise ValueError(f"target must be in 1..2**256-1, got {target}")
    return DIFF1_TARGET / target


def nbits_to_target(bits: int) -> int:
    """Target of a compact nBits (Bitcoin's SetCompact); negative or overflowing is an error."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 0xFFFFFFFF:
        raise ValueError(f"nBits must be a 32-bit unsigned int, got {bits!r}")
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise ValueError(f"nBits 0x{bits:08x} is negative")
    target = mantissa >> 8 * (3 - exponent) if exponent <= 3 else mantissa << 8 * (exponent - 3)
    if target > MAX_TARGET:
        raise ValueError(f"nBits 0x{bits:08x} overflows 256 bits")
    return target


def network_difficulty(bits: int) -> float:
    """Network difficulty of nBits: 0xffff * 2**208 / target (no 65536 factor)."""
    target = nbits_to_target(bits)
    if target == 0:
        raise ValueError(f"nBits 0x{bits:08x} encodes a zero target")
    return BITCOIN_DIFF1_TARGET / target


def hashes_for_difficulty(difficulty: float) -> float:
    """Expected scrypt hashes to find one nonce meeting a stratum difficulty."""
    return float(difficulty) * HASHES_PER_DIFF1


def meets(raw_hash: bytes, target: int) -> bool:
    """True when a raw scrypt hash, read little-endian, is <= target."""
    return int.from_bytes(raw_hash, "little") <= target
