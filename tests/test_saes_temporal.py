"""TemporalSAE against SAELens's independent implementation and hand-checked invariants."""

from __future__ import annotations

import math

import pytest
import torch

from tempolens.errors import ConfigError
from tempolens.saes.base import SAE
from tempolens.saes.temporal import TemporalConfig, TemporalSAE, predicted_share

torch.set_num_threads(1)

saelens_temporal = pytest.importorskip("sae_lens.saes.temporal_sae")


def randomize(sae: TemporalSAE, seed: int) -> TemporalSAE:
    """Fill every parameter with random values of a realistic scale (biases nonzero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "D":
                d = torch.randn(p.shape, generator=g)
                p.copy_(d / d.norm(dim=-1, keepdim=True))
            elif name == "E":
                e = torch.randn(p.shape, generator=g)
                p.copy_(e / e.norm(dim=0, keepdim=True))
            elif name == "b":
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]) * 3.0)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return sae


def reference(sae: TemporalSAE):
    """The same weights inside SAELens's TemporalSAE (with its constant scalar rescale)."""
    c = sae.cfg
    cfg = saelens_temporal.TemporalSAEConfig(
        d_in=c.d_in,
        d_sae=c.width,
        n_heads=c.n_heads,
        n_attn_layers=c.n_attn_layers,
        bottleneck_factor=c.bottleneck_factor,
        sae_diff_type=c.sae_diff_type,
        kval_topk=c.k,
        tied_weights=c.tied,
        normalize_activations="constant_scalar_rescale",
        activation_normalization_factor=c.scaling_factor,
        apply_b_dec_to_input=True,
    )
    ref = saelens_temporal.TemporalSAE(cfg)
    sd = {k: v for k, v in sae.state_dict().items() if k.startswith("attn_layers.")}
    sd["W_dec"] = sae.D.detach().clone()
    sd["b_dec"] = sae.b.detach().clone()
    if not c.tied:
        sd["W_enc"] = sae.E.detach().clone()
    ref.load_state_dict(sd)
    return ref.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


CASES = [
    # d_in, width, k, diff_type, heads, layers, bottleneck, tied, scale
    (16, 64, 8, "topk", 4, 1, 1, True, 1.0),
    (16, 64, 8, "topk", 4, 1, 1, False, 0.25),
    (12, 48, 6, "topk", 2, 2, 1, True, 0.5),
    (12, 48, None, "relu", 4, 1, 3, True, 2.0),
    (8, 32, None, "relu", 2, 2, 2, False, 1.0 / 3),
    (10, 40, 4, "topk", 4, 2, 2, False, 0.1),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_saelens(case):
    d_in, width, k, kind, heads, layers, bott, tied, scale = case
    sae = randomize(
        TemporalSAE(
            TemporalConfig(
                d_in=d_in,
                width=width,
                k=k,
                sae_diff_type=kind,
                n_heads=heads,
                n_attn_layers=layers,
                bottleneck_factor=bott,
                tied=tied,
                scaling_factor=scale,
            )
        ),
        seed=width + layers,
    )
    ref = reference(sae)
    x = torch.randn(3, 7, d_in, generator=torch.Generator().manual_seed(1)) * 4.0 / scale
    with torch.no_grad():
        z_novel_ref, z_pred_ref = ref.encode_with_predictions(x)
        recon_ref = ref(x)
    det = sae.forward_details(x)
    out = sae.encode(x)
    assert rel_err(det.z_pred, z_pred_ref) < 1e-5
    assert rel_err(det.z_novel, z_novel_ref) < 1e-5
    assert rel_err(det.recon, recon_ref) < 1e-5
    assert rel_err(out.recon, recon_ref) < 1e-5
    assert rel_err(out.codes.to_dense(width), z_novel_ref) < 1e-5
    # the predicted part is not trivial in these cases, and position 0 has one too (k/v biases)
    assert det.z_pred.abs().sum() > 0
    assert det.z_pred[:, 0].abs().sum() > 0
    # differentiable forward agrees as well
    with torch.no_grad():
        assert rel_err(sae(x), recon_ref) < 1e-5
    if kind == "topk":
        assert out.codes.n_slots == k
        assert ((out.codes.indices >= 0).sum(-1) <= k).all()
    # attention maps: rows sum to 1, causal
    for w in det.attn:
        assert w.shape == (3, heads, 7, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, heads, 7))
        assert torch.triu(w, diagonal=1).abs().max() == 0
    assert len(det.attn) == layers


def test_extras_and_slot_extras():
    sae = randomize(TemporalSAE(TemporalConfig(d_in=16, width=64, k=8, scaling_factor=0.5)), seed=3)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0)) * 3
    out = sae.encode(x)
    det = sae.forward_details(x)
    s = 0.5
    # brute force from the dense details
    r_pred = det.z_pred @ sae.D
    r_novel = det.z_novel @ sae.D
    a, c = r_pred.pow(2).sum(-1), r_novel.pow(2).sum(-1)
    torch.testing.assert_close(out.extras["pred_share"], a / (a + c), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(det.recon_pred, r_pred / s)
    torch.testing.assert_close(det.recon_novel, r_novel / s)
    torch.testing.assert_close(det.recon_pred + det.recon_novel + sae.b / s, det.recon)
    torch.testing.assert_close(out.extras["sq_err"], (x - out.recon).pow(2).sum(-1))
    torch.testing.assert_close(out.extras["sq_norm"], x.pow(2).sum(-1))
    idx = out.codes.indices
    valid = idx >= 0
    expect = torch.where(valid, det.z_pred.gather(-1, idx.clamp(min=0)), torch.zeros(()))
    torch.testing.assert_close(out.slot_extras["pred"], expect)
    assert out.slot_extras["pred"].shape == idx.shape
    # W_dec in model units, same direction as D
    torch.testing.assert_close(sae.W_dec, sae.D / s)
    assert isinstance(sae, SAE) and sae.is_temporal


def test_topk_keeps_fewer_when_few_positive():
    sae = TemporalSAE(TemporalConfig(d_in=4, width=8, k=6, n_heads=2))
    with torch.no_grad():
        sae.D.copy_(torch.cat([torch.eye(4), -torch.eye(4)]))
        sae.b.zero_()
        for layer in sae.attn_layers:  # no prediction: all attention weights/biases zero
            for p in layer.parameters():
                p.zero_()
    x = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]])
    out = sae.encode(x)
    # only latents 0 and 1 are positive (hand-computed: pre = lam·x·Dᵀ = [1,2,0,0,-1,-2,0,0]/16)
    assert out.codes.n_slots == 6
    got = {int(i): float(v) for i, v in zip(out.codes.indices[0, 0], out.codes.values[0, 0]) if i >= 0}
    assert got == pytest.approx({1: 2 / 16, 0: 1 / 16})
    assert (out.codes.values[0, 0][out.codes.indices[0, 0] < 0] == 0).all()
    assert float(out.extras["pred_share"]) == 0.0


def test_projection_denominator_and_position_zero_by_hand():
    """One layer, width 2, single head: check z_pred at position 0 against a hand computation."""
    sae = TemporalSAE(TemporalConfig(d_in=2, width=2, k=1, n_heads=1))
    with torch.no_grad():
        sae.D.copy_(torch.eye(2))
        sae.b.zero_()
        layer = sae.attn_layers[0]
        for p in layer.parameters():
            p.zero_()
        layer.v_ctx.bias.copy_(torch.tensor([1.0, 0.0]))
        layer.c_proj.weight.copy_(torch.eye(2))
    x = torch.tensor([[[3.0, 4.0]]])
    det = sae.forward_details(x)
    # position 0: context is the zero vector → v = bias = [1,0]; z = [1,0]; d = [1,0]
    p = 3.0 / (1.0 + 1e-6) ** 2
    torch.testing.assert_close(det.z_pred[0, 0], torch.tensor([p, 0.0]))
    # residual [3 - p, 4] → novel top-1 = latent 1 with lam·4 = 4/8
    torch.testing.assert_close(det.z_novel[0, 0], torch.tensor([0.0, 0.5]))


def test_b_as_row_vector_loads():
    sae = randomize(TemporalSAE(TemporalConfig(d_in=8, width=16, k=2, n_heads=2)), 0)
    sd = {k: v.clone() for k, v in sae.state_dict().items()}
    sd["b"] = sd["b"].reshape(1, -1)
    other = TemporalSAE(TemporalConfig(d_in=8, width=16, k=2, n_heads=2))
    other.load_state_dict(sd)
    assert torch.equal(other.b, sae.b)


def test_predicted_share_zero_when_both_zero():
    z = torch.zeros(2, 3, 4)
    assert torch.equal(predicted_share(z, z), torch.zeros(2, 3))


def test_bad_config_and_input():
    with pytest.raises(ConfigError, match="divisible"):
        TemporalConfig(d_in=8, width=30, k=2, n_heads=4)
    with pytest.raises(ConfigError, match="k must"):
        TemporalConfig(d_in=8, width=32, k=None, n_heads=4)
    sae = TemporalSAE(TemporalConfig(d_in=8, width=16, k=2, n_heads=2))
    with pytest.raises(ConfigError, match="expects activations"):
        sae.encode(torch.zeros(2, 3, 9))


def test_describe():
    sae = TemporalSAE(TemporalConfig(d_in=8, width=16, k=2, n_heads=2, scaling_factor=0.5, tied=False))
    d = sae.describe()
    assert d["architecture"] == "temporal" and d["width"] == 16 and d["d_in"] == 8 and d["k"] == 2
    assert d["n_heads"] == 2 and d["n_attn_layers"] == 1 and d["bottleneck_factor"] == 1
    assert d["tied"] is False and d["scaling_factor"] == 0.5


def test_half_precision_zero_prediction_is_finite():
    """With all-zero attention output, (‖d‖+1e-6)² underflows in fp16; the projection is done in fp32."""
    sae = TemporalSAE(TemporalConfig(d_in=8, width=16, k=2, n_heads=2)).half()
    with torch.no_grad():
        for layer in sae.attn_layers:
            for p in layer.parameters():
                p.zero_()
    out = sae.encode(torch.randn(1, 3, 8).half())
    assert torch.isfinite(out.recon).all()
    assert torch.equal(out.extras["pred_share"], torch.zeros(1, 3))


def test_sparse_decode_matches_dense_with_gradients():
    from tempolens.saes.base import SparseCodes
    from tempolens.saes.temporal import sparse_decode

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 4, generator=g, requires_grad=True)
    vals = torch.rand(2, 3, 5, generator=g, requires_grad=True)
    idx = torch.randint(0, 10, (2, 3, 5), generator=g)
    idx[0, 0, 2:] = -1  # empty slots contribute nothing
    out = sparse_decode(SparseCodes(idx, vals), weight)
    dense = SparseCodes(idx, vals).to_dense(10)
    ref = dense @ weight
    torch.testing.assert_close(out, ref)
    gw, gv = torch.autograd.grad(out.pow(2).sum(), (weight, vals))
    rw, rv = torch.autograd.grad(ref.pow(2).sum(), (weight, vals))
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gv, rv)
