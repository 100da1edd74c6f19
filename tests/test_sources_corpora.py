"""Corpus readers and the deterministic prompt builder (tiny real tokenizer, no network)."""

from __future__ import annotations

import json

import pytest
import torch

from tempolens.errors import SourceError
from tempolens.sources.corpora import (
    build_prompts,
    iter_documents,
    parse_hf_spec,
    seeded_shuffle,
)


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_lm_dir))


WORDS = "the cat sat on the mat and the dog ran fast to the river".split()


def _docs(n: int, length: int = 7) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(length + i % 5)) for i in range(n)]


def _reference(tok, docs, n, T, seed, add_bos=True):
    """Brute force: shuffle all, tokenize all, join with EOS, chunk."""
    order = [i for i, _ in seeded_shuffle(docs, seed)]
    stream, owner = [], []
    for i in order:
        ids = tok(docs[i], add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        if stream:
            stream.append(tok.eos_token_id)
            owner.append(-1)
        stream += ids
        owner += [i] * len(ids)
    body = T - 1 if add_bos else T
    rows, rows_doc = [], []
    for p in range(n):
        chunk = stream[p * body : (p + 1) * body]
        d = owner[p * body : (p + 1) * body]
        rows.append(([tok.bos_token_id] if add_bos else []) + chunk)
        rows_doc.append(([-1] if add_bos else []) + d)
    return torch.tensor(rows), torch.tensor(rows_doc)


def test_prompts_match_brute_force(tok):
    docs = _docs(40)
    p = build_prompts(tok, docs, n_prompts=6, prompt_len=16, seed=3, corpus_name="toy")
    ref_tokens, ref_docs = _reference(tok, docs, 6, 16, 3)
    assert p.tokens.shape == (6, 16) and p.tokens.dtype == torch.int64
    assert p.special.dtype == torch.bool and p.doc_ids.shape == (6, 16)
    torch.testing.assert_close(p.tokens, ref_tokens)
    torch.testing.assert_close(p.doc_ids, ref_docs)
    assert (p.tokens[:, 0] == tok.bos_token_id).all()
    # special = BOS at 0 and the EOS joins, nothing else
    expected_special = (ref_tokens == tok.bos_token_id) | (ref_tokens == tok.eos_token_id)
    torch.testing.assert_close(p.special, expected_special)
    assert p.special[:, 1:].any(), "short documents share prompts, so EOS joins appear"
    assert (p.doc_ids[p.special] == -1).all() and (p.doc_ids[~p.special] >= 0).all()
    assert p.n_counted_tokens == int((~expected_special).sum())
    assert "seed 3" in p.policy and "EOS" in p.policy


def test_prompts_deterministic_and_seed_dependent(tok):
    docs = _docs(60)
    a = build_prompts(tok, docs, 5, 12, seed=7)
    b = build_prompts(tok, iter(docs), 5, 12, seed=7)  # a generator gives the same prompts as a list
    c = build_prompts(tok, docs, 5, 12, seed=8)
    torch.testing.assert_close(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_prompts_without_bos(tok):
    docs = _docs(20)
    p = build_prompts(tok, docs, 3, 10, seed=0, add_bos=False)
    ref, _ = _reference(tok, docs, 3, 10, 0, add_bos=False)
    torch.testing.assert_close(p.tokens, ref)


def test_prompts_stop_reading_early(tok):
    consumed = []

    def gen():
        for i in range(100_000):
            consumed.append(i)
            yield "the cat sat on the mat " * 20

    calls = []

    class CountingTok:
        bos_token_id, eos_token_id, pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id

        def __call__(self, texts, **kw):
            calls.append(len(texts))
            return tok(texts, **kw)

    p = build_prompts(CountingTok(), gen(), 4, 32, seed=0, shuffle_buffer=50)
    assert p.tokens.shape == (4, 32)
    assert sum(calls) <= 32  # 4×31 tokens need ≈2 documents of 120 tokens: at most two small batches
    assert len(consumed) < 200  # buffer of 50 plus the few documents drawn


def test_too_small_corpus_error_has_the_count(tok):
    docs = ["the cat sat on the mat"] * 5  # 6 tokens each: 5*6 + 4 EOS = 34 tokens → 3 prompts of 10
    with pytest.raises(SourceError, match=r"corpus toy gives only 3 prompts of 11 tokens.*--n-prompts"):
        build_prompts(tok, docs, 10, 11, corpus_name="toy")


def test_empty_corpus(tok):
    with pytest.raises(SourceError, match="empty"):
        build_prompts(tok, [], 2, 8)
    with pytest.raises(SourceError, match="empty"):
        build_prompts(tok, ["", "   \n"], 2, 8)


def test_odd_unicode_and_control_chars(tok):
    docs = ["the \x00cat\x07 \ud800 sat \u202e\u2028 on\tthe\r\nmat " * 5, "\U0001f600 dog \x1b[31m ran " * 5]
    p = build_prompts(tok, docs, 2, 8, seed=1)
    assert p.tokens.shape == (2, 8)


def test_special_token_text_stays_text(tok):
    # "<eos>" typed in a document must not become the EOS control token
    p = build_prompts(tok, ["the <eos> cat <bos> sat " * 10], 2, 8)
    assert not (p.tokens[:, 1:] == tok.bos_token_id).any()
    assert not (p.tokens == tok.eos_token_id).any()


def test_seeded_shuffle_is_a_permutation():
    out = [i for i, _ in seeded_shuffle(range(100), seed=1, buffer_size=10)]
    assert sorted(out) == list(range(100)) and out != list(range(100))
    small = [i for i, _ in seeded_shuffle(range(8), seed=1, buffer_size=100)]
    assert sorted(small) == list(range(8))


# ---------------------------------------------------------------------------- readers


def test_txt_paragraphs(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("First para\nline two.\n\n\n  \nSecond para.\r\n\r\nThird.\n", encoding="utf-8")
    assert list(iter_documents(f)) == ["First para\nline two.", "Second para.", "Third."]


def test_txt_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("doc b\n\nstill b")
    (tmp_path / "sub" / "a.txt").write_text("doc a")
    (tmp_path / "ignore.md").write_text("nope")
    assert list(iter_documents(tmp_path)) == ["doc b\n\nstill b", "doc a"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no .txt files"):
        list(iter_documents(empty))


def test_jsonl(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "one", "body": "x"}) + "\n\n" + json.dumps({"text": "two", "body": "y"}) + "\n")
    assert list(iter_documents(f)) == ["one", "two"]
    assert list(iter_documents(f"{f}:body")) == ["x", "y"]
    assert list(iter_documents(f, text_field="body")) == ["x", "y"]
    with pytest.raises(SourceError, match="no field 'content'"):
        list(iter_documents(f"{f}:content"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(SourceError, match="line 2"):
        list(iter_documents(bad))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["alpha", None, "beta"], "other": ["x", "y", "z"]}), f)
    assert list(iter_documents(f)) == ["alpha", "beta"]
    assert list(iter_documents(f"{f}:other")) == ["x", "y", "z"]
    with pytest.raises(SourceError, match="no column 'nope'"):
        list(iter_documents(f"{f}:nope"))


def test_unknown_and_missing(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        list(iter_documents(tmp_path / "missing.txt"))
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_documents(tmp_path / "missing.jsonl"))
    odd = tmp_path / "x.bin"
    odd.write_bytes(b"\x00")
    with pytest.raises(SourceError, match="format"):
        list(iter_documents(odd))
    with pytest.raises(SourceError, match="unknown embedded corpus"):
        list(iter_documents("embedded:moby"))


def test_parse_hf_spec():
    assert parse_hf_spec("hf:wikitext:train") == ("wikitext", None, "train", "text")
    assert parse_hf_spec("hf:wikitext:wikitext-2-raw-v1:train") == ("wikitext", "wikitext-2-raw-v1", "train", "text")
    assert parse_hf_spec("hf:user/ds:train:content") == ("user/ds", None, "train", "content")
    assert parse_hf_spec("hf:user/ds::test:body") == ("user/ds", None, "test", "body")
    assert parse_hf_spec("hf:a:cfg:validation:body") == ("a", "cfg", "validation", "body")
    for bad in ("hf:", "hf:name", "hf:a:b:c:d:e"):
        with pytest.raises(SourceError, match="bad dataset spec"):
            parse_hf_spec(bad)


def test_hf_datasets_local_folder(tmp_path, tok):
    pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "myds"
    (folder / "data").mkdir(parents=True)
    texts = [f"the cat sat on the mat {i}" for i in range(30)]
    pq.write_table(pa.table({"body": texts, "n": list(range(30))}), folder / "data" / "train-00000-of-00001.parquet")
    got = list(iter_documents(f"hf:{folder}:train:body"))
    assert got == texts
    with pytest.raises(SourceError, match="no column 'text'"):
        list(iter_documents(f"hf:{folder}:train"))
    with pytest.raises(SourceError, match="cannot open dataset"):
        list(iter_documents(f"hf:{tmp_path / 'nothing-here'}:train"))
    p = build_prompts(tok, iter_documents(f"hf:{folder}:train:body"), 3, 8, seed=0)
    assert p.tokens.shape == (3, 8)


def test_gzipped_inputs(tmp_path):
    import gzip

    j = tmp_path / "d.jsonl.gz"
    with gzip.open(j, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    assert list(iter_documents(j)) == ["one", "two"]
    t = tmp_path / "p.txt.gz"
    with gzip.open(t, "wt", encoding="utf-8") as fh:
        fh.write("para one\n\npara two\n")
    assert list(iter_documents(t)) == ["para one", "para two"]
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.txt.gz").write_bytes(gzip.compress(b"doc a"))
    (d / "b.txt").write_text("doc b")
    assert list(iter_documents(d)) == ["doc a", "doc b"]
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(j.read_bytes()[:-12])
    with pytest.raises(SourceError, match="cannot read"):
        list(iter_documents(cut))


def test_corpus_name_comes_from_the_stream(tok, tmp_path):
    f = tmp_path / "small.txt"
    f.write_text("the cat sat\n\nthe dog ran\n")
    docs = iter_documents(f)
    assert docs.name == str(f)
    with pytest.raises(SourceError, match=r"corpus .*small\.txt gives only 0 prompts of 64 tokens"):
        build_prompts(tok, docs, 3, 64)
    p = build_prompts(tok, iter_documents(f), 1, 4)
    assert p.corpus == str(f)
