"""The Temporal SAE training recipe, piece by piece: public training forward, per-tensor learning rates,
data-dependent attention init, loss mask, dominant-direction penalty and the learning-curve numbers."""

from __future__ import annotations

import math

import pytest
import torch

from tempolens.saes.temporal import TemporalConfig, TemporalSAE
from tempolens.train import trainer as T

torch.set_num_threads(1)


def small_sae(seed: int = 0) -> TemporalSAE:
    cfg = T.TrainConfig(arch="temporal", width=32, k=4, n_heads=2, bottleneck_factor=2, seed=seed, progress=False)
    return T.make_sae(cfg, 8, 0.5, torch.zeros(8), torch.Generator().manual_seed(seed))


def test_forward_train_is_the_forward_pass_in_scaled_units():
    sae = small_sae()
    x = torch.randn(2, 7, 8) * 3
    out = sae.forward_train(x, return_attn=True)
    assert torch.allclose(out.recon / sae.scaling_factor, sae(x), atol=1e-6)
    det = sae.forward_details(x)
    assert torch.allclose(out.z_pred, det.z_pred) and torch.equal(out.codes.indices, det.codes.indices)
    assert torch.allclose(out.attn[0], det.attn[0])
    # the direction d is ReLU(attention output)·D before p, recomputed by hand
    xs = x * sae.scaling_factor - sae.b
    z_in = torch.relu((xs * sae.lam) @ sae.encoder)
    att, _ = sae.attn_layers[0](z_in)
    d = torch.relu(att) @ sae.D
    assert torch.allclose(out.z_in[0], z_in, atol=1e-6) and torch.allclose(out.directions[0], d, atol=1e-5)
    p = (d * xs).sum(-1, keepdim=True) / (d.norm(dim=-1, keepdim=True) + 1e-6) ** 2
    assert torch.allclose(out.p[0], p, rtol=1e-4, atol=1e-6)
    # differentiable
    out.recon.pow(2).sum().backward()
    assert sae.D.grad is not None and sae.attn_layers[0].q_target.weight.grad is not None


def test_lr_multipliers_follow_the_rms_rule():
    sae = small_sae()
    cfg = T.TrainConfig(
        arch="temporal", width=32, k=4, n_heads=2, bottleneck_factor=2, lr_rms_gain=10, lr_rms_floor=0.01
    )
    m = T.lr_multipliers(sae, cfg)
    rms_d = float(sae.D.detach().pow(2).mean().sqrt())
    assert m["D"] == pytest.approx(10 * rms_d) and rms_d == pytest.approx(2.0, rel=0.15)
    # the q/k rows have norm 1/√(head size) over 32 inputs: RMS = 1/√(8·32) = 0.0625
    assert m["attn_layers.0.q_target.weight"] == pytest.approx(10 / math.sqrt(8 * 32), rel=1e-4)
    assert m["b"] == pytest.approx(10 * 0.01)  # zero bias → the floor
    single = T.lr_multipliers(
        sae, T.TrainConfig(arch="temporal", width=32, k=4, n_heads=2, bottleneck_factor=2, lr_rule="single")
    )
    assert set(single.values()) == {1.0}
    opt = T.make_optimizer(sae, cfg, m)
    assert len(opt.param_groups) == len(list(sae.parameters()))
    assert {g["name"]: g["lr"] for g in opt.param_groups}["D"] == pytest.approx(cfg.lr * m["D"])


def test_data_attention_init_gives_unit_rms_outputs_and_zero_biases():
    sae = small_sae()
    x = torch.randn(3, 10, 8) * 2 + 1
    T.data_attention_init_(sae, x)
    layer = sae.attn_layers[0]
    for lin in (layer.q_target, layer.k_ctx, layer.v_ctx, layer.c_proj):
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    out = sae.forward_train(x)
    z_in = out.z_in[0]
    ctx = torch.nn.functional.pad(z_in[:, :-1, :], (0, 0, 1, 0))

    def rms(t):
        return float(t.detach().pow(2).mean().sqrt())

    assert rms(layer.q_target(z_in)) == pytest.approx(1.0, rel=1e-4)
    assert rms(layer.k_ctx(ctx)) == pytest.approx(1.0, rel=1e-4)
    assert rms(layer.v_ctx(ctx)) == pytest.approx(1.0, rel=1e-4)
    seen = []
    h = layer.c_proj.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    sae.forward_train(x)
    h.remove()
    assert rms(layer.c_proj(seen[0])) == pytest.approx(1.0, rel=1e-4)


def test_loss_mask_and_direction_penalty_by_hand():
    x = torch.tensor([[[1.0, 0.0], [10.0, 0.0], [0.0, 2.0]]])
    special = torch.tensor([[True, False, False]])
    assert T.loss_mask(x, special, None).tolist() == [[False, True, True]]
    assert T.loss_mask(x, special, 5.0).tolist() == [[False, False, True]]
    v1 = torch.tensor([1.0, 0.0])
    d = torch.tensor([[[3.0, 4.0], [1.0, 1.0], [0.0, 1.0]]])
    mask = torch.tensor([[True, True, False]])
    # cos² = 9/25 and 1/2 on the two in-loss tokens
    assert float(T.direction_penalty([d], v1, mask)) == pytest.approx((0.36 + 0.5) / 2)
    # top principal direction of points spread along (1, 1)
    pts = torch.tensor([[t, t + 0.01 * (-1) ** i] for i, t in enumerate(torch.linspace(-2, 2, 9).tolist())])
    v = T.top_direction(pts)
    assert abs(float(v @ torch.tensor([1.0, 1.0]) / math.sqrt(2))) == pytest.approx(1.0, abs=1e-3)


def test_curve_numbers_by_hand():
    z = torch.zeros(6, 4)
    z[:, 1] = torch.arange(6.0)
    assert T.zpred_top1_share(z) == pytest.approx(1.0)
    # two uncorrelated directions of equal variance: half each
    z2 = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    assert T.zpred_top1_share(z2) == pytest.approx(0.5)
    # uniform causal attention has exactly the uniform entropy
    L = 5
    w = torch.tril(torch.ones(L, L))
    w = (w / w.sum(-1, keepdim=True))[None, None]
    ent, unif = T.attention_entropy([w], torch.ones(1, L, dtype=torch.bool))
    assert ent == pytest.approx(unif) and unif == pytest.approx(sum(math.log(t) for t in range(1, L + 1)) / L)
    W0 = torch.randn(10, 3)
    assert T.median_row_cosine(W0 * 5, W0) == pytest.approx(1.0)
    assert T.median_row_cosine(-W0, W0) == pytest.approx(-1.0)


def test_new_options_are_validated():
    from tempolens.errors import ConfigError

    for bad in (
        dict(loss_norm_cap=0.5),
        dict(direction_penalty=-1),
        dict(lr_rule="adam"),
        dict(lr_rms_floor=0),
        dict(curve_every=0),
    ):
        with pytest.raises(ConfigError):
            T.TrainConfig(**bad)


def test_temporal_config_unchanged_by_training_forward():
    cfg = TemporalConfig(d_in=8, width=16, k=2, n_heads=2)
    sae = TemporalSAE(cfg)
    x = torch.randn(1, 5, 8)
    a = sae(x)
    sae.forward_train(x)
    assert torch.equal(a, sae(x))
