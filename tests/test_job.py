"""agent.mining.job: the notify -> header maths, against the public vectors and real blocks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import _scrypt, scrypt
from agent.mining import job as J
from agent.mining.targets import difficulty_to_target, nbits_to_target
from agent.stratum.protocol import Notify


def _notify(**kw) -> Notify:
    base = dict(
        job_id="1",
        prevhash=bytes(32),
        coinb1=b"\x01\x02",
        coinb2=b"\x03",
        merkle_branch=(),
        version=0x20000000,
        nbits=0x207FFFFF,
        ntime=1_700_000_000,
        clean_jobs=True,
    )
    base.update(kw)
    return Notify(**base)


def test_prevhash_word_swap_vector(vectors):
    v = vectors["prevhash_byte_order"]
    header = bytes.fromhex(v["header_bytes"])
    notify = bytes.fromhex(v["stratum_notify"])
    assert J.swap_words(notify) == header
    assert J.swap_words(header) == notify  # its own inverse
    assert J.prevhash_from_display(v["rpc_display"]) == header


def test_bip34_prefixes(vectors):
    for row in vectors["bip34_height_prefix"]:
        assert J.bip34_height(row["height"]).hex() == row["script_prefix"], row


def test_bip34_bad_height():
    with pytest.raises(ValueError, match="block height"):
        J.bip34_height(-1)


def test_nbits_and_share_targets(vectors):
    for row in vectors["nbits_to_target"]:
        job = J.Job("p", _notify(nbits=int(row["bits"], 16)), 1, b"", 4)
        assert job.network_target == int(row["target"], 16)
    job = J.Job("p", _notify(), 1024, b"", 4)
    assert job.share_target == difficulty_to_target(1024) == int("0000003fffc0" + "0" * 52, 16)


@pytest.mark.parametrize("index", [0, 1])
def test_genesis_rebuilt_from_fields(vectors, index):
    """Litecoin and Dogecoin genesis: split the real coinbase into coinb1/en1/en2/coinb2 and
    rebuild the header from notify-shaped fields; every byte and both hashes must match."""
    b = vectors["real_blocks"][index]
    cb = bytes.fromhex(b["coinbase_tx"])
    cut = 50  # any split works: the coinbase is just concatenated
    notify = _notify(
        job_id=b["coin"],
        prevhash=J.swap_words(bytes.fromhex(b["prev_hash"])[::-1]),
        coinb1=cb[:cut],
        coinb2=cb[cut + 7 :],
        version=b["version"],
        nbits=int(b["bits"], 16),
        ntime=b["time"],
    )
    job = J.Job("pool", notify, 1, cb[cut : cut + 3], 4)
    en2 = cb[cut + 3 : cut + 7]
    assert job.coinbase(en2) == cb
    assert job.merkle_root(en2)[::-1].hex() == b["merkle_root"]
    header = job.header80(en2, b["nonce"])
    assert header.hex() == b["header"]
    assert J.block_hash_hex(header) == b["block_hash"]
    pow_raw = scrypt.pow_hash(header)
    assert pow_raw[::-1].hex() == b["pow_hash"]
    assert (
        int.from_bytes(pow_raw, "little")
        <= job.network_target
        == nbits_to_target(int(b["bits"], 16))
    )
    params = job.submit_params("w", en2, b["time"], b["nonce"])
    assert params == ["w", b["coin"], en2.hex(), f"{b['time']:08x}", f"{b['nonce']:08x}"]
    # the nonce goes back as the big-endian hex of the header's little-endian uint32
    assert bytes.fromhex(params[4])[::-1] == header[76:]


def test_header_vectors_through_header80(vectors):
    for v in vectors["scrypt_header_vectors"]:
        h = bytes.fromhex(v["header"])
        if len(h) != 80:
            continue
        version, ntime, nbits, nonce = (
            int.from_bytes(h[a : a + 4], "little") for a in (0, 68, 72, 76)
        )
        rebuilt = J.header80(version, h[4:36], h[36:68], ntime, nbits, nonce)
        assert rebuilt == h
        assert scrypt.pow_hash(rebuilt).hex() == v["pow_hash_raw"]


def test_merkle_branch_matches_full_tree():
    for n in range(0, 12):
        txids = [hashlib.sha256(bytes([i])).digest() for i in range(n + 1)]
        branch = J.merkle_branch(txids[1:])
        assert J.merkle_root(txids[0], branch) == J.merkle_root_of(txids)
        # reference tree, computed the textbook way
        level = list(txids)
        while len(level) > 1:
            if len(level) % 2:
                level.append(level[-1])
            level = [J.sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        assert J.merkle_root_of(txids) == level[0]


@settings(max_examples=200, deadline=None)
@given(
    coinb1=st.binary(max_size=120),
    coinb2=st.binary(max_size=120),
    extranonce1=st.binary(max_size=8),
    extranonce2=st.binary(min_size=1, max_size=8),
    branch=st.lists(st.binary(min_size=32, max_size=32), max_size=14),
)
def test_the_jobs_merkle_root_in_c_is_the_reference_fold(
    coinb1: bytes, coinb2: bytes, extranonce1: bytes, extranonce2: bytes, branch: list[bytes]
) -> None:
    """Job.merkle_root (the C core's fold, used for every work at each notify) is exactly the
    Python reference: sha256d(coinbase) up the branch with sha256d."""
    job = J.Job("p", _notify(coinb1=coinb1, coinb2=coinb2, merkle_branch=tuple(branch)), 1,
                extranonce1, len(extranonce2))  # fmt: skip
    cb = coinb1 + extranonce1 + extranonce2 + coinb2
    want = J.merkle_root(J.sha256d(cb), branch)
    assert job.merkle_root(extranonce2) == want
    assert job.header76(extranonce2)[36:68] == want


def test_the_c_merkle_fold_refuses_a_ragged_branch():
    with pytest.raises(ValueError, match="merkle branch must be a multiple of 32 bytes, got 33"):
        _scrypt.merkle_root(b"cb", bytes(33))
    with pytest.raises(TypeError):
        _scrypt.merkle_root("cb", b"")


def test_a_bad_branch_hash_is_named_when_the_job_is_made():
    with pytest.raises(ValueError, match=r"notify\.merkle_branch\[1\] must be 32 bytes, got 31"):
        J.Job("p", _notify(merkle_branch=(bytes(32), bytes(31))), 1, b"", 4)
    with pytest.raises(TypeError, match=r"notify\.coinb1 must be bytes"):
        J.Job("p", _notify(coinb1="01"), 1, b"", 4)


def test_version_with_top_bit_and_ntime_override():
    job = J.Job("p", _notify(version=0xE0000000), 1, b"\xaa" * 4, 4)
    h = job.header80(b"\x00" * 4, 0x01020304, ntime=0x11223344)
    assert h[:4] == b"\x00\x00\x00\xe0"
    assert h[68:72] == bytes.fromhex("44332211")
    assert h[76:] == bytes.fromhex("04030201")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="extranonce2 must be 4 bytes"):
        J.Job("p", _notify(), 1, b"", 4).coinbase(b"\x00")
    with pytest.raises(ValueError, match="extranonce2_size"):
        J.Job("p", _notify(), 1, b"", 0)
    with pytest.raises(ValueError, match="difficulty"):
        J.Job("p", _notify(), 0, b"", 4)
    with pytest.raises(ValueError, match="merkle_branch\\[0\\]"):
        J.merkle_root(bytes(32), [b"short"])
    with pytest.raises(ValueError, match=r"notify\.ntime"):
        J.Job("p", _notify(ntime=-1), 1, b"", 4)
