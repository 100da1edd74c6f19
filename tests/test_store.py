"""The code store: CSR packing, atomic shards, checksums, resume bookkeeping."""

from __future__ import annotations

import json

import pytest
import torch

from tempolens.saes.base import SparseCodes
from tempolens.store import CodeStore, StoreError, StoreWriter, pack_codes


def _meta(n_shards=2, shard_size=2, width=16, T=5):
    return {
        "model": {"spec": "tiny"},
        "sae": {"spec": "x", "width": width},
        "prompts": {"n_prompts": n_shards * shard_size, "prompt_len": T, "seed": 0},
        "n_shards": n_shards,
        "shard_size": shard_size,
    }


def _random_shard(P=2, T=5, width=16, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.relu(torch.randn(P, T, width, generator=g)) * (torch.rand(P, T, width, generator=g) < 0.3)
    codes = SparseCodes.from_dense(dense)
    return dense, codes


def test_pack_codes_roundtrip_dense():
    dense, codes = _random_shard()
    ptr, lat, val, extras = pack_codes(codes.indices, codes.values, {"pred": codes.values * 2})
    assert ptr.shape == (2 * 5 + 1,)
    assert int(ptr[-1]) == int((dense > 0).sum()) == lat.numel()
    rebuilt = torch.zeros(10, 16)
    tok = torch.repeat_interleave(torch.arange(10), ptr[1:] - ptr[:-1])
    rebuilt[tok, lat.long()] = val
    torch.testing.assert_close(rebuilt.view(2, 5, 16), dense)
    torch.testing.assert_close(extras["pred"], val * 2)


def test_pack_codes_drops_empty_and_nonpositive_slots():
    idx = torch.tensor([[[3, -1, 5]]])
    val = torch.tensor([[[1.5, 0.0, 0.0]]])
    ptr, lat, v, _ = pack_codes(idx, val)
    assert ptr.tolist() == [0, 1] and lat.tolist() == [3] and v.tolist() == [1.5]


def test_sparse_codes_from_dense_respects_k():
    dense = torch.tensor([[[0.0, 3.0, 1.0, 2.0]]])
    c = SparseCodes.from_dense(dense, k=2)
    assert c.indices.tolist() == [[[1, 3]]]
    torch.testing.assert_close(c.to_dense(4), torch.tensor([[[0.0, 3.0, 0.0, 2.0]]]))


def _write(writer, i, seed):
    dense, codes = _random_shard(seed=seed)
    ptr, lat, val, _ = pack_codes(codes.indices, codes.values)
    writer.write_shard(
        i,
        tokens=torch.arange(10).view(2, 5),
        prompt_ids=torch.tensor([2 * i, 2 * i + 1]),
        special=torch.zeros(2, 5, dtype=torch.bool),
        code_ptr=ptr,
        code_latent=lat,
        code_value=val,
        extras={"sq_err": torch.ones(2, 5)},
    )
    return dense


def test_store_write_read_and_resume(tmp_path):
    w = StoreWriter(tmp_path / "s", _meta())
    d0 = _write(w, 0, 0)
    assert w.done_shards() == {0}
    store = CodeStore(tmp_path / "s")
    assert not store.complete
    with pytest.raises(StoreError, match="incomplete"):
        list(store.iter_shards())
    # a second writer with the same meta sees the finished shard (resume)
    w2 = StoreWriter(tmp_path / "s", _meta())
    assert w2.done_shards() == {0}
    d1 = _write(w2, 1, 1)
    shards = list(CodeStore(tmp_path / "s").iter_shards())
    torch.testing.assert_close(shards[0].dense(16), d0)
    torch.testing.assert_close(shards[1].dense(16), d1)
    assert shards[1].extras["sq_err"].shape == (2, 5)


def test_store_refuses_other_run_without_overwrite(tmp_path):
    StoreWriter(tmp_path / "s", _meta())
    other = _meta()
    other["model"] = {"spec": "other"}
    with pytest.raises(StoreError, match="different run"):
        StoreWriter(tmp_path / "s", other)
    StoreWriter(tmp_path / "s", other, overwrite=True)


def test_corrupt_shard_is_named(tmp_path):
    w = StoreWriter(tmp_path / "s", _meta(n_shards=1))
    _write(w, 0, 0)
    p = CodeStore(tmp_path / "s").shard_path(0)
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt.*rerun"):
        CodeStore(tmp_path / "s").load_shard(0)


def test_truncated_shard_is_named(tmp_path):
    w = StoreWriter(tmp_path / "s", _meta(n_shards=1))
    _write(w, 0, 0)
    p = CodeStore(tmp_path / "s").shard_path(0)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(StoreError, match="shard"):
        CodeStore(tmp_path / "s").load_shard(0)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="tempolens collect"):
        CodeStore(tmp_path)
    (tmp_path / "meta.json").write_text("{nope")
    with pytest.raises(StoreError, match="not valid JSON"):
        CodeStore(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(StoreError, match="format"):
        CodeStore(tmp_path)
