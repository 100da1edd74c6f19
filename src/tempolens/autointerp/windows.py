"""Example windows for autointerp, sampled from a code store (the model is never re-run).

For a set of latents, two streaming passes over the store's shards collect (1) firing counts of
every latent and (2) the sparse entries ``(token position, activation)`` of the chosen latents
only, so memory is bounded by those latents' nonzeros (never ``[tokens × width]``). Windows are
then drawn per latent with a per-latent seeded generator (order-independent, resumable):

- **top**: the highest activations, greedily non-overlapping within a prompt (SAEBench ``no_overlap``);
- **iw**: importance-weighted, ``p ∝ act²`` over the activations below the smallest top activation
  (SAEBench ``get_iw_sample_indices`` after thresholding), without replacement;
- **quantile**: the activating positions sorted by value, split into ``n_quantiles`` equal-count
  groups, a few drawn from each (delphi);
- **random**: windows in which the latent is zero at every token (true negatives).

A window is ``window_len`` tokens inside one prompt; ``align="centred"`` puts the qualifying token
in the middle (SAEBench: ``buffer = 10`` tokens on each side of the centre → 21 tokens),
``align="ending"`` makes it the last token. Only centres whose whole window fits in the prompt
are used, and BOS/EOS/pad positions are never centres (their activations are read as 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tempolens.store.codestore import CodeStore

Align = Literal["centred", "ending"]


@dataclass
class Window:
    """One example window of one latent."""

    prompt: int
    """Row of the prompt in the store (shards concatenated in order)."""
    start: int
    """Position of the first window token inside the prompt."""
    center: int
    """Offset of the qualifying token inside the window (``-1`` for random windows)."""
    tokens: list[int]
    acts: list[float]
    """This latent's activation at every window token (0 at special tokens)."""
    special: list[bool]
    kind: str
    """``top``, ``iw``, ``quantile`` or ``random``."""
    quantile: int = -1

    @property
    def max_act(self) -> float:
        return max(self.acts) if self.acts else 0.0

    @property
    def is_active(self) -> bool:
        return self.max_act > 0


@dataclass
class LatentWindows:
    """All windows drawn for one latent."""

    latent: int
    n_firings: int
    max_act: float
    top: list[Window] = field(default_factory=list)
    iw: list[Window] = field(default_factory=list)
    quantile: list[Window] = field(default_factory=list)
    random: list[Window] = field(default_factory=list)


@dataclass(frozen=True)
class WindowSpec:
    """How many windows of each kind to draw, and their shape."""

    window_len: int = 21
    align: Align = "centred"
    n_top: int = 12
    n_iw: int = 7
    n_quantiles: int = 10
    per_quantile: int = 2
    n_random: int = 10

    def offsets(self) -> tuple[int, int]:
        """Tokens (left, right) of the qualifying token."""
        if self.align == "centred":
            left = (self.window_len - 1) // 2
            return left, self.window_len - 1 - left
        return self.window_len - 1, 0


def latent_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (stable across runs and orders)."""
    h = hashlib.sha256(repr((seed,) + tuple(keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


# --------------------------------------------------------------------------------------------------
# store passes


def firing_counts(store: CodeStore, progress: bool = True) -> torch.Tensor:
    """``[width]`` int64: how many non-special tokens each latent fires on (one streaming pass).

    This first pass verifies every shard's checksum, so a corrupt store is named before any LLM call."""
    counts = torch.zeros(store.width, dtype=torch.int64)
    for shard in tqdm(
        store.iter_shards(verify=True), total=store.n_shards, desc="firing counts", disable=not progress, leave=False
    ):  # first pass: checksums
        tok = shard.code_token()
        keep = shard.special.reshape(-1)[tok] == 0
        counts += torch.bincount(shard.code_latent[keep].long(), minlength=store.width)
    return counts


def select_latents(
    counts: torch.Tensor, n: int, min_firings: int = 15, seed: int = 0, forced: Sequence[int] = ()
) -> list[int]:
    """Latents to interpret: ``forced`` if given, else ``n`` latents drawn with ``seed`` among the
    alive ones (more than ``min_firings`` firings, as SAEBench); all alive ones if fewer. Sorted."""
    if forced:
        return sorted({int(i) for i in forced})
    alive = torch.nonzero(counts > min_firings).flatten().numpy()
    if alive.size <= n:
        return sorted(alive.tolist())
    rng = latent_rng(seed, "select")
    return sorted(rng.choice(alive, size=n, replace=False).tolist())


@dataclass
class LatentEntries:
    """Sparse entries of chosen latents: ``pos`` = prompt_row·T + t (sorted), ``val`` per entry."""

    pos: dict[int, np.ndarray]
    val: dict[int, np.ndarray]
    tokens: np.ndarray
    """``[P, T]`` token ids of the whole store."""
    special: np.ndarray
    """``[P, T]`` bool."""


def gather_entries(store: CodeStore, latents: Sequence[int], progress: bool = True) -> LatentEntries:
    """Second streaming pass: the nonzero (position, value) entries of ``latents`` (special tokens dropped)."""
    width = store.width
    slot = torch.full((width,), -1, dtype=torch.int64)
    lat = torch.as_tensor(list(latents), dtype=torch.int64)
    if lat.numel() and (int(lat.min()) < 0 or int(lat.max()) >= width):
        from tempolens.errors import ConfigError

        raise ConfigError(
            f"latent indices must be in 0..{width - 1} for {store.root}; got {lat.min().item()}..{lat.max().item()}"
        )
    slot[lat] = torch.arange(lat.numel())
    parts_slot, parts_pos, parts_val, toks, specs = [], [], [], [], []
    row = 0
    for shard in tqdm(
        store.iter_shards(verify=False), total=store.n_shards, desc="gather entries", disable=not progress, leave=False
    ):
        T = shard.prompt_len
        tok = shard.code_token()
        s = slot[shard.code_latent.long()]
        keep = (s >= 0) & (shard.special.reshape(-1)[tok] == 0)
        parts_slot.append(s[keep])
        parts_pos.append(tok[keep] + row * T)
        parts_val.append(shard.code_value[keep].float())
        toks.append(shard.tokens.numpy().astype(np.int64))
        specs.append(shard.special.numpy().astype(bool))
        row += shard.n_prompts
    tokens = np.concatenate(toks) if toks else np.zeros((0, store.prompt_len), np.int64)
    special = np.concatenate(specs) if specs else np.zeros((0, store.prompt_len), bool)
    if parts_slot:
        s_all = torch.cat(parts_slot).numpy()
        p_all = torch.cat(parts_pos).numpy()
        v_all = torch.cat(parts_val).numpy()
    else:
        s_all = p_all = np.zeros(0, np.int64)
        v_all = np.zeros(0, np.float32)
    order = np.lexsort((p_all, s_all))
    s_all, p_all, v_all = s_all[order], p_all[order], v_all[order]
    bounds = np.searchsorted(s_all, np.arange(len(latents) + 1))
    pos = {int(l): p_all[bounds[j] : bounds[j + 1]] for j, l in enumerate(latents)}
    val = {int(l): v_all[bounds[j] : bounds[j + 1]] for j, l in enumerate(latents)}
    return LatentEntries(pos=pos, val=val, tokens=tokens, special=special)


# --------------------------------------------------------------------------------------------------
# per-latent sampling


def _make_window(
    flat_center: int,
    pos: np.ndarray,
    val: np.ndarray,
    tokens: np.ndarray,
    special: np.ndarray,
    spec: WindowSpec,
    kind: str,
    quantile: int = -1,
    is_random: bool = False,
) -> Window:
    T = tokens.shape[1]
    left, right = spec.offsets()
    p, t = divmod(int(flat_center), T)
    start = t - left
    a = p * T + start
    acts = np.zeros(spec.window_len, dtype=np.float64)
    i0, i1 = np.searchsorted(pos, [a, a + spec.window_len])
    acts[pos[i0:i1] - a] = val[i0:i1]
    return Window(
        prompt=p,
        start=start,
        center=-1 if is_random else left,
        tokens=tokens[p, start : start + spec.window_len].tolist(),
        acts=acts.tolist(),
        special=special[p, start : start + spec.window_len].tolist(),
        kind=kind,
        quantile=quantile,
    )


def _valid_centre(pos: np.ndarray, T: int, spec: WindowSpec) -> np.ndarray:
    left, right = spec.offsets()
    t = pos % T
    return (t >= left) & (t <= T - 1 - right)


def _top_no_overlap(pos: np.ndarray, val: np.ndarray, k: int, T: int, min_gap: int) -> np.ndarray:
    """Indices of the ``k`` largest values, skipping any within ``min_gap`` tokens of a chosen one in the same
    prompt."""
    order = np.lexsort((pos, -val))
    chosen: list[int] = []
    chosen_pos: list[int] = []
    for i in order:
        p = int(pos[i])
        if any(p // T == q // T and abs(p - q) < min_gap for q in chosen_pos):
            continue
        chosen.append(int(i))
        chosen_pos.append(p)
        if len(chosen) == k:
            break
    return np.asarray(chosen, dtype=np.int64)


def sample_latent_windows(
    latent: int, entries: LatentEntries, spec: WindowSpec, seed: int, n_firings: int | None = None
) -> LatentWindows:
    """Draw the top / iw / quantile / random windows of one latent (deterministic for ``seed``)."""
    pos_all, val_all = entries.pos[latent], entries.val[latent]
    tokens, special = entries.tokens, entries.special
    T = tokens.shape[1]
    rng = latent_rng(seed, "windows", latent)
    ok = _valid_centre(pos_all, T, spec)
    pos_c, val_c = pos_all[ok], val_all[ok]
    lw = LatentWindows(
        latent=latent,
        n_firings=int(n_firings if n_firings is not None else pos_all.size),
        max_act=float(val_all.max()) if val_all.size else 0.0,
    )
    if pos_c.size == 0:
        return lw
    mk = lambda c, kind, q=-1: _make_window(c, pos_all, val_all, tokens, special, spec, kind, q)  # noqa: E731
    top_idx = _top_no_overlap(pos_c, val_c, spec.n_top, T, spec.window_len)
    lw.top = [mk(pos_c[i], "top") for i in top_idx]
    # importance-weighted: below the smallest top activation, p ∝ act²
    thr = val_c[top_idx].min()
    below = np.flatnonzero(val_c < thr)
    if below.size and spec.n_iw:
        w = val_c[below].astype(np.float64) ** 2
        k = min(spec.n_iw, int((w > 0).sum()))
        pick = rng.choice(below, size=k, replace=False, p=w / w.sum()) if k else []
        lw.iw = [mk(pos_c[i], "iw") for i in pick]
    # quantiles of the activating positions (equal counts, lowest first)
    if spec.n_quantiles and spec.per_quantile:
        order = np.argsort(val_c, kind="stable")
        for q, grp in enumerate(np.array_split(order, spec.n_quantiles)):
            if grp.size == 0:
                continue
            pick = rng.choice(grp, size=min(spec.per_quantile, grp.size), replace=False)
            lw.quantile += [mk(pos_c[i], "quantile", q) for i in pick]
    lw.random = sample_random_windows(pos_all, tokens, special, spec, spec.n_random, rng)
    return lw


def sample_random_windows(
    pos: np.ndarray,
    tokens: np.ndarray,
    special: np.ndarray,
    spec: WindowSpec,
    n: int,
    rng: np.random.Generator,
    max_rounds: int = 8,
) -> list[Window]:
    """``n`` random windows (non-special centre, whole window in the prompt) in which the latent is 0 everywhere."""
    P, T = tokens.shape
    left, right = spec.offsets()
    if n == 0 or T < spec.window_len or P == 0:
        return []
    chosen: list[int] = []
    for _ in range(max_rounds):
        m = 4 * (n - len(chosen)) + 8
        c = rng.integers(0, P, m) * T + rng.integers(left, T - right, m)
        c = c[~special.reshape(-1)[c]]
        a = c - left
        hits = np.searchsorted(pos, a + spec.window_len) - np.searchsorted(pos, a)
        for x in c[hits == 0]:
            if int(x) not in chosen:
                chosen.append(int(x))
            if len(chosen) == n:
                break
        if len(chosen) == n:
            break
    empty = np.zeros(0, np.int64)
    return [_make_window(x, empty, np.zeros(0), tokens, special, spec, "random", is_random=True) for x in chosen]


def collect_windows(
    store: CodeStore,
    latents: Sequence[int],
    spec: WindowSpec,
    seed: int,
    counts: torch.Tensor | None = None,
    progress: bool = True,
) -> dict[int, LatentWindows]:
    """Windows of every latent in ``latents`` from ``store`` (two streaming passes at most)."""
    entries = gather_entries(store, latents, progress=progress)
    out = {}
    for l in tqdm(latents, desc="sample windows", disable=not progress, leave=False):
        n = int(counts[l]) if counts is not None else None
        out[int(l)] = sample_latent_windows(int(l), entries, spec, seed, n)
    return out


# --------------------------------------------------------------------------------------------------
# protocol splits


@dataclass
class Split:
    """Windows for one protocol: explanation windows, and scoring windows with truth labels."""

    explain: list[Window]
    score: list[Window]
    labels: list[bool]


def saebench_split(lw: LatentWindows, seed: int, n_top_explain: int = 10, n_iw_explain: int = 5) -> Split:
    """SAEBench: top and iw windows split at random into explanation (10 + 5) and scoring (the rest:
    2 + 2) sets; the scoring set adds the random negatives and is shuffled. Explanation windows are
    ordered by max activation, strongest first."""
    rng = latent_rng(seed, "saebench-split", lw.latent)
    tp = rng.permutation(len(lw.top))
    ip = rng.permutation(len(lw.iw))
    explain = [lw.top[i] for i in tp[:n_top_explain]] + [lw.iw[i] for i in ip[:n_iw_explain]]
    explain.sort(key=lambda w: -w.max_act)
    score = [lw.top[i] for i in tp[n_top_explain:]] + [lw.iw[i] for i in ip[n_iw_explain:]] + list(lw.random)
    perm = rng.permutation(len(score))
    score = [score[i] for i in perm]
    return Split(explain=explain, score=score, labels=[w.is_active for w in score])


def delphi_split(lw: LatentWindows, seed: int) -> Split:
    """delphi-style: from each quantile one window explains (strongest first) and the others are
    scored, mixed with the random negatives and shuffled."""
    rng = latent_rng(seed, "delphi-split", lw.latent)
    by_q: dict[int, list[Window]] = {}
    for w in lw.quantile:
        by_q.setdefault(w.quantile, []).append(w)
    explain, score = [], []
    for q in sorted(by_q):
        ws = by_q[q]
        j = int(rng.integers(len(ws)))
        explain.append(ws[j])
        score += [w for i, w in enumerate(ws) if i != j]
    explain.sort(key=lambda w: -w.max_act)
    score = score + list(lw.random)
    perm = rng.permutation(len(score))
    score = [score[i] for i in perm]
    return Split(explain=explain, score=score, labels=[w.is_active for w in score])


# --------------------------------------------------------------------------------------------------
# token text


class TokenText:
    """Token id → display string via a tokenizer (``decode([id])``), cached. Special tokens → ``""``."""

    def __init__(self, tokenizer: Any | Callable[[int], str]):
        self._tok = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        s = self._cache.get(token_id)
        if s is None:
            if callable(self._tok) and not hasattr(self._tok, "decode"):
                s = str(self._tok(token_id))
            else:
                s = self._tok.decode([int(token_id)], skip_special_tokens=False)
            self._cache[token_id] = s
        return s

    def window(self, w: Window) -> list[str]:
        return ["" if sp else self(t) for t, sp in zip(w.tokens, w.special)]
