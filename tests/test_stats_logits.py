"""Logit effects against a dense matmul reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempolens.stats.logits import logit_effects

torch.set_num_threads(1)


def _setup(seed=0, width=13, d=16, vocab=301):
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(width, d, generator=g)
    W_U = torch.randn(vocab, d, generator=g)
    W_U[5] = W_U[3]  # exact ties inside one vocab chunk: the lower id must come first
    mult = 1 + 0.5 * torch.randn(d, generator=g)
    return W_dec, W_U, mult


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize(
    "block,chunk,mem", [(4, 64, 256), (100, 1000, 256), (1, 7, 256), (4, 64, 1e-4), (None, 50, 1e-4)]
)
def test_matches_dense_reference(fold, block, chunk, mem):
    W_dec, W_U, mult = _setup()
    eff = logit_effects(
        W_dec, W_U, mult if fold else None, k=10, n_bins=50, block=block, vocab_chunk=chunk, memory_mb=mem
    )
    ref = ((W_dec * mult) if fold else W_dec).double() @ W_U.double().T
    assert eff.folded_norm is fold
    for i in range(W_dec.shape[0]):
        r = ref[i]
        order = sorted(range(r.numel()), key=lambda t: (-float(r[t]), t))[:10]
        assert eff.top_ids[i].tolist() == order
        assert torch.allclose(eff.top_values[i].double(), r[order], atol=1e-5)
        order_b = sorted(range(r.numel()), key=lambda t: (float(r[t]), t))[:10]
        assert eff.bottom_ids[i].tolist() == order_b
        assert torch.allclose(eff.bottom_values[i].double(), r[order_b], atol=1e-5)
        h, edges = np.histogram(r.numpy(), bins=50, range=(float(r.min()), float(r.max())))
        assert eff.hist_counts[i].tolist() == h.tolist()
        assert np.allclose(eff.hist_centres[i].numpy(), (edges[:-1] + edges[1:]) / 2, atol=1e-4)
        assert int(eff.hist_counts[i].sum()) == W_U.shape[0]


def test_tie_order_is_by_token_id():
    W_dec, W_U, _ = _setup()
    eff = logit_effects(W_dec, W_U, k=300, vocab_chunk=64)
    for i in range(W_dec.shape[0]):
        ids = eff.top_ids[i].tolist()
        assert ids.index(3) + 1 == ids.index(5)


def test_small_vocab_and_shapes():
    W_dec, W_U, _ = _setup(vocab=6)
    eff = logit_effects(W_dec, W_U, k=10)
    assert eff.top_ids.shape == (13, 6) and eff.hist_counts.shape == (13, 50)


def test_row_topk_breaks_boundary_ties_by_lowest_id():
    from tempolens.stats.logits import row_topk

    X = torch.tensor([[1.0, 5.0, 3.0, 3.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0, 9.0, -1.0]])
    v, i = row_topk(X, 3, largest=True)
    assert i.tolist() == [[1, 2, 3], [5, 0, 1]] and v.tolist() == [[5.0, 3.0, 3.0], [9.0, 2.0, 2.0]]
    v, i = row_topk(X, 2, largest=False)
    assert i.tolist() == [[6, 0], [6, 0]]


def test_histogram_rows_matches_numpy():
    from tempolens.stats.logits import histogram_rows

    g = torch.Generator().manual_seed(1)
    X = torch.randn(5, 10_000, generator=g)
    X[3] = 0.5  # a constant row: everything in the first bin
    lo, hi = X.amin(1), X.amax(1)
    counts = histogram_rows(X.clone(), lo, hi, 50)
    for r in range(5):
        if r == 3:
            assert counts[r, 0] == 10_000 and counts[r, 1:].sum() == 0
            continue
        x = X[r].double().numpy()
        h, _ = np.histogram(x, bins=50, range=(float(lo[r]), float(hi[r])))
        # float32 arithmetic may put a value lying within rounding of a bin edge on the other side
        pos = (x - float(lo[r])) * 50 / (float(hi[r]) - float(lo[r]))
        near_edge = int((np.abs(pos - np.round(pos)) < 1e-4).sum())
        assert int(counts[r].sum()) == 10_000
        assert int(np.abs(counts[r].numpy() - h).sum()) <= 2 * near_edge, (counts[r].tolist(), h.tolist())


@pytest.mark.parametrize("V,k,group", [(1000, 10, 16), (1037, 10, 16), (4096, 5, 64), (300, 10, 16), (50, 10, 16)])
def test_row_ends_equal_row_topk_with_ties(V, k, group):
    from tempolens.stats.logits import row_ends, row_topk

    g = torch.Generator().manual_seed(V + k)
    X = torch.randn(12, V, generator=g).round(decimals=1)  # many exact ties, also between groups' extremes
    X[3] = 0.0  # a constant row
    X[4, ::7] = 10.0  # the top value repeated in many groups
    X[5, : V // 2] = X[5, V // 2 : 2 * (V // 2)]  # duplicated halves
    tv, ti, bv, bi = row_ends(X, k, group=group)
    rv, ri = row_topk(X, k, largest=True)
    sv, si = row_topk(X, k, largest=False)
    assert torch.equal(ti, ri) and torch.equal(tv, rv)
    assert torch.equal(bi, si) and torch.equal(bv, sv)
    for r in range(X.shape[0]):  # and both agree with a sort by (value, id)
        order = sorted(range(V), key=lambda t: (-float(X[r, t]), t))[: min(k, V)]
        assert ti[r].tolist() == order


def _assert_same_ends_up_to_near_ties(ids_a, ids_b, ref, largest, rel=1e-6):
    """Equal ids, or ids whose float64 logits equal the reference's in sorted order within ``rel`` of the row's
    scale (a swap of two exact near-ties, where float32 rounding decides the order)."""
    for r in range(ref.shape[0]):
        if ids_a[r].tolist() == ids_b[r].tolist():
            continue
        va = ref[r, ids_a[r]].sort(descending=largest).values
        vb = ref[r, ids_b[r]].sort(descending=largest).values
        assert torch.allclose(va, vb, rtol=0, atol=rel * float(ref[r].abs().max())), (r, ids_a[r], ids_b[r])


@pytest.mark.parametrize("V", [5000, 8192])  # a tail shorter than a column group, and none
def test_bf16_top_and_bottom_equal_float32(V):
    """The bf16 route's top/bottom-10 ids equal the float64 reference's, also where bf16 cannot tell tokens apart:
    near-duplicate unembedding rows (1e-4 relative apart, far below bf16's 4e-3) and exact duplicates (ties by id)."""
    g = torch.Generator().manual_seed(V)
    d, width = 64, 40
    W_dec = torch.randn(width, d, generator=g)
    W_U = torch.randn(V, d, generator=g)
    W_U[:, 0] *= 5  # a dominant dimension, as real unembeddings have
    for j in range(20):  # near-duplicates of the strongest tokens of a few latents, and exact duplicates
        i = int((W_dec[j % 5] @ W_U.T).argmax() if j % 2 else (W_dec[j % 5] @ W_U.T).argmin())
        W_U[V - 1 - j] = W_U[i] * (1 + 1e-4 * (j + 1)) if j < 16 else W_U[i]
    mult = 1 + 0.5 * torch.rand(d, generator=g)
    f32 = logit_effects(W_dec, W_U, mult, k=10, precision="fp32")
    b16 = logit_effects(W_dec, W_U, mult, k=10, precision="bf16")
    ref = (W_dec * mult).double() @ W_U.double().T
    top = torch.stack([torch.tensor(sorted(range(V), key=lambda t: (-float(ref[i, t]), t))[:10]) for i in range(width)])
    bot = torch.stack([torch.tensor(sorted(range(V), key=lambda t: (float(ref[i, t]), t))[:10]) for i in range(width)])
    _assert_same_ends_up_to_near_ties(b16.top_ids, top, ref, True)
    _assert_same_ends_up_to_near_ties(b16.bottom_ids, bot, ref, False)
    _assert_same_ends_up_to_near_ties(b16.top_ids, f32.top_ids, ref, True)
    assert (b16.top_ids == top).all(1).float().mean() >= 0.9  # near-ties are rare
    torch.testing.assert_close(b16.top_values.double(), ref.gather(1, b16.top_ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b16.bottom_values.double(), ref.gather(1, b16.bottom_ids), rtol=1e-5, atol=1e-5)
    # the histogram: same range (exact min/max), every token counted, few moved to a neighbouring bin
    torch.testing.assert_close(b16.hist_centres, f32.hist_centres, rtol=1e-5, atol=1e-4)
    assert (b16.hist_counts.sum(1) == V).all()
    moved = (b16.hist_counts - f32.hist_counts).abs().sum(1) / 2
    assert float(moved.max()) <= 0.02 * V


def test_bf16_falls_back_to_float32_where_it_cannot_help():
    """Small vocabularies, and k above a column group, run the float32 route: results identical to fp32."""
    W_dec, W_U, mult = _setup()
    a = logit_effects(W_dec, W_U, mult, k=10, precision="bf16")
    b = logit_effects(W_dec, W_U, mult, k=10, precision="fp32")
    assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.hist_counts, b.hist_counts)
    with pytest.raises(ValueError, match="precision"):
        logit_effects(W_dec, W_U, k=10, precision="fp16")


def test_logit_precision_resolution():
    from tempolens.devices import logit_precision, native_bf16_cpu
    from tempolens.errors import DeviceError

    cpu = torch.device("cpu")
    assert logit_precision("auto", cpu) == ("bf16" if native_bf16_cpu() else "fp32")
    assert logit_precision("fp32", cpu) == "fp32" and logit_precision("bf16", cpu) == "bf16"
    assert logit_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(DeviceError, match="CPUs"):
        logit_precision("bf16", torch.device("meta"))


@pytest.mark.slow
def test_bf16_on_the_real_unembedding():
    """Gemma 3's 262k-token unembedding with the shipped SAE's decoder directions (final norm folded): the bf16
    route's top/bottom-10 equal the float32 route's, and the histograms move under 2% of the tokens."""
    from tempolens.saes import load_sae
    from tempolens.sources.open import load_subject_model

    torch.set_num_threads(2)
    sm = load_subject_model("embedded", layer=12, progress=None)
    W_U, mult, _ = sm.unembed()
    W = load_sae("embedded:temporal").W_dec.detach()[:48].float()
    W = W / W.norm(dim=1, keepdim=True)
    f32 = logit_effects(W, W_U, mult, k=10, precision="fp32")
    b16 = logit_effects(W, W_U, mult, k=10, precision="bf16")
    ref = (W * mult).double() @ W_U.double().T
    _assert_same_ends_up_to_near_ties(b16.top_ids, f32.top_ids, ref, True)
    _assert_same_ends_up_to_near_ties(b16.bottom_ids, f32.bottom_ids, ref, False)
    moved = (b16.hist_counts - f32.hist_counts).abs().sum(1) / 2
    assert float(moved.max()) <= 0.02 * W_U.shape[0]


def _torch_only(monkeypatch):
    """Run the torch reference of the compiled kernels (as on a GPU, or where numba is missing)."""
    from tempolens.stats import logit_kernels

    monkeypatch.setattr(logit_kernels, "numba", None)
    assert not logit_kernels.available(torch.zeros(1))


def test_compiled_kernels_are_available_on_the_cpu():
    """numba is a declared dependency: the compiled kernels run here (else the tests below compare torch to torch)."""
    from tempolens.stats import logit_kernels

    assert logit_kernels.available(torch.zeros(1))
    assert not logit_kernels.available(torch.zeros(1, device="meta"))


def test_compiled_histogram_equals_the_torch_passes(monkeypatch):
    """Bit-for-bit the same counts, including values on bin edges, a constant row, the max (last bin) and a row
    whose range is tiny (scale near float32's limits)."""
    from tempolens.stats.logits import histogram_rows

    g = torch.Generator().manual_seed(3)
    X = torch.randn(7, 9_001, generator=g).to(torch.bfloat16).float()  # bf16 values: many exact repeats
    X[1, :1000] = torch.linspace(-2, 2, 51).repeat(20)[:1000]  # exactly on the edges of [-2, 2] / 50
    X[1, 1000] = -2.0
    X[1, 1001] = 2.0
    X[3] = 0.25  # constant
    X[5] = 1.0 + torch.arange(9_001) * 1e-7  # a tiny span
    lo, hi = X.amin(1), X.amax(1)
    for n_bins in (50, 7, 1):
        compiled = histogram_rows(X.clone(), lo, hi, n_bins)
        with monkeypatch.context() as m:
            _torch_only(m)
            ref = histogram_rows(X.clone(), lo, hi, n_bins)
        assert torch.equal(compiled, ref), n_bins
        assert (compiled.sum(1) == X.shape[1]).all()


@pytest.mark.parametrize("V", [5000, 8192])
def test_compiled_passes_read_bfloat16_logits_as_their_float32_widening(V):
    """The compiled passes on bfloat16 logits give exactly what they give on the same values widened to float32
    (the bf16 route never makes that copy); the group extremes are torch's amax/amin per group, NaN included."""
    from tempolens.stats import logit_kernels
    from tempolens.stats.logits import _group_max

    g = torch.Generator().manual_seed(V)
    Xb = (torch.randn(5, V, generator=g) * 3).to(torch.bfloat16)
    Xb[2] = 0.5  # constant row
    Xb[3, 17] = float("nan")  # NaN propagates to its group's extremes only
    Xb[4, -1] = float("inf")
    Xf = Xb.float()
    gmax, gmin = logit_kernels.group_extremes(Xb, 256)
    assert torch.allclose(gmax, _group_max(Xf, 256), rtol=0, atol=0, equal_nan=True)
    assert torch.allclose(gmin, _group_max(Xf, 256, largest=False), rtol=0, atol=0, equal_nan=True)
    assert gmax[3].isnan().sum() == 1 and gmax[3, 0].isnan()
    assert torch.allclose(logit_kernels.group_extremes(Xf, 256)[0], gmax, rtol=0, atol=0, equal_nan=True)
    rows = torch.tensor([0, 1, 2])
    lo, hi = Xf[rows].amin(1), Xf[rows].amax(1)
    scale = torch.where(hi > lo, 50 / (hi - lo), torch.zeros_like(lo))
    assert torch.equal(
        logit_kernels.histogram_rows(Xb[rows], lo, scale, 50), logit_kernels.histogram_rows(Xf[rows], lo, scale, 50)
    )
    gy, slack = gmax[rows, : V // 256], torch.full((3, V // 256), 0.01)
    tail, bound = torch.full((3, V % 256), 0.01), hi - 1.0
    for sign in (1.0, -1.0):
        got = logit_kernels.end_candidates(Xb[rows], sign, 2.0**-8, gy * sign, slack, tail, bound, 256)
        ref = logit_kernels.end_candidates(Xf[rows], sign, 2.0**-8, gy * sign, slack, tail, bound, 256)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
        assert got[0].numel() > 0


@pytest.mark.parametrize("V", [5000, 70000])  # a tail shorter than a column group; a vocabulary wider than the table
def test_counts_of_bfloat16_values_give_the_histogram_and_extremes_of_one_read(V):
    """The extremes read with the bfloat16 values' counts equal group_extremes, and the histogram binned from those
    counts equals the per-value histogram, with NaN (bin 0, as in the torch reference), ±inf, a constant row and -0.0
    among the values."""
    from tempolens.stats import logit_kernels

    g = torch.Generator().manual_seed(V + 7)
    Xb = (torch.randn(6, V, generator=g) * 3).to(torch.bfloat16)
    Xb[2] = 0.5
    Xb[3, 17] = float("nan")
    Xb[4, -1] = float("inf")
    Xb[5, :100] = -0.0
    Xb[5, 100] = float("-inf")
    table = torch.full((8, logit_kernels.BF16_PATTERNS), 7, dtype=torch.int32)  # stale counts are overwritten
    gmax, gmin = logit_kernels.extremes_and_counts(Xb, 256, table)
    ref_max, ref_min = logit_kernels.group_extremes(Xb, 256)
    assert torch.equal(gmax.nan_to_num(1234.0), ref_max.nan_to_num(1234.0))
    assert torch.equal(gmin.nan_to_num(1234.0), ref_min.nan_to_num(1234.0))
    assert torch.equal(table[:6].sum(1), torch.full((6,), V, dtype=torch.int64))
    Xf = Xb.float()
    lo, hi = Xf.nan_to_num(0.0, 0.0, 0.0).amin(1), Xf.nan_to_num(0.0, 0.0, 0.0).amax(1)
    for n_bins in (1, 50):
        scale = torch.where(hi > lo, n_bins / (hi - lo), torch.zeros_like(lo))
        got = logit_kernels.histogram_of_counts(table[:6], lo, scale, n_bins)
        assert torch.equal(got, logit_kernels.histogram_rows(Xb, lo, scale, n_bins))
        assert torch.equal(got.sum(1), torch.full((6,), V, dtype=torch.int64))
        v = (Xf - lo.unsqueeze(1)) * scale.unsqueeze(1)  # the definition: clamped in float32, truncated, NaN in bin 0
        idx = torch.where(v.isnan(), 0.0, v.clamp(0, n_bins - 1)).to(torch.int64)
        assert torch.equal(got, torch.stack([torch.bincount(r, minlength=n_bins) for r in idx]))
    with pytest.raises(ValueError, match="bfloat16"):
        logit_kernels.extremes_and_counts(Xf, 256, table)


@pytest.mark.parametrize("V", [5000, 8192, 70000])  # a tail shorter than a column group, none; the counts table
def test_compiled_bf16_route_equals_the_torch_route(monkeypatch, V):
    """The whole bf16 route with the compiled passes (extremes with the values' counts, fused exact ends, histogram)
    gives exactly the torch route's output."""
    g = torch.Generator().manual_seed(V + 1)
    W_dec, W_U = torch.randn(300, 64, generator=g), torch.randn(V, 64, generator=g)
    W_U[:, 0] *= 5
    W_U[-3:] = W_U[:3]  # exact duplicates: ties by id
    W_dec[7] = 0.0  # a zero direction: every logit 0, one bin
    mult = 1 + 0.5 * torch.rand(64, generator=g)
    compiled = logit_effects(W_dec, W_U, mult, k=10, block=128, precision="bf16")
    with monkeypatch.context() as m:
        _torch_only(m)
        ref = logit_effects(W_dec, W_U, mult, k=10, block=128, precision="bf16")
    for f in ("top_ids", "top_values", "bottom_ids", "bottom_values", "hist_counts", "hist_centres"):
        assert torch.equal(getattr(compiled, f), getattr(ref, f)), f


def test_background_job_equals_logit_effects_and_serves_rows_in_order():
    """LogitEffectsJob computes exactly logit_effects' output; wait(n) returns with rows < n filled; an error in the
    thread is raised by wait()."""
    from tempolens.stats.logits import LogitEffectsJob

    W_dec, W_U, mult = _setup()
    ref = logit_effects(W_dec, W_U, mult, k=10, block=4)
    job = LogitEffectsJob(W_dec, W_U, mult, k=10, block=4)
    first = job.wait(5)
    assert torch.equal(first.top_ids[:5], ref.top_ids[:5])
    out = job.result()
    assert job.complete and job.seconds > 0
    for f in ("top_ids", "top_values", "bottom_ids", "bottom_values", "hist_counts", "hist_centres"):
        assert torch.equal(getattr(out, f), getattr(ref, f)), f
    bad = LogitEffectsJob(W_dec, W_U[:, :3], k=10)  # shapes do not match: the matmul fails in the thread
    with pytest.raises(RuntimeError):
        bad.wait(1)
    assert not bad.complete
    with pytest.raises(TypeError, match="colour"):
        LogitEffectsJob(W_dec, W_U, colour="red")


def test_background_job_caches_before_the_last_rows_are_ready_and_can_be_cancelled():
    from tempolens.stats.logits import LogitEffectsJob

    W_dec, W_U, mult = _setup(width=40)
    seen: list[int] = []
    job = LogitEffectsJob(W_dec, W_U, mult, on_complete=lambda e: seen.append(int(e.top_ids.shape[0])), k=5, block=4)
    job.wait(40)  # the last rows are reported only after on_complete ran
    assert seen == [40]
    job.result()
    slow = LogitEffectsJob(torch.randn(4000, 16), W_U, k=5, block=1)
    slow.cancel()  # stops after the block in progress; the thread has ended
    assert not slow._thread.is_alive() and not slow.complete
    with pytest.raises(RuntimeError, match="cancelled"):
        slow.wait(4000)


def test_fused_exact_ends_equal_the_torch_ends_and_flag_non_finite_rows():
    """exact_ends gives, row by row, what _exact_end gives in torch (ids and values, ties by id included); a row whose
    logits hold a NaN is flagged (not ok) and the others are unaffected."""
    from tempolens.bf16 import OUTPUT_ROUND, input_slack
    from tempolens.stats import logit_kernels
    from tempolens.stats.logits import _Bf16Vocab, _exact_end

    g = torch.Generator().manual_seed(11)
    V, d, k = 6000, 48, 10
    U = torch.randn(V, d, generator=g)
    U[-4:] = U[:4]  # duplicate tokens: equal exact values, ranked by id
    w = torch.randn(9, d, generator=g)
    w[3] = 0.0  # every logit 0: the k lowest ids at both ends
    vocab = _Bf16Vocab.of(U)
    X = torch.mm(w.to(torch.bfloat16), vocab.UbT)
    X[5, 100] = float("nan")
    gmax, gmin = logit_kernels.group_extremes(X, vocab.group)
    a = input_slack(w)
    tv, ti, bv, bi, ok = logit_kernels.exact_ends(
        X, U, w, OUTPUT_ROUND, a, vocab.norms, vocab.group_norms, gmax, gmin, k, 256
    )
    assert ok.tolist() == [i != 5 for i in range(9)]
    fine = ok.nonzero().squeeze(1)
    rv, ri = _exact_end(w[fine], U, X[fine], vocab, k, gmax[fine], largest=True)
    assert torch.equal(ti[fine], ri) and torch.equal(tv[fine], rv)
    rv, ri = _exact_end(w[fine], U, X[fine], vocab, k, gmin[fine], largest=False)
    assert torch.equal(bi[fine], ri) and torch.equal(bv[fine], rv)
    assert ti[3].tolist() == list(range(k)) and bi[3].tolist() == list(range(k))
    with pytest.raises(ValueError, match="bfloat16"):
        logit_kernels.exact_ends(X.float(), U, w, OUTPUT_ROUND, a, vocab.norms, vocab.group_norms, gmax, gmin, k, 256)


def test_non_finite_weights_are_refused_with_what_and_where():
    from tempolens.stats.logits import LogitEffectsJob, require_finite

    g = torch.Generator().manual_seed(0)
    W, U = torch.randn(12, 8, generator=g), torch.randn(300, 8, generator=g)
    for bad, what, where in (("W", "decoder directions", "rows 3, 9"), ("U", "unembedding", "rows 7")):
        Wb, Ub = W.clone(), U.clone()
        if bad == "W":
            Wb[3, 0], Wb[9, 5] = float("nan"), float("-inf")
        else:
            Ub[7, 2] = float("inf")
        with pytest.raises(ValueError, match=rf"{what} \(W_\w+\) has \d NaN or infinite values \({where}\)"):
            logit_effects(Wb, Ub)
        with pytest.raises(ValueError, match=what):
            LogitEffectsJob(Wb, Ub)  # refused before its thread starts
    m = torch.ones(8)
    m[4] = float("nan")
    with pytest.raises(ValueError, match=r"final norm's multiplier has 1 NaN or infinite values \(at 4\)"):
        logit_effects(W, U, m)
    huge = torch.full((4, 3), 3e38)  # finite values whose float32 sum overflows: accepted
    assert require_finite(huge, "x") is huge
