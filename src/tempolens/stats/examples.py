"""The examples dashboards show for each latent, and their token windows from the store.

:func:`examples_of` chooses the examples of a group of latents from their :class:`FeatureStats` (the
top examples, then samples of each activation interval); :func:`gather_windows` reads the store once for
any set of examples ``(latent, global position)`` and returns their token windows with this latent's value
(and, for Temporal SAEs, predicted code and predicted share) at every token of the window;
:func:`example_windows` does both, so the windows carry the group each example is shown in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempolens.stats.features import FeatureStats
from tempolens.store.codestore import CodeStore, Shard, StoreError


@dataclass
class Windows:
    """Token windows of a set of examples ``(latent, global position)``; all windows have length ``L``."""

    latent: Tensor
    """``[E]`` int64."""
    prompt: Tensor
    """``[E]`` int64 global prompt index."""
    start: Tensor
    """``[E]`` int64 first position of the window in its prompt."""
    qualifying: Tensor
    """``[E]`` int64 index of the example token inside the window."""
    tokens: Tensor
    """``[E, L]`` int64 token ids."""
    special: Tensor
    """``[E, L]`` bool: BOS/EOS/pad (their values are shown as 0)."""
    values: Tensor
    """``[E, L]`` float32 this latent's activation at every window token."""
    pred: Tensor | None = None
    """``[E, L]`` float32 this latent's predicted code where the store has it (where the latent is
    in the novel codes), NaN elsewhere (Temporal SAEs). Windows of the predicted codes
    (``codes="pred"``): the signed stored predicted code at every token."""
    pred_share: Tensor | None = None
    """``[E, L]`` float32 predicted share of every window token (Temporal SAEs)."""
    group: Tensor | None = None
    """``[E]`` int64 group each example is shown in: −1 = the top examples, ``i`` ≥ 0 = activation
    interval ``i`` (set by :func:`example_windows`; ``None`` for windows of arbitrary examples)."""

    def scaled(self, scale: Tensor) -> Windows:
        """These windows with each example's values and predicted codes multiplied by ``scale[latent]``
        (see :meth:`FeatureStats.scaled`); tokens, positions and shares are unchanged."""
        col = scale.detach().to(torch.float32).reshape(-1)[self.latent].unsqueeze(1)
        return replace(self, values=self.values * col, pred=self.pred * col if self.pred is not None else None)


def examples_of(stats: FeatureStats, latents: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The examples shown for ``latents``, in display order: per latent the top group (rank order), then
    each interval lowest first (samples by value descending). Returns ``(latent, gpos, group, value)``
    with ``group = -1`` for the top group and the interval index otherwise."""
    lat = torch.as_tensor(list(latents), dtype=torch.int64)
    n_top = stats.top_gpos.shape[1]
    n_int, n_per = stats.int_gpos.shape[1], stats.int_gpos.shape[2]
    tg, tv = stats.top_gpos[lat], stats.top_value[lat]
    ig, iv = stats.int_gpos[lat], stats.int_value[lat]
    # order interval samples by value descending (empty slots last), stable by position
    key = torch.where(ig >= 0, iv, torch.full_like(iv, float("-inf")))
    o = torch.argsort(ig, dim=2, stable=True)
    key, ig, iv = key.gather(2, o), ig.gather(2, o), iv.gather(2, o)
    o = torch.argsort(key, dim=2, stable=True, descending=True)
    ig, iv = ig.gather(2, o), iv.gather(2, o)
    G = len(lat)
    gpos = torch.cat([tg, ig.reshape(G, -1)], 1)
    value = torch.cat([tv, iv.reshape(G, -1)], 1)
    group = torch.cat([torch.full((n_top,), -1), torch.arange(n_int).repeat_interleave(n_per)])
    group = group.unsqueeze(0).expand(G, -1)
    latent = lat.unsqueeze(1).expand_as(gpos)
    keep = gpos >= 0
    return latent[keep], gpos[keep], group[keep], value[keep]


def example_windows(
    store: CodeStore,
    stats: FeatureStats,
    latents: Sequence[int],
    *,
    window: int = 128,
    after: int | None = None,
    progress: bool = False,
    codes: str = "novel",
) -> Windows:
    """The windows of the examples shown for ``latents`` (:func:`examples_of`, in its order), with the
    group of each example in :attr:`Windows.group`; one read of the store (:func:`gather_windows`)."""
    latent, gpos, group, _ = examples_of(stats, latents)
    windows = gather_windows(store, latent, gpos, window=window, after=after, progress=progress, codes=codes)
    return replace(windows, group=group)


def first_of_each(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``(index of each distinct key's first occurrence, inverse)`` of a 1-D tensor (distinct keys in ascending
    order; ``inverse[i]`` = the position of ``keys[i]`` among them): e.g. each distinct window of many examples."""
    uniq, inverse = torch.unique(keys, return_inverse=True)
    pos = torch.arange(keys.numel(), dtype=torch.int64)
    first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.int64).scatter_reduce_(0, inverse, pos, reduce="amin")
    return first, inverse


def window_starts(pos: Tensor, prompt_len: int, window: int, after: int) -> Tensor:
    """First position of each window: the whole prompt when it fits in ``window``; otherwise
    ``window`` tokens with up to ``after`` tokens after the example token (more before it, since a
    causal model reads the past), clipped to the prompt."""
    if prompt_len <= window:
        return torch.zeros_like(pos)
    after = max(0, min(after, window - 1))
    return (pos - (window - 1 - after)).clamp(min=0, max=prompt_len - window)


@dataclass
class _WindowFields:
    """The window fields :func:`gather_windows` fills shard by shard (``pred``/``pred_share`` are made
    when a shard first has them); ``seen`` marks the examples found so far."""

    tokens: Tensor
    special: Tensor
    values: Tensor
    seen: Tensor
    pred: Tensor | None = None
    pred_share: Tensor | None = None

    @classmethod
    def empty(cls, n_examples: int, length: int) -> _WindowFields:
        """Zeroed fields of ``n_examples`` windows of ``length`` tokens, none seen."""
        return cls(
            tokens=torch.zeros(n_examples, length, dtype=torch.int64),
            special=torch.zeros(n_examples, length, dtype=torch.bool),
            values=torch.zeros(n_examples, length, dtype=torch.float32),
            seen=torch.zeros(n_examples, dtype=torch.bool),
        )


def _shard_codes(shard: Shard, codes: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(token, latent, value)`` of the shard's stored codes: the novel codes, or the predicted ones."""
    if codes == "pred":
        assert shard.pred_latent is not None and shard.pred_value is not None
        return shard.pred_token(), shard.pred_latent, shard.pred_value
    return shard.code_token(), shard.code_latent, shard.code_value


def _fill_from_shard(
    fields: _WindowFields,
    shard: Shard,
    latent: Tensor,
    prompt: Tensor,
    cols: Tensor,
    shape: tuple[int, int],
    codes: str,
) -> None:
    """Fill the windows of the examples whose prompt is in ``shard`` (``cols [E, L]``: each window's
    positions in its prompt; ``shape``: the store's ``(width, prompt_len)``)."""
    width, T = shape
    ids = shard.prompt_ids.to(torch.int64)
    sorted_ids, order = torch.sort(ids)
    where = torch.searchsorted(sorted_ids, prompt).clamp(max=max(len(ids) - 1, 0))
    here = sorted_ids[where] == prompt if len(ids) else torch.zeros(prompt.numel(), dtype=torch.bool)
    if not bool(here.any()):
        return
    ex = torch.nonzero(here).squeeze(1)
    local = order[where[ex]]
    # one row per distinct (prompt, latent) pair: the latent's value at every token of the prompt
    ukeys, inv = torch.unique(local * width + latent[ex], return_inverse=True)
    tok, c_latent, c_value = _shard_codes(shard, codes)
    ckey = (tok // T) * width + c_latent.to(torch.int64)
    at = torch.searchsorted(ukeys, ckey).clamp(max=ukeys.numel() - 1)
    match = ukeys[at] == ckey
    rows = torch.zeros(ukeys.numel(), T, dtype=torch.float32)
    rows[at[match], tok[match] % T] = c_value[match].to(torch.float32)
    c = cols[ex]
    lp = local.unsqueeze(1)
    fields.values[ex] = rows[inv].gather(1, c)
    fields.tokens[ex] = shard.tokens.to(torch.int64)[lp, c]
    fields.special[ex] = (shard.special != 0)[lp, c]
    if "pred" in shard.code_extras and codes != "pred":
        if fields.pred is None:
            fields.pred = torch.full(fields.values.shape, float("nan"))
        prow = torch.full((ukeys.numel(), T), float("nan"))
        prow[at[match], tok[match] % T] = shard.code_extras["pred"][match].to(torch.float32)
        fields.pred[ex] = prow[inv].gather(1, c)
    if "pred_share" in shard.extras:
        if fields.pred_share is None:
            fields.pred_share = torch.full(fields.values.shape, float("nan"))
        fields.pred_share[ex] = shard.extras["pred_share"].to(torch.float32)[lp, c]
    fields.seen[ex] = True


def gather_windows(
    store: CodeStore,
    latent: Tensor,
    gpos: Tensor,
    *,
    window: int = 128,
    after: int | None = None,
    progress: bool = False,
    codes: str = "novel",
) -> Windows:
    """Read the store once and return the windows of the examples ``(latent[e], gpos[e])``.

    ``codes="pred"``: ``values`` = the stored ``sign · z_pred`` clipped at 0 (:attr:`CodeStore.pred_sign`; what is
    ranked; 0 where the token did not keep this latent among its predicted codes) and ``pred`` the same unclipped
    (predictions of either sign; NaN at BOS/EOS/pad).

    Memory: ``E × L`` per field plus, per shard, ``(distinct (prompt, latent) pairs) × prompt_len``.
    """
    T = store.prompt_len
    L = min(T, window)
    after = window // 4 if after is None else after
    latent = latent.to(torch.int64)
    gpos = gpos.to(torch.int64)
    prompt, pos = gpos // T, gpos % T
    start = window_starts(pos, T, window, after)
    cols = start.unsqueeze(1) + torch.arange(L)
    f = _WindowFields.empty(latent.numel(), L)
    for shard in tqdm(
        store.iter_shards(verify=False),
        total=store.n_shards,
        desc="example windows",
        unit="shard",
        disable=not progress,
        leave=False,
    ):
        _fill_from_shard(f, shard, latent, prompt, cols, (store.width, T), codes)
    if not bool(f.seen.all()):
        raise StoreError(
            f"{int((~f.seen).sum())} example positions of the statistics are not in the shards of {store.root}: the "
            "shards changed after the statistics were computed, or its meta.json disagrees with them; rerun with "
            "--recompute, or collect the store again with --overwrite"
        )
    values = f.values.masked_fill(f.special, 0.0)
    pred = f.pred
    if codes == "pred":
        pred = values * store.pred_sign
        values = pred.clamp(min=0.0)
    if pred is not None:
        pred = pred.masked_fill(f.special, float("nan"))
    return Windows(
        latent=latent,
        prompt=prompt,
        start=start,
        qualifying=pos - start,
        tokens=f.tokens,
        special=f.special,
        values=values,
        pred=pred,
        pred_share=f.pred_share,
    )
