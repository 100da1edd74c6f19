"""Activation cache: identical batches from the cache and from the model, disjoint splits, fp16 range."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import WORDS

from tempolens.train.activations_cache import (
    ActivationCache,
    ActivationSpec,
    CacheError,
    batch_prompt_ids,
    build_cache,
    fp16_scale_exp,
    iter_batches,
    open_lm_source,
    plan_prompts,
)

torch.set_num_threads(1)


def write_corpus(path, n_docs=40, seed=0):
    import random

    rng = random.Random(seed)
    words = [w for w in WORDS if w.isalpha()]
    paras = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(n_docs)]
    path.write_text("\n\n".join(paras))
    return path


@pytest.fixture(scope="module")
def tiny_source(tiny_lm_dir, tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt")
    spec = ActivationSpec(
        model=str(tiny_lm_dir), layer=2, corpus=str(corpus), prompt_len=12, n_prompts=20, n_heldout=4, seed=3
    )
    return open_lm_source(spec, device="cpu", batch_size=4)


def test_plan_prompts_counts_training_tokens_without_bos():
    n, h = plan_prompts(1000, 11, 0.1)
    assert (n - h) * 10 >= 1000 and (n - h - 1) * 10 < 1000
    assert h == n - (n - h) and h >= 1
    assert plan_prompts(100, 11, 0.0) == (10, 0)


def test_splits_are_disjoint_and_cover_all_prompts():
    spec = ActivationSpec(model="m", layer=0, corpus="c", prompt_len=8, n_prompts=30, n_heldout=5, seed=0)
    tr, ho = spec.split_ids("train"), spec.split_ids("heldout")
    assert set(tr.tolist()).isdisjoint(ho.tolist())
    assert sorted(tr.tolist() + ho.tolist()) == list(range(30))


def test_batch_order_is_a_pure_function_of_seed_and_step():
    ids = torch.arange(50)
    e0, a = batch_prompt_ids(ids, 8, seed=1, step=3)
    e1, b = batch_prompt_ids(ids, 8, seed=1, step=3)
    assert torch.equal(a, b) and e0 == e1 == 0
    # one epoch = 6 full batches that never repeat a prompt
    seen = torch.cat([batch_prompt_ids(ids, 8, 1, s)[1] for s in range(6)])
    assert len(set(seen.tolist())) == 48
    assert batch_prompt_ids(ids, 8, 1, 6)[0] == 1
    assert not torch.equal(batch_prompt_ids(ids, 8, 2, 3)[1], a)


def test_cache_reproduces_model_batches(tiny_source, tmp_path):
    src = tiny_source
    cache = build_cache(tmp_path / "cache", src.spec, source=src, shard_prompts=6, batch_size=4, progress=False)
    assert cache.complete() and cache.n_shards == 4
    cache.verify()
    # same batches, same order, whichever source; values equal up to float16 rounding
    for b_model, b_cache in zip(iter_batches(src, 4, seed=7, n_steps=5), iter_batches(cache, 4, seed=7, n_steps=5)):
        assert torch.equal(b_model.prompt_ids, b_cache.prompt_ids)
        assert torch.equal(b_model.special, b_cache.special)
        assert torch.allclose(b_model.acts, b_cache.acts, rtol=1e-3, atol=1e-3)
        assert not set(b_cache.prompt_ids.tolist()) & set(src.spec.split_ids("heldout").tolist())
    # reading twice gives bit-identical batches; tokens and BOS flags are stored
    again = next(iter_batches(ActivationCache(tmp_path / "cache"), 4, seed=7, n_steps=1))
    first = next(iter_batches(cache, 4, seed=7, n_steps=1))
    assert torch.equal(again.acts, first.acts)
    assert torch.equal(cache.tokens(torch.arange(20)), src.tokens)
    assert bool(first.special[:, 0].all())
    # a rebuild is a no-op; a different spec is refused
    assert build_cache(tmp_path / "cache", src.spec, source=src, progress=False).complete()
    other = ActivationSpec(**{**src.spec.__dict__, "seed": 4})
    with pytest.raises(CacheError):
        build_cache(tmp_path / "cache", other, source=src, progress=False)


def test_cache_resumes_after_a_lost_shard(tiny_source, tmp_path):
    src = tiny_source
    cache = build_cache(tmp_path / "c", src.spec, source=src, shard_prompts=8, progress=False)
    full = cache.fetch(torch.arange(20))[0]
    cache.done_path(1).unlink()  # as if killed before shard 1 was finished
    assert not ActivationCache(tmp_path / "c").complete()
    rebuilt = build_cache(tmp_path / "c", src.spec, source=src, progress=False)
    assert rebuilt.complete()
    assert torch.equal(rebuilt.fetch(torch.arange(20))[0], full)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["d_in"] == 32 and meta["shard_prompts"] == 8


def test_fp16_scale_exp_keeps_large_activations_finite():
    x = torch.tensor([[1.0, -70_000.0, 3.0]])
    e = fp16_scale_exp(x)
    assert e >= 2
    y = (x * 2.0**-e).half().float() * 2.0**e
    assert torch.isfinite(y).all() and torch.allclose(y, x, rtol=1e-3)
    assert fp16_scale_exp(torch.ones(3)) == 0


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(CacheError, match="not an activation cache"):
        ActivationCache(tmp_path)
