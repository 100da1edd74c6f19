"""StandardSAE (TopK, BatchTopK, ReLU, JumpReLU) against SAELens's inference SAEs."""

from __future__ import annotations

import pytest
import torch
from fixtures import assert_close_scaled

from tempolens.errors import ConfigError
from tempolens.saes.standard import StandardConfig, StandardSAE

torch.set_num_threads(1)

sae_lens = pytest.importorskip("sae_lens")


def randomize(sae: StandardSAE, seed: int) -> StandardSAE:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) / sae.d_in**0.5)
        sae.W_dec.copy_(torch.randn(sae.W_dec.shape, generator=g) * (0.5 + torch.rand(sae.width, 1, generator=g)))
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=g))
        sae.b_dec.copy_(0.3 * torch.randn(sae.b_dec.shape, generator=g))
        if sae.cfg.has_threshold:
            sae.threshold.copy_(0.2 * torch.rand(sae.width, generator=g))
    return sae


def to_saelens(sae: StandardSAE):
    c = sae.cfg
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[c.architecture]
    d = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.width,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
    }
    if arch == "topk":
        d["k"] = c.k
        d["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
    ref = sae_lens.SAE.from_dict(d)
    ref.load_state_dict({k: v.clone() for k, v in sae.state_dict().items()})
    return ref.eval()


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


CASES = [
    dict(architecture="topk", k=5),
    dict(architecture="topk", k=5, apply_b_dec_to_input=False),
    dict(architecture="topk", k=7, rescale_acts_by_decoder_norm=True),
    dict(architecture="topk", k=3, normalize_activations="constant_norm_rescale"),
    dict(architecture="relu"),
    dict(architecture="relu", normalize_activations="layer_norm"),
    dict(architecture="jumprelu", has_threshold=True),
    dict(architecture="jumprelu", has_threshold=True, apply_b_dec_to_input=False),
]


@pytest.mark.parametrize("kw", CASES, ids=[f"{c['architecture']}{i}" for i, c in enumerate(CASES)])
def test_matches_saelens(kw):
    sae = randomize(StandardSAE(StandardConfig(d_in=12, width=40, **kw)), seed=len(kw))
    ref = to_saelens(sae)
    x = torch.randn(3, 6, 12, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        acts_ref = ref.encode(x)
        recon_ref = ref(x)
    out = sae.encode(x)
    assert rel_err(out.codes.to_dense(40), acts_ref) < 1e-5
    assert rel_err(out.recon, recon_ref) < 1e-5
    torch.testing.assert_close(out.extras["sq_err"], (x - out.recon).pow(2).sum(-1))
    n_active = (acts_ref > 0).sum(-1)
    if kw["architecture"] == "topk":
        assert out.codes.n_slots == kw["k"]
    else:  # padded to the largest active count in the batch
        assert out.codes.n_slots == max(int(n_active.max()), 1)
    assert torch.equal((out.codes.indices >= 0).sum(-1), n_active)


def test_fold_decoder_norm_keeps_codes():
    sae = randomize(StandardSAE(StandardConfig("topk", d_in=12, width=40, k=6, rescale_acts_by_decoder_norm=True)), 1)
    x = torch.randn(2, 4, 12, generator=torch.Generator().manual_seed(0))
    before = sae.encode(x)
    sae.fold_decoder_norm()
    after = sae.encode(x)
    assert not sae.cfg.rescale_acts_by_decoder_norm
    assert_close_scaled(after.codes.to_dense(40), before.codes.to_dense(40), what="codes")
    assert_close_scaled(after.recon, before.recon, what="recon")
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(40))


def test_batchtopk_modes():
    cfg_kw = dict(d_in=12, width=40, k=4)
    thr = randomize(StandardSAE(StandardConfig("batchtopk", has_threshold=True, **cfg_kw)), 5)
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(3))
    assert thr.cfg.uses_threshold  # auto → threshold when the checkpoint has one
    out = thr.encode(x)
    pre, _ = thr.pre_activations(x)
    dense = torch.relu(pre) * (pre > thr.threshold)
    torch.testing.assert_close(out.codes.to_dense(40), dense)
    as_topk = StandardSAE(StandardConfig("batchtopk", has_threshold=True, batchtopk_mode="topk", **cfg_kw))
    as_topk.load_state_dict(thr.state_dict())
    o2 = as_topk.encode(x)
    assert o2.codes.n_slots == 4
    top = pre.topk(4, dim=-1)
    torch.testing.assert_close(o2.codes.values, top.values.clamp(min=0))
    # a global scalar threshold broadcasts
    sd = dict(thr.state_dict())
    sd["threshold"] = torch.tensor(0.05)
    thr.load_state_dict(sd)
    assert torch.equal(thr.threshold, torch.full((40,), 0.05))


def test_config_errors():
    with pytest.raises(ConfigError, match="k must"):
        StandardConfig("topk", d_in=4, width=8)
    with pytest.raises(ConfigError, match="threshold"):
        StandardConfig("jumprelu", d_in=4, width=8)
    with pytest.raises(ConfigError, match="normalize-activations"):
        StandardConfig("relu", d_in=4, width=8, normalize_activations="whiten")
    sae = StandardSAE(StandardConfig("relu", d_in=4, width=8))
    with pytest.raises(ConfigError, match="expects activations"):
        sae.encode(torch.zeros(1, 2, 5))
