"""Random-init SAEs: centring on the mean, scaling factor, specs, determinism."""

from __future__ import annotations

import pytest
import torch

from tempolens.errors import ConfigError
from tempolens.saes import StandardSAE, TemporalSAE, load_sae
from tempolens.saes.random_init import (
    activation_mean,
    estimate_scaling,
    needs_activation_stats,
    parse_random_spec,
    random_temporal_sae,
    random_topk_sae,
    sae_from_spec_with_stats,
)

torch.set_num_threads(1)


def dominated_acts(n=400, d=32, mean_norm=100.0, noise=5.0, seed=0):
    """Activations whose mean direction dominates (as Gemma 3's residual)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g)
    mean = direction / direction.norm() * mean_norm
    return mean + noise * torch.randn(n, d, generator=g)


def test_statistics_brute_force():
    acts = dominated_acts(n=50, d=8).reshape(5, 10, 8)
    flat = acts.reshape(-1, 8)
    assert estimate_scaling(acts) == pytest.approx(
        1.0 / float(sum(float(r.double().norm()) for r in flat) / 50), rel=1e-9
    )
    torch.testing.assert_close(activation_mean(acts), flat.mean(0))
    with pytest.raises(ConfigError, match="scaling factor"):
        estimate_scaling(torch.zeros(3, 4))


def test_random_temporal_init():
    mean = torch.arange(16.0)
    sae = random_temporal_sae(16, 64, 8, n_heads=4, seed=1, mean=mean, scaling_factor=0.1)
    assert isinstance(sae, TemporalSAE) and sae.cfg.tied and sae.cfg.scaling_factor == 0.1
    torch.testing.assert_close(sae.D.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(sae.b, mean * 0.1)  # b lives in scaled units
    torch.testing.assert_close(sae.b_dec, mean)  # model units
    again = random_temporal_sae(16, 64, 8, n_heads=4, seed=1, mean=mean, scaling_factor=0.1)
    other = random_temporal_sae(16, 64, 8, n_heads=4, seed=2, mean=mean, scaling_factor=0.1)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert not torch.equal(sae.D, other.D)
    out = sae.encode(torch.randn(2, 5, 16) + mean)
    assert torch.isfinite(out.recon).all() and (out.codes.indices >= 0).any()


def test_random_topk_init():
    mean = torch.ones(8) * 3
    sae = random_topk_sae(8, 32, 4, seed=0, mean=mean)
    assert isinstance(sae, StandardSAE)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert torch.equal(sae.b_dec, mean) and sae.cfg.apply_b_dec_to_input
    with pytest.raises(ConfigError, match="d_in=8"):
        random_topk_sae(8, 32, 4, mean=torch.ones(9))


@pytest.mark.parametrize("kind", ["topk", "temporal"])
def test_mean_bias_lets_latents_fire(kind):
    """Without centring, the dominant mean direction picks the same few latents for every token."""
    acts = dominated_acts()
    spec_auto = f"random:{kind}?width=256&k=4&seed=0"
    spec_zero = spec_auto + "&mean=zero"
    if kind == "temporal":
        spec_zero += f"&scale={estimate_scaling(acts)}"

    def alive(spec):
        sae = sae_from_spec_with_stats(spec, acts)
        idx = sae.encode(acts.reshape(8, 50, 32)).codes.indices
        return len(set(idx[idx >= 0].tolist()))

    centred, raw = alive(spec_auto), alive(spec_zero)
    assert centred > 150
    assert centred > 4 * raw


def test_spec_parsing():
    rs = parse_random_spec("random:temporal?width=2560&k=32&seed=3&n_heads=8&scale=0.01&mean=zero&d_in=640")
    assert (rs.kind, rs.width, rs.k, rs.seed, rs.n_heads, rs.scale, rs.mean, rs.d_in) == (
        "temporal",
        2560,
        32,
        3,
        8,
        0.01,
        "zero",
        640,
    )
    assert not rs.needs_stats
    assert parse_random_spec("random:topk").width is None
    assert needs_activation_stats("random:topk?width=64")
    assert not needs_activation_stats("random:topk?width=64&d_in=8&mean=zero")
    assert needs_activation_stats("random:temporal?d_in=8&mean=zero")  # scale still auto
    assert not needs_activation_stats("embedded")
    assert not needs_activation_stats("/some/folder")
    for bad, pattern in [
        ("random:topk?n_heads=4", "unknown option 'n_heads'"),
        ("random:topk?width=abc", "width must be an integer"),
        ("random:topk?width=0", "width must be positive"),
        ("random:relu", "kind must be temporal or topk"),
        ("random:temporal?scale=-1", "scale must be positive"),
        ("random:topk?mean=median", "mean must be auto or zero"),
        ("random:topk?k=3&k=4", "given twice"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            parse_random_spec(bad)


def test_spec_to_sae_and_load_sae():
    acts = dominated_acts(n=64, d=16)
    with pytest.raises(ConfigError, match="needs sample activations"):
        load_sae("random:temporal?width=64&k=4")
    sae = load_sae("random:temporal?width=64&k=4&seed=5", activation_sample=acts)
    assert isinstance(sae, TemporalSAE) and sae.width == 64 and sae.d_in == 16
    assert sae.cfg.scaling_factor == pytest.approx(estimate_scaling(acts))
    torch.testing.assert_close(sae.b_dec, activation_mean(acts))
    topk = load_sae("random:topk?d_in=16&mean=zero&k=4")  # needs no sample
    assert isinstance(topk, StandardSAE) and topk.width == 64 and topk.k == 4
    with pytest.raises(ConfigError, match="d_in=8"):
        sae_from_spec_with_stats("random:topk?d_in=8", acts)
    big_k = sae_from_spec_with_stats("random:topk?width=8&k=32", acts)
    assert big_k.k == 8
