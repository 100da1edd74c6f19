"""The bf16-screened TopK encode: the exact top k (against a float64 reference, with near-ties, exact ties and ReLU
zeros), correctly rounded values, the float32 redo of rows it cannot take, and the store it writes through collect."""

from __future__ import annotations

import pytest
import torch

from tempolens.saes import bf16_encode
from tempolens.saes.standard import StandardSAE

pytestmark = pytest.mark.skipif(bf16_encode.njit is None, reason="the screened encode needs numba")


def _weights(width: int, d: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d, width, generator=g) / d**0.5
    W_enc[:, 0] *= 4  # a dominant latent
    for j in range(1, 40):  # near-duplicates (1e-5 relative apart: far below bf16's 4e-3) and exact duplicates
        W_enc[:, width - j] = W_enc[:, j] * (1 + 1e-5 * j) if j < 30 else W_enc[:, j]
    return {
        "W_enc": W_enc,
        "b_enc": 0.1 * torch.randn(width, generator=g) - 0.05,
        "W_dec": torch.randn(width, d, generator=g) / d**0.5,
        "b_dec": 0.1 * torch.randn(d, generator=g),
    }


def _reference(x: torch.Tensor, w: dict[str, torch.Tensor], k: int, mult: torch.Tensor | None = None):
    """The exact top k of the float64 scores: descending, equal values by the lower latent."""
    s = (x - w["b_dec"]).double() @ w["W_enc"].double() + w["b_enc"].double()
    if mult is not None:
        s = s * mult.double()
    ids = torch.stack([torch.tensor(sorted(range(s.shape[1]), key=lambda j: (-float(row[j]), j))[:k]) for row in s])
    return s.gather(1, ids), ids


@pytest.mark.parametrize("rescale", [False, True])
def test_screened_topk_is_the_exact_topk(rescale):
    width, k = 8192, 16
    w = _weights(width)
    x = 3 * torch.randn(40, 48, generator=torch.Generator().manual_seed(1))
    x[1] = x[0]  # identical tokens: identical codes
    sae = StandardSAE.from_saelens_weights(w, "topk", k=k, rescale_acts_by_decoder_norm=rescale)
    mult = w["W_dec"].norm(dim=-1) if rescale else None
    xc = (x - w["b_dec"]).contiguous()
    enc = bf16_encode.Bf16Encoder.of(w["W_enc"], w["b_enc"], mult, ())
    vals, ids, n_cand = bf16_encode.topk_scores(xc, enc, k)
    ref_vals, ref_ids = _reference(x, w, k, mult)
    assert torch.equal(ids, ref_ids)  # also at the near-duplicates and the exact ties (lower latent first)
    assert torch.equal(vals, ref_vals.float())  # correctly rounded (float64 sums rounded once)
    assert (n_cand >= k).all() and float(n_cand.float().mean()) < width / 8  # a screen, not a full recomputation
    again = bf16_encode.topk_scores(xc.clone().requires_grad_(), enc, k)  # an input that needs grad is only read
    assert torch.equal(again[1], ids) and torch.equal(again[0], vals)
    # through the SAE: the codes drop values <= 0 as the float32 encode does, the reconstruction agrees
    fp32 = sae.encode(x[None])
    sae.encode_precision = "bf16"
    b16 = sae.encode(x[None])
    assert sae._bf16 is not None
    expect = torch.where(ref_vals > 0, ref_ids, -1)[None]
    assert torch.equal(b16.codes.indices, expect)
    torch.testing.assert_close(b16.recon, fp32.recon, rtol=1e-5, atol=1e-5)
    near = (fp32.codes.indices != b16.codes.indices).any(-1)  # float32 may differ only at near-ties
    assert float(near.float().mean()) <= 0.1


def test_rows_the_screen_cannot_take_are_redone_in_float32():
    """A non-finite score, and more tied candidates than the screen keeps, give the float32 encode's codes."""
    width, k = 8192, 8
    w = _weights(width, seed=2)
    w["W_enc"][:, 5000:7000] = w["W_enc"][:, 4999:5000]  # 2,001 identical latents: over the candidate cap
    x = 3 * torch.randn(6, 48, generator=torch.Generator().manual_seed(3))
    x[2] = w["W_enc"][:, 4999] * 50 + w["b_dec"]  # this token's top k are all among the identical latents
    xc = (x - w["b_dec"]).contiguous()
    vals, ids, n_cand = bf16_encode.topk_scores(xc, bf16_encode.Bf16Encoder.of(w["W_enc"], w["b_enc"], None, ()), k)
    assert n_cand[2] == -1 and (n_cand[[0, 1, 3, 4, 5]] >= k).all()
    sae = StandardSAE.from_saelens_weights(w, "topk", k=k)
    fp32 = sae.encode(x[None])
    sae.encode_precision = "bf16"
    b16 = sae.encode(x[None])
    assert torch.equal(b16.codes.indices[0, 2], fp32.codes.indices[0, 2])  # the row's float32 matmul: same codes
    torch.testing.assert_close(b16.codes.values[0, 2], fp32.codes.values[0, 2], rtol=1e-6, atol=0)
    with torch.no_grad():
        sae.W_enc[0, 100] = float("inf")  # every token's score of latent 100 is ±inf or NaN
    fp32 = StandardSAE.from_saelens_weights({**w, "W_enc": sae.W_enc.detach()}, "topk", k=k).encode(x[None])
    b16 = sae.encode(x[None])  # the encoder is rebuilt for the changed weights
    assert torch.equal(b16.codes.indices, fp32.codes.indices)


def test_narrow_or_non_topk_saes_ignore_bf16():
    """Below 8,192 latents, and for ReLU/JumpReLU SAEs, bf16 changes nothing: the float32 encode runs."""
    x = torch.randn(1, 10, 48, generator=torch.Generator().manual_seed(4))
    for width, arch in ((4096, "topk"), (8192, "relu")):
        sae = StandardSAE.from_saelens_weights(_weights(width), arch, k=8 if arch == "topk" else None)
        a = sae.encode(x)
        sae.encode_precision = "bf16"
        b = sae.encode(x)
        assert sae._bf16 is None and torch.equal(a.codes.indices, b.codes.indices)
        assert torch.equal(a.codes.values, b.codes.values)


def test_collect_with_bf16_writes_the_exact_topk(tiny_lm_dir, tmp_path):
    """`collect --encode-precision bf16` on an 8,192-latent TopK SAE: the store records the precision, and every
    token's codes are the float32 store's up to near-ties (same latents on ≥ 99% of tokens, values to 1e-5)."""
    from fixtures import write_word_corpus

    from tempolens.collect import CollectConfig, collect
    from tempolens.store import CodeStore

    corpus = write_word_corpus(tmp_path / "docs.txt", seed=0)
    stores = {}
    for precision in ("fp32", "bf16"):
        cfg = CollectConfig(
            model=str(tiny_lm_dir),
            layer=2,
            sae="random:topk?width=8192&k=16&seed=1",
            corpus=str(corpus),
            n_prompts=8,
            prompt_len=16,
            shard_prompts=4,
            batch_size=4,
            out=tmp_path / precision,
            progress=False,
            encode_precision=precision,
        )
        collect(cfg)
        stores[precision] = CodeStore(tmp_path / precision)
    assert stores["bf16"].meta["encode_precision"] == "bf16" and stores["fp32"].meta["encode_precision"] == "fp32"
    a = torch.cat([sh.dense(8192) for sh in stores["fp32"].iter_shards()])
    b = torch.cat([sh.dense(8192) for sh in stores["bf16"].iter_shards()])
    same = ((a != 0) == (b != 0)).all(-1)
    assert float(same.float().mean()) >= 0.99
    torch.testing.assert_close(b[same], a[same], rtol=1e-5, atol=1e-5)


def test_encode_precision_option():
    from tempolens.collect import CollectConfig
    from tempolens.devices import matmul_precision, native_bf16_cpu
    from tempolens.errors import ConfigError, DeviceError

    assert matmul_precision("auto", torch.device("cpu"), "--x") == ("bf16" if native_bf16_cpu() else "fp32")
    assert matmul_precision("auto", torch.device("meta"), "--x") == "fp32"
    with pytest.raises(DeviceError, match="--encode-precision bf16 runs on CPUs"):
        matmul_precision("bf16", torch.device("meta"), "--encode-precision")
    with pytest.raises(ConfigError, match="--encode-precision must be"):
        CollectConfig(encode_precision="fp16")  # type: ignore[arg-type]
