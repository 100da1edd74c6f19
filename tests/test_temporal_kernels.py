"""Similarity kernels, attention re-indexing and predicted share, against hand-computed values."""

from __future__ import annotations

import math
import resource
import time

import pytest
import torch

from tempolens.errors import TempolensError
from tempolens.saes.base import SparseCodes
from tempolens.temporal.kernels import (
    KernelInputError,
    attention_by_token,
    predicted_share,
    similarity_kernel,
    top_latents,
)

torch.set_num_threads(1)


def reference_kernel(x: torch.Tensor) -> torch.Tensor:
    """Brute-force fp64 reference: centre, normalise (zero rows stay zero), Gram."""
    p = x.double() - x.double().mean(0)
    n = p.norm(dim=-1, keepdim=True)
    p = torch.where(n > 1e-9, p / n, torch.zeros_like(p))
    return p @ p.T


def test_hand_computed_3x4():
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]])
    # mean = (1/3)·1; centred rows: (2,-1,-1,-1)/3, (-1,2,-1,-1)/3, (-1,-1,2,2)/3
    # squared norms 7/9, 7/9, 10/9; dots: r0·r1 = -2/9, r0·r2 = r1·r2 = -5/9
    c = -5 / math.sqrt(70)
    full = torch.tensor([[1, -2 / 7, c], [-2 / 7, 1, c], [c, c, 1]])
    assert torch.allclose(similarity_kernel(x, drop_first=False), full, atol=1e-6)
    assert torch.allclose(similarity_kernel(x), full[1:, 1:], atol=1e-6)


def test_bos_dropped_after_not_before():
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]])
    after = similarity_kernel(x)
    before = similarity_kernel(x[1:], drop_first=False)
    # without BOS in the mean the two remaining centred rows are opposite: cosine -1
    assert torch.allclose(before, torch.tensor([[1.0, -1], [-1, 1]]), atol=1e-6)
    assert not torch.allclose(after, before, atol=1e-3)
    assert after.shape == (2, 2)


def test_zero_rows_give_zero_rows_not_nan():
    x = torch.tensor([[1.0, 0], [0, 1], [0.5, 0.5]])  # the last row equals the mean
    s = similarity_kernel(x, drop_first=False)
    assert torch.isfinite(s).all()
    assert torch.equal(s[2], torch.zeros(3)) and torch.equal(s[:, 2], torch.zeros(3))
    assert s[0, 0] == pytest.approx(1.0) and s[0, 1] == pytest.approx(-1.0)
    const = similarity_kernel(torch.ones(5, 3), drop_first=False)
    assert torch.equal(const, torch.zeros(5, 5))


def test_matches_reference_random_and_sparse_and_batched_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(37, 50, generator=g))
    ref = reference_kernel(x)
    for block in (1, 7, 1024):
        s = similarity_kernel(x, drop_first=False, block_rows=block)
        assert torch.allclose(s.double(), ref, atol=2e-6)
    assert torch.allclose(similarity_kernel(x[None]), similarity_kernel(x))
    sparse = SparseCodes.from_dense(x[None])
    assert torch.allclose(similarity_kernel(sparse, width=50), similarity_kernel(x), atol=1e-6)
    s = similarity_kernel(x)
    assert s.shape == (36, 36) and torch.allclose(s, s.T)


def test_long_input_bounded_memory_and_time():
    L, W, K = 2000, 256, 16
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(L, W, generator=g))
    t0 = time.perf_counter()
    s = similarity_kernel(x, block_rows=512)
    assert time.perf_counter() - t0 < 20
    assert s.shape == (L - 1, L - 1)
    ref = reference_kernel(x)[1:, 1:]
    assert torch.allclose(s.double(), ref, atol=1e-5)
    # sparse codes of a very wide SAE: densifying all rows would need L×50k×4 = 400 MB;
    # the blocked computation holds one 128-row block (25 MB) at a time.
    width = 50_000
    idx = torch.randint(0, width, (L, K), generator=g)
    val = torch.rand(L, K, generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    s2 = similarity_kernel(SparseCodes(idx, val), width=width, block_rows=128)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert s2.shape == (L - 1, L - 1) and torch.isfinite(s2).all()
    assert grown_mb < 250, grown_mb


def test_too_long_is_a_clear_error():
    with pytest.raises(KernelInputError, match="above the kernel limit of 10"):
        similarity_kernel(torch.zeros(11, 3), max_tokens=10)
    assert issubclass(KernelInputError, TempolensError)
    with pytest.raises(KernelInputError, match=r"\[L, W\]"):
        similarity_kernel(torch.zeros(2, 3, 4))
    with pytest.raises(KernelInputError, match="width"):
        similarity_kernel(SparseCodes(torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)))


def test_attention_reindexed_by_context_token():
    # raw attention of one head over keys [start, tok0, tok1] for 3 query tokens (causal: j <= t)
    raw = torch.tensor([[[1.0, 0, 0], [0.3, 0.7, 0], [0.2, 0.5, 0.3]]])
    a = attention_by_token(raw)
    assert torch.allclose(a.start, torch.tensor([[1.0, 0.3, 0.2]]))
    expect = torch.tensor([[[0.0, 0, 0], [0.7, 0, 0], [0.5, 0.3, 0]]])
    assert torch.allclose(a.maps, expect)
    assert torch.allclose(a.maps.sum(-1) + a.start, torch.ones(1, 3))


def test_predicted_share():
    rp = torch.tensor([[3.0, 4.0], [0, 0], [1, 0]])
    rn = torch.tensor([[0.0, 0.0], [0, 0], [0, 1]])
    assert torch.allclose(predicted_share(rp, rn), torch.tensor([1.0, 0.0, 0.5]))


def test_top_latents_dense_and_sparse_agree():
    x = torch.tensor([[0.0, 3, 1, 0], [0, 0, 0, 0], [5, 0, 0, 2]])
    i, v = top_latents(x, k=3)
    assert i.tolist() == [[1, 2, -1], [-1, -1, -1], [0, 3, -1]]
    assert v.tolist() == [[3, 1, 0], [0, 0, 0], [5, 2, 0]]
    i2, v2 = top_latents(SparseCodes.from_dense(x[None]), k=3)
    assert i2.tolist() == i.tolist() and torch.equal(v2, v)


def test_attention_vmax_is_a_quantile_of_causal_weights():
    from tempolens.temporal.kernels import attention_vmax

    m = torch.zeros(2, 5, 5)
    m[:, 1:, :] = torch.tensor(0.25).expand(2, 4, 5).tril(-1)  # every causal weight is 0.25
    m[0, 4, 0] = 0.25
    assert attention_vmax([m]) == pytest.approx(0.25)
    assert attention_vmax([torch.zeros(1, 4, 4)]) == pytest.approx(1e-3)  # floored, never 0
    assert attention_vmax([]) == 1.0
