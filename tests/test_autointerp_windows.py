import numpy as np
import pytest
import torch
from autointerp_support import PLANTED, build_dense, write_store
from transformers import AutoTokenizer

from tempolens.autointerp.windows import (
    TokenText,
    WindowSpec,
    collect_windows,
    delphi_split,
    firing_counts,
    saebench_split,
    select_latents,
)
from tempolens.store.codestore import CodeStore

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    return AutoTokenizer.from_pretrained(str(tiny_lm_dir))


@pytest.fixture(scope="module")
def data(tok, tmp_path_factory):
    toks, special, dense = build_dense(tok)
    root = tmp_path_factory.mktemp("store")
    a = write_store(root / "a", toks, special, dense, shard_size=8)
    b = write_store(root / "b", toks, special, dense, shard_size=24)  # one shard: same results
    return toks, special, dense, CodeStore(a), CodeStore(b)


def test_firing_counts_and_alive_selection(data):
    toks, special, dense, store, _ = data
    counts = firing_counts(store, progress=False)
    ref = ((dense > 0) & (special[..., None] == 0)).sum((0, 1))
    assert counts.tolist() == ref.tolist()
    alive = select_latents(counts, 100, min_firings=15)
    assert alive == [l for l in range(dense.shape[-1]) if ref[l] > 15]
    assert 6 not in alive  # 10 firings: dead by SAEBench's rule
    some = select_latents(counts, 2, seed=3)
    assert len(some) == 2 and set(some) <= set(alive) and some == select_latents(counts, 2, seed=3)
    assert select_latents(counts, 2, forced=[9, 1, 9]) == [1, 9]


def _valid_centres(dense, special, l, spec):
    P, T, _ = dense.shape
    left, right = spec.offsets()
    out = []
    for p in range(P):
        for t in range(left, T - right):
            if special[p, t] == 0 and dense[p, t, l] > 0:
                out.append((dense[p, t, l], p, t))
    return out


@pytest.mark.parametrize("align", ["centred", "ending"])
def test_windows_match_bruteforce(data, align):
    toks, special, dense, store, store1 = data
    spec = WindowSpec(window_len=9, align=align, n_top=5, n_iw=4, n_quantiles=4, per_quantile=2, n_random=6)
    lats = [0, 1, 4, 5]
    got = collect_windows(store, lats, spec, seed=7, progress=False)
    assert {l: _dump(got[l]) for l in lats} == {
        l: _dump(w) for l, w in collect_windows(store1, lats, spec, 7, progress=False).items()
    }
    assert _dump(got[4]) == _dump(collect_windows(store, [4], spec, 7, progress=False)[4])  # order/set independent
    left, right = spec.offsets()
    for l in lats:
        lw = got[l]
        cands = _valid_centres(dense, special, l, spec)
        # every window is a correct slice of the dense data, special tokens read as 0
        for w in lw.top + lw.iw + lw.quantile + lw.random:
            sl = dense[w.prompt, w.start : w.start + 9, l] * (special[w.prompt, w.start : w.start + 9] == 0)
            assert np.allclose(w.acts, sl) and w.tokens == toks[w.prompt, w.start : w.start + 9].tolist()
        # top: greedy non-overlapping maxima (brute force)
        ref, picked = [], []
        for v, p, t in sorted(cands, key=lambda x: (-x[0], x[1] * 1000 + x[2])):
            if any(p == q and abs(t - s) < 9 for q, s in picked):
                continue
            picked.append((p, t))
            ref.append(v)
            if len(ref) == 5:
                break
        assert [w.acts[left] for w in lw.top] == pytest.approx(ref)
        assert [(w.prompt, w.start + left) for w in lw.top] == picked
        thr = min(ref)
        assert all(0 < w.acts[left] < thr for w in lw.iw)
        # quantiles: centre values inside the brute-force equal-count bins
        vals = np.sort([c[0] for c in cands])
        bins = np.array_split(vals, 4)
        for w in lw.quantile:
            assert bins[w.quantile][0] <= w.acts[left] <= bins[w.quantile][-1]
        assert len(lw.quantile) == 8
        # random negatives: latent zero on every token, centre not special
        assert len(lw.random) == 6
        for w in lw.random:
            assert not any(
                (dense[w.prompt, w.start : w.start + 9, l] > 0) & (special[w.prompt, w.start : w.start + 9] == 0)
            )
            assert special[w.prompt, w.start + left] == 0
            assert not w.is_active


def _dump(lw):
    return [(w.kind, w.prompt, w.start, w.quantile) for w in lw.top + lw.iw + lw.quantile + lw.random]


def test_bos_never_centre_and_seed_changes_sample(data):
    _, special, _, store, _ = data
    spec = WindowSpec(window_len=5, n_top=3)
    a = collect_windows(store, [5], spec, seed=1, progress=False)[5]
    b = collect_windows(store, [5], spec, seed=2, progress=False)[5]
    assert _dump(a)[:3] == _dump(b)[:3]  # top is not random
    assert _dump(a) != _dump(b)
    for w in a.top + a.iw + a.quantile:
        assert w.start + w.center != 0 and w.acts[w.center] > 0


def test_splits_saebench_and_delphi(data, tok):
    _, _, _, store, _ = data
    lw = collect_windows(store, [0], WindowSpec(), seed=0, progress=False)[0]
    s = saebench_split(lw, seed=0)
    assert len(s.explain) == 15 and len(s.score) == 14 and sum(s.labels) == 4
    assert [w.max_act for w in s.explain] == sorted([w.max_act for w in s.explain], reverse=True)
    assert s.labels == [w.kind != "random" for w in s.score]
    d = delphi_split(lw, seed=0)
    assert len(d.explain) == 10 and len(d.score) == 20 and sum(d.labels) == 10
    text = TokenText(tok)
    strs = text.window(s.explain[0])
    assert PLANTED[0] in "".join(strs)
    assert text(tok.bos_token_id) == "<bos>"
