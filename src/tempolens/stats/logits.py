"""Logit effects of decoder directions: what each latent's direction writes into the vocabulary logits.

For latent ``i`` with decoder direction ``w_i`` the logit effect is ``W_U · (m ⊙ w_i)`` where ``m`` is
the final norm's per-dimension multiplier when folded in (``fold_norm``), else ``1``. Per latent we
keep the top and bottom ``k`` tokens and a histogram over the whole vocabulary.

Streaming: latents go in blocks, the vocabulary in chunks, so at most ``block × chunk`` logits exist at
once (never ``width × vocab``; Gemma's vocabulary has 262k tokens). The top/bottom-k and the min/max are
taken in one pass per end and the histogram (whose bins span each latent's min..max) in one more
when a block's ``block × vocab`` logits fit in ``memory_mb`` (one matmul); otherwise they are merged
over vocab chunks and a second sweep recomputes the chunks for the histogram (two matmuls, less
memory). Histogram bins follow numpy's convention (closed on the left, the last also on the right).

Precision. ``fp32`` computes every logit in float32. ``bf16`` (for CPUs with native bfloat16 matmuls: AMX or
AVX512-BF16) computes each block's logits from bfloat16 inputs with float32 accumulation (≈4× faster matmuls on an
AMX CPU) and keeps the top/bottom-``k`` exact: a rigorous per-token bound on the bfloat16 error (see
:func:`_exact_end`) limits the tokens that can be in the exact top ``k`` to a few candidates (≈40 per latent on
Gemma 3), which are recomputed exactly (float64 sums of the float32 products, rounded once) and ranked. So the
top/bottom-``k`` ids are the float32 path's (values may differ in its last float32 bits, which can reorder only exact
near-ties), the min/max — the histogram's range —
are exact, and only the histogram counts come from the bfloat16 logits: a token within the bfloat16 rounding (≈0.4%
relative) of a bin edge may be counted in the neighbouring bin (≈0.5% of Gemma 3's 262k tokens per latent).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempolens.bf16 import OUTPUT_ROUND, exact_dots, input_slack
from tempolens.stats import logit_kernels


@dataclass
class LogitEffects:
    """Top/bottom logit effects and vocabulary histograms of every latent."""

    top_ids: Tensor
    """``[W, k]`` token ids with the largest effects, descending."""
    top_values: Tensor
    bottom_ids: Tensor
    """``[W, k]`` token ids with the smallest (most negative) effects, ascending."""
    bottom_values: Tensor
    hist_counts: Tensor
    """``[W, n_bins]`` number of vocabulary tokens per equal-width bin of ``[min, max]``."""
    hist_centres: Tensor
    """``[W, n_bins]`` bin centres."""
    folded_norm: bool
    """Whether the final norm's multiplier was folded into the directions."""

    def negated(self) -> LogitEffects:
        """The effects of the opposite directions ``−w_i`` (the logits are linear in ``w``): top and bottom
        swap with their values negated, the histogram is mirrored. No matmul; the only difference from
        computing them anew is at a histogram's interior bin edges (now closed on the right)."""
        return LogitEffects(
            top_ids=self.bottom_ids,
            top_values=-self.bottom_values,
            bottom_ids=self.top_ids,
            bottom_values=-self.top_values,
            hist_counts=self.hist_counts.flip(-1),
            hist_centres=-self.hist_centres.flip(-1),
            folded_norm=self.folded_norm,
        )


def _merge_topk(
    vals: Tensor, ids: Tensor, new_vals: Tensor, new_ids: Tensor, k: int, largest: bool
) -> tuple[Tensor, Tensor]:
    v = torch.cat([vals, new_vals], 1)
    i = torch.cat([ids, new_ids], 1)
    # deterministic under ties: order by token id first, then a stable sort by value
    o = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.argsort(v, dim=1, stable=True, descending=largest)[:, :k]
    return v.gather(1, o), i.gather(1, o)


def row_topk(X: Tensor, k: int, largest: bool) -> tuple[Tensor, Tensor]:
    """Top (or bottom) ``k`` of every row of ``X``, ordered by value and, among equal values, by
    column (the lowest id first; also for ties at the k-th place, which ``torch.topk`` breaks
    arbitrarily). One ``topk`` pass; rows with a tie at the boundary are redone exactly (rare)."""
    B, V = X.shape
    kk = min(k, V)
    extra = 1 if kk < V else 0
    v, i = torch.topk(X, kk + extra, dim=1, largest=largest, sorted=True)
    if extra:
        tied = (v[:, kk] == v[:, kk - 1]).nonzero().squeeze(1).tolist()
        v, i = v[:, :kk].clone(), i[:, :kk].clone()
        for r in tied:
            thr = v[r, kk - 1]
            cand = ((X[r] >= thr) if largest else (X[r] <= thr)).nonzero().squeeze(1)
            cv = X[r, cand]
            o = torch.argsort(cv, stable=True, descending=largest)[:kk]  # cand is ascending: ties keep id order
            v[r], i[r] = cv[o], cand[o]
    # order inside the k: by id, then a stable sort by value
    o = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.argsort(v, dim=1, stable=True, descending=largest)
    return v.gather(1, o), i.gather(1, o)


def row_ends(X: Tensor, k: int, group: int = 256) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(top values, top ids, bottom values, bottom ids)`` of every row of ``X [B, V]``, exactly as
    :func:`row_topk` gives them, from one pass over ``X``.

    The columns are cut into groups of ``group``; one ``aminmax`` pass gives every group's extremes.
    The top ``k`` of a row lie in the ``k`` groups with the largest maxima (if the ``k``-th and the
    next group maximum differ, every element outside those groups is smaller than the ``k``-th value),
    so ``row_topk`` runs on those ``k × group`` candidates only; rows where the two group maxima are
    equal (a possible tie at the boundary) are done on the whole row. Likewise for the bottom."""
    B, V = X.shape
    kk = min(k, V)
    n_groups = V // group
    if n_groups <= kk + 1 or not X.is_contiguous():
        tv, ti = row_topk(X, kk, largest=True)
        bv, bi = row_topk(X, kk, largest=False)
        return tv, ti, bv, bi
    main = n_groups * group
    grouped = X[:, :main].view(B, n_groups, group)
    gmin, gmax = grouped.amin(dim=2), grouped.amax(dim=2)  # [B, n_groups] (two passes beat one aminmax)
    tail = torch.arange(main, V, device=X.device).unsqueeze(0).expand(B, -1)  # always candidates
    offs = torch.arange(group, device=X.device)
    out: list[Tensor] = []
    for largest, g in ((True, gmax), (False, gmin)):
        gv, gi = torch.topk(g, kk + 1, dim=1, largest=largest, sorted=True)
        cand = torch.cat([(gi[:, :kk].unsqueeze(2) * group + offs).reshape(B, -1), tail], 1)
        cand, _ = torch.sort(cand, dim=1)  # ascending ids: ties inside the candidates keep id order
        v, j = row_topk(X.gather(1, cand), kk, largest=largest)
        i = cand.gather(1, j)
        ambiguous = (gv[:, kk] == gv[:, kk - 1]).nonzero().squeeze(1)
        if ambiguous.numel():
            v, i = v.clone(), i.clone()
            v[ambiguous], i[ambiguous] = row_topk(X[ambiguous], kk, largest=largest)
        out += [v, i]
    return out[0], out[1], out[2], out[3]


def _bincount_rows(idx: Tensor, size: int) -> Tensor:
    """``bincount`` of a ``[B, N]`` int tensor of flat bin ids, its row halves in two threads
    (``bincount`` itself is single-threaded; the threads release the GIL)."""
    if torch.get_num_threads() < 2 or idx.shape[0] < 2 or idx.numel() < (1 << 22):
        return torch.bincount(idx.reshape(-1), minlength=size)
    h = idx.shape[0] // 2
    out: list[Tensor | None] = [None, None]

    def job(j: int, part: Tensor) -> None:
        out[j] = torch.bincount(part.reshape(-1), minlength=size)

    t = threading.Thread(target=job, args=(1, idx[h:]))
    t.start()
    job(0, idx[:h])
    t.join()
    assert out[0] is not None and out[1] is not None
    return out[0] + out[1]


def bin_scale(lo: Tensor, hi: Tensor, n_bins: int) -> Tensor:
    """``n_bins / (hi − lo)`` per row, ``0`` for a constant row (all of it in bin 0)."""
    span = hi - lo
    return torch.where(span > 0, n_bins / span.clamp(min=1e-30), torch.zeros_like(span))


def histogram_rows(X: Tensor, lo: Tensor, hi: Tensor, n_bins: int, work: Tensor | None = None) -> Tensor:
    """Per-row counts ``[B, n_bins]`` of ``X [B, N]`` in equal-width bins over ``[lo, hi]`` (numpy's
    convention: bins closed on the left, the last also on the right): bin ``int(clamp((x − lo)·scale, 0, n − 1))``.
    On the CPU with numba, one compiled pass (:mod:`.logit_kernels`, identical counts); else torch passes
    that overwrite ``X``, with ``work`` (int32, shaped like ``X``) an optional reused buffer for the bin ids."""
    B = X.shape[0]
    scale = bin_scale(lo, hi, n_bins).unsqueeze(1)
    if logit_kernels.available(X):
        return logit_kernels.histogram_rows(X, lo, scale.squeeze(1), n_bins)
    X.sub_(lo.unsqueeze(1)).mul_(scale)  # (x - lo)·n/(hi - lo): subtract first (x·s - lo·s cancels badly far from 0)
    idx = work.copy_(X) if work is not None else X.to(torch.int32)  # truncation toward 0 = floor here
    idx.clamp_(0, n_bins - 1)  # the max, and rounding near the ends
    idx.add_((torch.arange(B, dtype=torch.int32, device=X.device) * n_bins).unsqueeze(1))
    return _bincount_rows(idx, B * n_bins).view(B, n_bins)


BlockEnds = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""``(top values, top ids, bottom values, bottom ids, histogram counts)`` of one block of latents."""


def _block_in_memory(w: Tensor, U: Tensor, k: int, n_bins: int, buf: Tensor, ibuf: Tensor | None) -> BlockEnds:
    """The block's ``[B, vocab]`` logits fit in memory: one matmul (into the reused ``buf``: fresh 100 MB
    allocations cost page faults every block), one top-k pass per end, one histogram pass."""
    B = w.shape[0]
    X = torch.mm(w, U.T, out=buf[:B])
    tv, ti, bv, bi = row_ends(X, k)
    counts = histogram_rows(X, bv[:, 0].clone(), tv[:, 0].clone(), n_bins, work=None if ibuf is None else ibuf[:B])
    return tv, ti, bv, bi, counts


BF16_MIN_VOCAB = 4096
"""Smaller vocabularies always run in float32 (nothing to gain)."""


@dataclass
class _Bf16Vocab:
    """What the bfloat16 path needs of ``U [V, d]``, computed once: ``Uᵀ`` in bfloat16 (``[d, V]``, contiguous:
    oneDNN's bfloat16 matmul runs ≈1.5× faster on it than on ``U``'s transposed view), each token's norm and the
    largest norm of each group of ``group`` tokens (the tail is one more group)."""

    UbT: Tensor
    norms: Tensor
    group_norms: Tensor
    group: int

    @classmethod
    def of(cls, U: Tensor, group: int = 256) -> _Bf16Vocab:
        norms = U.norm(dim=1)
        return cls(U.T.to(torch.bfloat16).contiguous(), norms, _group_max(norms, group), group)


def _group_max(x: Tensor, group: int, largest: bool = True) -> Tensor:
    """Maxima (minima) of ``x [..., V]`` over groups of ``group`` along the last dim; the tail is one more group."""
    V = x.shape[-1]
    n = V // group
    f = torch.amax if largest else torch.amin
    g = f(x[..., : n * group].unflatten(-1, (n, group)), -1)
    return torch.cat([g, f(x[..., n * group :], -1, keepdim=True)], -1) if V > n * group else g


def _exact_end(
    w: Tensor, U: Tensor, X: Tensor, vocab: _Bf16Vocab, k: int, gx: Tensor, largest: bool
) -> tuple[Tensor, Tensor]:
    """Exact float32 top (bottom) ``k`` of ``U·w`` (values, token ids) for every row of ``w [B, d]``, from the
    bfloat16 logits ``X`` (bfloat16, or widened to float32) and ``gx``, the maxima (minima) of ``X`` over groups of
    ``vocab.group`` tokens (the tail is one more group).

    With ``Y = ±X`` and ``e_v`` a rigorous bound on ``|X_v − ℓ_v|`` (below), the exact ``k``-th value is at least
    ``L = min over the k largest Y of (Y_v − e_v)``, so only tokens with ``Y_v + e_v ≥ L`` can be in the exact top
    ``k`` (``Y + e`` grows with ``Y``, so a group's largest ``Y`` and largest norms bound it over the group);
    groups whose bound is below ``L`` are skipped whole. The candidates are recomputed exactly (float64 sums rounded
    once to float32, :func:`tempolens.bf16.exact_dots`) and ranked as :func:`row_topk` does (by value, then token id).

    ``e_v = a(w)·‖u_v‖ + r·|X_v|`` is the bound of :mod:`tempolens.bf16`: the inputs' bfloat16 rounding, the float32
    sums of the bfloat16 matmul and the output's rounding to bfloat16."""
    B, V = X.shape
    sign = 1.0 if largest else -1.0
    a = input_slack(w)  # e_v = a·‖u_v‖ + r·|X_v|
    r = OUTPUT_ROUND

    g = vocab.group
    n_full = V // g
    gy = gx * sign  # [B, n_groups]: each group's largest Y (the tail is the last group)
    top_groups = torch.topk(gy, min(k, gy.shape[1]), dim=1).indices  # they hold the k largest Y
    cols = (top_groups.unsqueeze(2) * g + torch.arange(g, device=X.device)).reshape(B, -1)
    y = torch.where(cols < V, X.gather(1, cols.clamp(max=V - 1)).float() * sign, -torch.inf)  # tail group: shorter
    y, j = torch.topk(y, k, dim=1)
    c = cols.gather(1, j)
    bound = (y - r * y.abs() - a * vocab.norms[c]).amin(1, keepdim=True)  # L
    slack = a * vocab.group_norms  # [B, n_groups]: the largest e − r·|X| of each group
    tail_slack = a * vocab.norms[n_full * g :]  # the tail columns, each with its own bound
    if logit_kernels.available(X):
        rows, cols = logit_kernels.end_candidates(
            X, sign, r, gy[:, :n_full], slack[:, :n_full], tail_slack, bound.squeeze(1), g
        )
    else:
        rows, cols = _end_candidates(X, sign, r, gy, slack, tail_slack, bound, g)
    ids = cols  # token ids: the columns of X
    vals = exact_dots(U, w, ids, rows)  # float64 sums, rounded once
    o = torch.argsort(ids, stable=True)  # order: row, then value (descending for the top), then token id
    o = o[torch.argsort(vals[o] * sign, stable=True, descending=True)]
    o = o[torch.argsort(rows[o], stable=True)]
    counts = torch.bincount(rows, minlength=B)  # ≥ k per row: the approximate top k are candidates
    pick = o[(torch.cumsum(counts, 0) - counts).unsqueeze(1) + torch.arange(k, device=X.device)]
    return vals[pick], ids[pick]


def _end_candidates(
    X: Tensor, sign: float, r: float, gy: Tensor, slack: Tensor, tail_slack: Tensor, bound: Tensor, g: int
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of the tokens with ``Y + r·|Y| + slack ≥ L`` (:func:`_exact_end`), in torch: groups that may
    hold one (their largest ``Y`` and largest norms bound every ``Y + e`` inside), then the tokens of those groups,
    then the tail columns. The reference of :func:`.logit_kernels.end_candidates` (same float32 tests)."""
    B, V = X.shape
    n_full = V // g
    hit = gy + r * gy.abs() + slack >= bound
    hr, hg = hit[:, :n_full].nonzero(as_tuple=True)
    block = X[:, : n_full * g].view(B, n_full, g)[hr, hg] * sign  # [n_hits, g]
    pr, off = (block + r * block.abs() + slack[hr, hg].unsqueeze(1) >= bound[hr]).nonzero(as_tuple=True)
    rows, cols = hr[pr], hg[pr] * g + off
    if V > n_full * g:
        yt = X[:, n_full * g :] * sign
        tr, tc = (yt + r * yt.abs() + tail_slack >= bound).nonzero(as_tuple=True)
        rows, cols = torch.cat([rows, tr]), torch.cat([cols, n_full * g + tc])
    return rows, cols


def _block_bf16(
    w: Tensor,
    U: Tensor,
    vocab: _Bf16Vocab,
    k: int,
    n_bins: int,
    buf: Tensor | None,
    bbuf: Tensor,
    ibuf: Tensor | None,
    table: Tensor | None,
) -> BlockEnds:
    """Like :func:`_block_in_memory`, the ``[B, vocab]`` logits from a bfloat16 matmul and the top/bottom ``k``
    recomputed exactly in float32 (module docstring: Precision). The compiled passes read the bfloat16 logits as they
    are; with ``table`` (int32 ``[rows, 65536]``) they count how often each bfloat16 value occurs in a row in the same
    read as the group extremes, and the histogram bins each distinct value once. The torch passes read the logits
    widened to float32 (exactly) into ``buf``."""
    B = w.shape[0]
    X = torch.mm(w.to(torch.bfloat16), vocab.UbT, out=bbuf[:B])
    if buf is not None:
        X = buf[:B].copy_(X)
        gmax, gmin = _group_max(X, vocab.group), _group_max(X, vocab.group, largest=False)
    elif table is not None:
        gmax, gmin = logit_kernels.extremes_and_counts(X, vocab.group, table)
    else:
        gmax, gmin = logit_kernels.group_extremes(X, vocab.group)
    if buf is None:  # both ends of each row in one compiled pass; rows it cannot take (a float32 overflow) in torch
        args = (OUTPUT_ROUND, input_slack(w), vocab.norms, vocab.group_norms, gmax, gmin, k, vocab.group)
        tv, ti, bv, bi, ok = logit_kernels.exact_ends(X, U, w, *args)
        if not bool(ok.all()):
            redo = (~ok).nonzero().squeeze(1)
            Xr, wr = X[redo], w[redo]
            tv[redo], ti[redo] = _exact_end(wr, U, Xr, vocab, k, gmax[redo], largest=True)
            bv[redo], bi[redo] = _exact_end(wr, U, Xr, vocab, k, gmin[redo], largest=False)
    else:
        tv, ti = _exact_end(w, U, X, vocab, k, gmax, largest=True)
        bv, bi = _exact_end(w, U, X, vocab, k, gmin, largest=False)
    lo, hi = bv[:, 0].clone(), tv[:, 0].clone()
    if table is not None:  # the table exists only on the compiled route (no float32 buffer)
        counts = logit_kernels.histogram_of_counts(table[:B], lo, bin_scale(lo, hi, n_bins), n_bins)
    else:
        counts = histogram_rows(X, lo, hi, n_bins, work=None if ibuf is None else ibuf[:B])
    return tv, ti, bv, bi, counts


def _block_streaming(w: Tensor, U: Tensor, k: int, n_bins: int, chunks: list[tuple[int, int]]) -> BlockEnds:
    """Top/bottom-k and min/max merged over vocabulary chunks, then a second sweep recomputes each
    chunk for the histogram (two matmuls, at most ``B × chunk`` logits at once)."""
    B, dev = w.shape[0], w.device
    tv = torch.full((B, 0), 0.0, device=dev)
    ti = torch.zeros((B, 0), dtype=torch.int64, device=dev)
    bv, bi = tv.clone(), ti.clone()
    for s, e in chunks:
        logits = w @ U[s:e].T  # [B, chunk]
        cv, ci = row_topk(logits, k, largest=True)
        tv, ti = _merge_topk(tv, ti, cv, ci + s, k, largest=True)
        cv, ci = row_topk(logits, k, largest=False)
        bv, bi = _merge_topk(bv, bi, cv, ci + s, k, largest=False)
    lo, hi = bv[:, 0].clone(), tv[:, 0].clone()
    counts = torch.zeros(B, n_bins, dtype=torch.int64, device=dev)
    for s, e in chunks:
        counts += histogram_rows(w @ U[s:e].T, lo, hi, n_bins)
    return tv, ti, bv, bi, counts


def bin_centres(lo: Tensor, hi: Tensor, n_bins: int) -> Tensor:
    """``[B, n_bins]`` centres of ``n_bins`` equal-width bins over each row's ``[lo, hi]``."""
    steps = torch.arange(n_bins + 1, device=lo.device, dtype=torch.float32) / n_bins
    edges = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * steps
    return (edges[:, :-1] + edges[:, 1:]) / 2


def _block_runner(
    U: Tensor, block: int, rows: int, k: int, n_bins: int, memory_mb: float, precision: str, vocab_chunk: int
) -> Callable[[Tensor], BlockEnds]:
    """The function computing one block of ``block`` directions (buffers for ``rows`` = min(block, width)):
    bfloat16 when asked, the block's logits fit in ``memory_mb`` and the vocabulary is large enough; float32 in
    memory (reused buffers); else streamed over vocabulary chunks."""
    V, dev = U.shape[0], U.device
    if block * V * 4 > int(memory_mb * 2**20):
        chunks = [(s, min(V, s + vocab_chunk)) for s in range(0, V, vocab_chunk)]
        return lambda w: _block_streaming(w, U, k, n_bins, chunks)
    compiled = logit_kernels.available(U)  # the compiled passes need no int32 bin ids, nor bfloat16 widened
    ibuf = None if compiled else torch.empty(rows, V, dtype=torch.int32, device=dev)
    if precision == "bf16" and V >= BF16_MIN_VOCAB and rows > 0 and k <= 256:
        vocab = _Bf16Vocab.of(U)
        bbuf = torch.empty(rows, V, dtype=torch.bfloat16, device=dev)
        wide = None if compiled else torch.empty(rows, V, device=dev)
        table = None  # counts of each bfloat16 value per row (256 KB a row): for vocabularies at least that wide
        if compiled and V >= logit_kernels.BF16_PATTERNS:
            table = torch.empty(rows, logit_kernels.BF16_PATTERNS, dtype=torch.int32, device=dev)
        return lambda w: _block_bf16(w, U, vocab, k, n_bins, wide, bbuf, ibuf, table)
    buf = torch.empty(rows, V, device=dev)
    return lambda w: _block_in_memory(w, U, k, n_bins, buf, ibuf)


def logit_effects(
    W_dec: Tensor,
    W_U: Tensor,
    norm_multiplier: Tensor | None = None,
    *,
    k: int = 10,
    n_bins: int = 50,
    block: int | None = None,
    vocab_chunk: int = 32768,
    memory_mb: float = 256,
    device: str | torch.device = "cpu",
    precision: Literal["fp32", "bf16"] = "fp32",
    progress: bool = False,
) -> LogitEffects:
    """Logit effects of every row of ``W_dec [width, d]`` through ``W_U [vocab, d]``.

    ``norm_multiplier [d]`` (the final norm's effective multiplier, e.g. Gemma's ``1 + w``) is folded
    into the directions when given. Histogram bins are equal-width over each latent's ``[min, max]``
    logit effect (numpy's convention); matmuls run in float32 on ``device``.
    ``block`` latents per block (default: as many as keep ``block × vocab`` float32 logits within
    ``memory_mb``, between 16 and 1024). ``precision="bf16"`` (module docstring: Precision) applies when a
    block's logits fit in ``memory_mb`` and the vocabulary has at least :data:`BF16_MIN_VOCAB` tokens.
    """
    plan = _plan(W_dec, W_U, norm_multiplier, k, n_bins, block, vocab_chunk, memory_mb, device, precision)
    for b0, ends in plan.blocks(progress):
        _fill(plan.effects, b0, ends)
    return plan.effects


@dataclass
class _Plan:
    """The blocks of one logit-effects computation and the :class:`LogitEffects` (allocated, on the CPU) they fill."""

    effects: LogitEffects
    rows: Tensor
    """``[width, d]`` float32 directions on the device, the norm multiplier folded in."""
    run_block: Callable[[], Callable[[Tensor], BlockEnds]]
    """Makes the block kernel (and its buffers) when the computation starts."""
    block: int

    def blocks(self, progress: bool = False) -> Iterator[tuple[int, BlockEnds]]:
        """``(first row, BlockEnds)`` of each block in row order, computed as they are iterated."""
        width = self.rows.shape[0]
        starts = range(0, width, self.block)
        run_block = self.run_block()
        for b0 in tqdm(starts, desc="logit effects", unit="block", disable=not progress, leave=False):
            yield b0, run_block(self.rows[b0 : b0 + self.block])


def _plan(
    W_dec: Tensor,
    W_U: Tensor,
    norm_multiplier: Tensor | None,
    k: int,
    n_bins: int,
    block: int | None,
    vocab_chunk: int,
    memory_mb: float,
    device: str | torch.device,
    precision: str,
) -> _Plan:
    """What :func:`logit_effects` computes (arguments as there), before any block is computed."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16; got {precision!r}")
    dev = torch.device(device)
    Wd = require_finite(W_dec.detach().to(dev, torch.float32), "the decoder directions (W_dec)")
    if norm_multiplier is not None:
        m = require_finite(norm_multiplier.detach().to(dev, torch.float32), "the final norm's multiplier")
        Wd = Wd * m.unsqueeze(0)
    U = require_finite(W_U.detach().to(dev, torch.float32), "the unembedding (W_U)")
    width, V = Wd.shape[0], U.shape[0]
    kk = min(k, V)
    step = block or max(16, min(1024, int(memory_mb * 2**20) // max(1, V * 4)))
    values = torch.zeros(width, kk)
    ids = torch.zeros(width, kk, dtype=torch.int64)
    effects = LogitEffects(
        top_ids=ids,
        top_values=values,
        bottom_ids=ids.clone(),
        bottom_values=values.clone(),
        hist_counts=torch.zeros(width, n_bins, dtype=torch.int64),
        hist_centres=torch.zeros(width, n_bins),
        folded_norm=norm_multiplier is not None,
    )
    kernel = functools.partial(_block_runner, U, step, min(step, width), kk, n_bins, memory_mb, precision, vocab_chunk)
    return _Plan(effects=effects, rows=Wd, run_block=kernel, block=step)


def require_finite(t: Tensor, what: str) -> Tensor:
    """``t`` itself; ``ValueError`` naming ``what``, how many values are NaN or infinite and the first rows holding
    them when any is (the logit effects of such weights are undefined). The common case costs one float32 sum: it is
    finite unless a value is not (or the sum overflows, which the exact check then clears)."""
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return t
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return t
    rows = bad.reshape(bad.shape[0], -1).any(1).nonzero().squeeze(1) if t.dim() > 1 else bad.nonzero().squeeze(1)
    where = ", ".join(str(r) for r in rows[:5].tolist()) + (", …" if rows.numel() > 5 else "")
    raise ValueError(
        f"{what} has {int(bad.sum())} NaN or infinite values ({'rows' if t.dim() > 1 else 'at'} {where}); their logit "
        "effects are undefined. A training run that diverged writes such weights: use a checkpoint from before it"
    )


def _fill(effects: LogitEffects, b0: int, ends: BlockEnds) -> None:
    """Write one block's ends, histogram and bin centres into rows ``b0…`` of ``effects``."""
    tv, ti, bv, bi, counts = ends
    n_bins = effects.hist_counts.shape[1]
    rows = slice(b0, b0 + tv.shape[0])
    effects.top_values[rows], effects.top_ids[rows] = tv.cpu(), ti.cpu()
    effects.bottom_values[rows], effects.bottom_ids[rows] = bv.cpu(), bi.cpu()
    effects.hist_counts[rows] = counts.cpu()
    effects.hist_centres[rows] = bin_centres(bv[:, 0], tv[:, 0], n_bins).cpu()


class LogitEffectsJob:
    """:func:`logit_effects` computed in a background thread, block by block in row order, so that a caller can
    read the first rows (:meth:`wait`) while later ones are computed, and do other work meanwhile (torch and the
    compiled kernels release the GIL: on a 2-core CPU the job fills the core that Python-bound work leaves idle).
    An error in the thread is raised by the next :meth:`wait` or :meth:`result`."""

    def __init__(
        self,
        W_dec: Tensor,
        W_U: Tensor,
        norm_multiplier: Tensor | None = None,
        *,
        on_complete: Callable[[LogitEffects], None] | None = None,
        k: int = 10,
        n_bins: int = 50,
        block: int | None = None,
        vocab_chunk: int = 32768,
        memory_mb: float = 256,
        device: str | torch.device = "cpu",
        precision: Literal["fp32", "bf16"] = "fp32",
        progress: bool = False,
    ) -> None:
        """Same arguments as :func:`logit_effects`; starts at once. ``on_complete(effects)`` runs in the thread once
        every row is computed, before the last rows are reported ready (e.g. to cache them: whoever waits for the
        last rows then finds them cached); its error is raised like the computation's."""
        plan = _plan(W_dec, W_U, norm_multiplier, k, n_bins, block, vocab_chunk, memory_mb, device, precision)
        self.effects = plan.effects
        self.width = self.effects.top_ids.shape[0]
        self.seconds = 0.0
        """Wall time the computation took (set when it finishes)."""
        self._done = 0
        self._on_complete = on_complete
        self._cancelled = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, args=(plan.blocks(progress),), name="tempolens-logit-effects", daemon=True
        )
        self._thread.start()

    def _run(self, blocks: Iterator[tuple[int, BlockEnds]]) -> None:
        t0 = time.perf_counter()
        try:
            for b0, ends in blocks:
                if self._cancelled:
                    raise RuntimeError("logit effects cancelled")
                _fill(self.effects, b0, ends)
                n = b0 + ends[0].shape[0]
                if n >= self.width and self._on_complete is not None:
                    self._on_complete(self.effects)
                with self._cond:
                    self._done = n
                    self._cond.notify_all()
            if self.width == 0 and self._on_complete is not None:
                self._on_complete(self.effects)
        except BaseException as e:  # raised in the caller's thread by wait()
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            self.seconds = time.perf_counter() - t0
            with self._cond:
                self._done = self.width if self._error is None else self._done
                self._cond.notify_all()

    @property
    def complete(self) -> bool:
        """Whether every row has been computed (the thread finished without an error)."""
        return not self._thread.is_alive() and self._error is None

    def wait(self, n_rows: int) -> LogitEffects:
        """Block until rows ``0 … n_rows − 1`` are computed; the effects (rows past those may still be zeros)."""
        with self._cond:
            while self._done < min(n_rows, self.width) and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
        return self.effects

    def cancel(self) -> None:
        """Stop after the block being computed and wait for the thread (a process must not exit while torch or
        the compiled kernels still run in it)."""
        self._cancelled = True
        self._thread.join()

    def result(self) -> LogitEffects:
        """Every row (waits for the thread to finish)."""
        effects = self.wait(self.width)
        self._thread.join()
        return effects
