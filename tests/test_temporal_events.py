"""Event texts, labels and block-structure statistics on synthetic kernels with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from tempolens.temporal.events import (
    EventTextError,
    auroc,
    block_contrast,
    boundary_auroc,
    boundary_positions,
    event_labels,
    foote_novelty,
    load_demo_texts,
    parse_marked,
    score_kernel,
    summarize,
)


def block_kernel(sizes, within=1.0, across=0.0):
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    same = labels[:, None] == labels[None, :]
    S = torch.where(same, torch.tensor(within), torch.tensor(across))
    S.fill_diagonal_(1.0)
    return S, labels


def test_parse_marked_and_labels():
    clean, bounds = parse_marked("Hi there.  ||  The end. ||Bye")
    assert clean == "Hi there. The end. Bye"
    assert bounds == [10, 19] and clean[10] == "T" and clean[19] == "B"
    # BOS, "Hi", " there", ".", " The", " end", ".", " Bye"
    offsets = [(0, 0), (0, 2), (2, 8), (8, 9), (9, 13), (13, 17), (17, 18), (18, 22)]
    labels = event_labels(offsets, bounds)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert boundary_positions(labels).tolist() == [4, 7]
    with pytest.raises(EventTextError):
        parse_marked("a || || b")
    with pytest.raises(EventTextError):
        parse_marked("|| a")


def test_demo_texts_are_multi_event_stories():
    texts = load_demo_texts()
    assert 6 <= len(texts) <= 10
    for t in texts:
        assert 3 <= t.n_events <= 5
        assert "||" not in t.text
        assert all(t.text[b - 1] == " " and t.text[b].isupper() for b in t.boundaries)
        assert 130 <= len(t.text.split()) <= 300


def test_block_contrast_hand_values():
    S, labels = block_kernel([4, 4, 4])
    assert block_contrast(S, labels) == pytest.approx(1.0)
    S, labels = block_kernel([3, 5], within=0.7, across=0.2)
    assert block_contrast(S, labels) == pytest.approx(0.5)
    sc = score_kernel(S, labels, half_width=2)
    assert sc.within_mean == pytest.approx(0.7) and sc.across_mean == pytest.approx(0.2)
    # a kernel that ignores the events
    S = torch.full((8, 8), 0.3)
    S.fill_diagonal_(1.0)
    assert block_contrast(S, labels) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(block_contrast(torch.eye(3), torch.zeros(3, dtype=torch.long)))


def test_foote_novelty_hand_values_and_perfect_auroc():
    S, labels = block_kernel([4, 4, 4])
    nov = foote_novelty(S, 2)
    assert torch.isnan(nov[:2]).all() and torch.isnan(nov[11:]).all()
    # at a boundary: both windows pure (1), across 0 -> 1
    assert nov[4].item() == pytest.approx(1.0) and nov[8].item() == pytest.approx(1.0)
    # t=3: A=[1,3) pure, B=[3,5) split (its only off-diagonal pair is across: 0), A×B half 1 -> 0.5(1+0)-0.5 = 0
    assert nov[3].item() == pytest.approx(0.0)
    # inside an event: 0.5(1+1)-1 = 0
    assert nov[2].item() == pytest.approx(0.0)
    # t=5: A=[3,5) split -> 0, B=[5,7) pure -> 1, A×B = {S[3,5],S[3,6],S[4,5],S[4,6]} = {0,0,1,1} -> 0.5 -> 0
    assert nov[5].item() == pytest.approx(0.0)
    assert boundary_auroc(S, labels, half_width=2) == pytest.approx(1.0)


def test_auroc_formula_and_chance():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.25)
    g = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(20):
        x = torch.randn(120, 16, generator=g)
        x = x / x.norm(dim=-1, keepdim=True)
        S = x @ x.T
        labels = torch.arange(120) // 30
        vals.append(boundary_auroc(S, labels, half_width=6))
    assert abs(sum(vals) / len(vals) - 0.5) < 0.15


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert summarize([])["mean"] is None


def test_sentence_starts_and_matched_auroc():
    from tempolens.temporal.events import sentence_starts, tokens_at_chars

    text = 'He ran. She sat! "Why?" he asked. 3 cats. ok. Mr. X'
    starts = sentence_starts(text)
    assert [text[c] for c in starts] == [
        "S",
        '"',
        "3",
        "M",
        "X",
    ]  # "he asked" and "ok" are lower case; "Mr." is a known false start
    offsets = [(0, 0), (0, 2), (2, 6), (6, 7), (7, 11), (11, 15)]  # BOS, He, " ran", ".", " She", " sat"
    assert tokens_at_chars(offsets, [8]) == [4]
    # a kernel with blocks at sentences: boundaries look like any sentence start
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    sent = torch.arange(30) // 5
    S = (sent[:, None] == sent[None, :]).float()
    # scored t in [3, 27]: 2 boundaries vs 23 others, 3 of which (5, 15, 25) tie with them
    assert boundary_auroc(S, labels, half_width=3) == pytest.approx(21.5 / 23)
    assert boundary_auroc(S, labels, half_width=3, candidates=[5, 15, 25]) == pytest.approx(0.5)
    # a kernel with blocks at events separates boundaries from other sentence starts
    E = (labels[:, None] == labels[None, :]).float()
    assert boundary_auroc(E, labels, half_width=3, candidates=[5, 15, 25]) == pytest.approx(1.0)
    sc = score_kernel(E, labels, half_width=3, sentence_tokens=[5, 10, 15, 20, 25])
    assert sc.boundary_auroc_sentences == pytest.approx(1.0)


def test_pooled_auroc_uses_within_text_z_scores():
    from tempolens.temporal.events import novelty_samples, pooled_auroc

    S, labels = block_kernel([5, 5, 5])
    pos, neg = novelty_samples(S, labels, 2)
    assert pos.numel() == 2 and neg.numel() == 10  # scored t in [2, 13]
    # a second text whose kernel is the same up to scale: z-scores make it pool identically
    pos2, neg2 = novelty_samples(0.5 * S, labels, 2)
    assert torch.allclose(pos, pos2) and torch.allclose(neg, neg2)
    au, n_pos, n_neg = pooled_auroc([(pos, neg), (pos2, neg2)])
    assert au == 1.0 and (n_pos, n_neg) == (4, 20)
    pos3, neg3 = novelty_samples(S, labels, 2, candidates=[5])
    assert neg3.numel() == 0


def test_bootstrap_ci_brackets_the_pooled_value():
    from tempolens.temporal.events import bootstrap_auroc_ci, pooled_auroc

    g = torch.Generator().manual_seed(0)
    samples = [(torch.randn(3, generator=g) + 1.0, torch.randn(20, generator=g)) for _ in range(8)]
    lo, hi = bootstrap_auroc_ci(samples, n_boot=300)
    au = pooled_auroc(samples)[0]
    assert lo <= au <= hi and 0.5 < au
    assert bootstrap_auroc_ci(samples, n_boot=300) == (lo, hi)  # deterministic for a seed
    assert all(math.isnan(x) for x in bootstrap_auroc_ci(samples[:1]))
