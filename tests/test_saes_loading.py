"""Loading and saving SAEs: published layouts, safety, strict configs, round trips, specs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import assert_close_scaled

from tempolens.errors import ConfigError, SourceError, UnsafeCheckpointError
from tempolens.saes import (
    StandardConfig,
    StandardSAE,
    TemporalConfig,
    TemporalSAE,
    from_saelens,
    load_sae,
    read_checkpoint,
    save_standard_sae,
    save_temporal_sae,
)

torch.set_num_threads(1)


def random_temporal(tied=True, scale=0.25, layers=1, d_in=12, width=48, seed=0) -> TemporalSAE:
    sae = TemporalSAE(
        TemporalConfig(d_in=d_in, width=width, k=6, n_heads=4, n_attn_layers=layers, tied=tied, scaling_factor=scale)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in sae.named_parameters():
            scale_p = 1.0 / math.sqrt(p.shape[-1]) * 3 if p.dim() == 2 else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale_p)
    return sae.eval()


def reference_conf(sae: TemporalSAE, **sae_overrides) -> dict:
    """A conf.yaml in the reference code's layout: a full training config dump."""
    c = sae.cfg
    conf = {
        "llm": {"dimin": c.d_in, "model_hf_name": "google/gemma-2-2b", "layer": 12},
        "sae": {
            "exp_factor": c.width // c.d_in,
            "n_heads": c.n_heads,
            "sae_diff_type": c.sae_diff_type,
            "kval_topk": c.k,
            "tied_weights": c.tied,
            "n_attn_layers": c.n_attn_layers,
            "bottleneck_factor": c.bottleneck_factor,
            "scaling_factor": c.scaling_factor,
            "gamma_reg": 8,
        },
        "data": {"dtype": "bfloat16", "context_length": 500, "batch_size": 100},
        "optimizer": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.95},
        "deploy": True,
    }
    conf["sae"].update(sae_overrides)
    return conf


def write_conf(folder: Path, conf: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conf.yaml").write_text(yaml.safe_dump(conf))


def assert_same_sae(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].reshape(sb[k].shape), sb[k]), k
    assert a.cfg == b.cfg


X = torch.randn(2, 6, 12, generator=torch.Generator().manual_seed(7)) * 8


# -- the published .pt layout, with a real pickled OmegaConf config ---------------------------------------


@pytest.mark.parametrize("layout", ["under_sae", "top_level"])
def test_pt_with_pickled_omegaconf(tmp_path, layout):
    omegaconf = pytest.importorskip("omegaconf")
    sae = random_temporal(tied=False)
    conf = reference_conf(sae)
    folder = tmp_path / "temporal"
    write_conf(folder, conf)
    sd = {k: v.clone() for k, v in sae.state_dict().items()}
    sd["b"] = sd["b"].reshape(1, -1)  # the original code stores b as [1, d_in]
    cfg_obj = omegaconf.OmegaConf.create(conf)
    payload = {"sae": sd, "config": cfg_obj, "step": 20000} if layout == "under_sae" else {**sd, "cfg": cfg_obj}
    torch.save(payload, folder / "latest_ckpt.pt")
    assert any(
        g.startswith("omegaconf")
        for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(folder / "latest_ckpt.pt"))
    )

    loaded = load_sae(str(folder))
    assert isinstance(loaded, TemporalSAE)
    assert loaded.cfg.scaling_factor == 0.25 and not loaded.cfg.tied
    for k, v in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    a, b = loaded.encode(X), sae.encode(X)
    assert torch.equal(a.codes.indices, b.codes.indices) and torch.equal(a.recon, b.recon)
    assert loaded.cfg.metadata["llm"]["model_hf_name"] == "google/gemma-2-2b"

    # inert by default; the real config object only on explicit opt-in
    obj = read_checkpoint(folder / "latest_ckpt.pt")
    key = "config" if layout == "under_sae" else "cfg"
    assert not isinstance(obj[key], omegaconf.DictConfig)
    real = read_checkpoint(folder / "latest_ckpt.pt", allow_pickled_config=True)
    assert isinstance(real[key], omegaconf.DictConfig)


class _Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvalEvil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (eval, (self.cmd,))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pt_is_refused_and_not_run(tmp_path, legacy):
    sae = random_temporal()
    folder = tmp_path / "evil"
    write_conf(folder, reference_conf(sae))
    marker = tmp_path / "pwned"
    torch.save(
        {"sae": sae.state_dict(), "x": _Evil(f"touch {marker}")},
        folder / "latest_ckpt.pt",
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(UnsafeCheckpointError, match="execute code|weights only"):
        load_sae(str(folder))
    with pytest.raises(UnsafeCheckpointError):
        load_sae(str(folder), allow_pickled_config=True)
    assert not marker.exists()


def test_eval_in_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil.pt"
    torch.save({"x": _EvalEvil(f"open({str(marker)!r}, 'w')")}, path)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        read_checkpoint(path)
    assert not marker.exists()


# -- the canrager safetensors layout; SAELens's own converter agrees ----------------------------------------


def test_safetensors_layout_matches_saelens_loader(tmp_path, monkeypatch):
    loaders = pytest.importorskip("sae_lens.loading.pretrained_sae_loaders")
    from sae_lens.saes.temporal_sae import TemporalSAE as SLTemporal
    from sae_lens.saes.temporal_sae import TemporalSAEConfig

    sae = random_temporal(tied=True, scale=1 / 150, layers=2)
    folder = save_temporal_sae(sae, tmp_path / "gemma" / "layer_12" / "temporal")
    loaded = load_sae(str(folder))
    assert_same_sae(loaded, sae)
    # SAELens's canrager converter, pointed at our folder instead of the hub
    monkeypatch.setattr(loaders, "hf_hub_download", lambda repo_id, filename, **kw: str(tmp_path / "gemma" / filename))
    cfg_dict, state, _ = loaders.temporal_sae_huggingface_loader("local/repo", "layer_12/temporal")
    ref = SLTemporal(TemporalSAEConfig.from_dict(cfg_dict))
    ref.load_state_dict(state)
    x = X * 150
    with torch.no_grad():
        z_novel, z_pred = ref.encode_with_predictions(x)
        recon = ref(x)
    det = loaded.forward_details(x)
    assert_close_scaled(det.z_novel, z_novel, what="z_novel")
    assert_close_scaled(det.z_pred, z_pred, what="z_pred")
    assert_close_scaled(det.recon, recon, what="recon")


@pytest.mark.parametrize("tied", [True, False])
def test_temporal_round_trip_bit_exact(tmp_path, tied):
    sae = random_temporal(tied=tied, scale=0.0066666666667)
    folder = save_temporal_sae(sae, tmp_path / "t", metadata={"model_id": "tiny", "layer": 2})
    again = load_sae(folder)
    assert_same_sae(again, sae)
    assert again.cfg.metadata["model_id"] == "tiny"
    json.dumps(again.describe())
    folder2 = save_temporal_sae(again, tmp_path / "t2")
    assert (folder / "latest_ckpt.safetensors").read_bytes() == (folder2 / "latest_ckpt.safetensors").read_bytes()
    # fp16 storage: loads back to exactly the fp16 values
    half = load_sae(save_temporal_sae(sae, tmp_path / "h", dtype=torch.float16), dtype=torch.float16)
    assert half.D.dtype == torch.float16 and torch.equal(half.D, sae.D.half())


def test_exp_factor_round_trip_non_integer(tmp_path):
    sae = TemporalSAE(TemporalConfig(d_in=12, width=64, k=4, n_heads=4))
    again = load_sae(save_temporal_sae(sae, tmp_path / "x"))
    assert again.width == 64


# -- strict conf.yaml and weight checks ------------------------------------------------------------------------


def _folder_with(tmp_path, conf, sd=None, name="c"):
    folder = tmp_path / name
    write_conf(folder, conf)
    from safetensors.torch import save_file

    save_file(sd if sd is not None else random_temporal().state_dict(), folder / "latest_ckpt.safetensors")
    return folder


def test_conf_missing_field(tmp_path):
    conf = reference_conf(random_temporal())
    del conf["sae"]["n_heads"]
    with pytest.raises(ConfigError, match=r"conf\.yaml: missing field sae\.n_heads"):
        load_sae(_folder_with(tmp_path, conf))


def test_conf_unknown_field(tmp_path, capsys):
    conf = reference_conf(random_temporal(), mystery_knob=3)
    conf["sae"]["sae_type"] = "temporal"
    folder = _folder_with(tmp_path, conf)
    with pytest.raises(ConfigError, match=r"unknown field sae\.mystery_knob; strict mode refuses"):
        load_sae(folder, strict_config=True)
    loaded = load_sae(folder)  # the default: ignored, recorded, noted once on stderr
    assert isinstance(loaded, TemporalSAE)
    assert loaded.cfg.metadata["conf_ignored"]["sae.mystery_knob"] == 3
    assert loaded.cfg.metadata["conf_ignored"]["sae.gamma_reg"] == 8
    assert loaded.cfg.metadata["conf_ignored"]["optimizer"]["beta2"] == 0.95
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "sae.mystery_knob" in err and "gamma_reg" not in err
    load_sae(folder)
    assert capsys.readouterr().err == ""  # once per file and process
    # the research configs' own keys are known: strict mode loads them
    assert isinstance(
        load_sae(_folder_with(tmp_path, reference_conf(random_temporal()), name="d"), strict_config=True), TemporalSAE
    )


@pytest.mark.parametrize("value", ["temporal", "Temporal", "TEMPORAL", "temporal_sae", "TemporalSAE", " temporal "])
def test_sae_type_names_the_temporal_architecture(tmp_path, value):
    loaded = load_sae(_folder_with(tmp_path, reference_conf(random_temporal(), sae_type=value)), strict_config=True)
    assert loaded.cfg.metadata["sae_type"] == value


@pytest.mark.parametrize("value", ["topk", "relu", "standard", "temporalx", 1, None])
def test_other_sae_type_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"sae\.sae_type is .*not a Temporal SAE"):
        load_sae(_folder_with(tmp_path, reference_conf(random_temporal(), sae_type=value)))


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"tied_weights": "yes"}, r"sae\.tied_weights must be true or false"),
        ({"n_heads": 2.5}, r"sae\.n_heads must be an integer"),
        ({"kval_topk": None}, r"sae\.kval_topk must be an integer"),
        ({"sae_diff_type": "nullify"}, r"sae\.sae_diff_type must be topk or relu"),
        ({"scaling_factor": -1}, r"sae\.scaling_factor must be a positive number"),
        ({"use_pos_encoding": True}, r"use_pos_encoding"),
    ],
)
def test_conf_wrong_types(tmp_path, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_sae(_folder_with(tmp_path, reference_conf(random_temporal(), **override)))


def test_conf_not_yaml_and_python_tags(tmp_path):
    folder = _folder_with(tmp_path, reference_conf(random_temporal()))
    (folder / "conf.yaml").write_text("sae: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sae(folder)
    (folder / "conf.yaml").write_text("llm: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sae(folder)


def test_dimension_mismatch(tmp_path):
    conf = reference_conf(random_temporal())
    conf["llm"]["dimin"] = 16
    with pytest.raises(SourceError, match=r"D has shape \[48, 12\] but .* implies \[64, 16\]"):
        load_sae(_folder_with(tmp_path, conf, name="a"))
    conf = reference_conf(random_temporal(), tied_weights=False)
    with pytest.raises(SourceError, match="missing E"):
        load_sae(_folder_with(tmp_path, conf, name="b"))
    conf = reference_conf(random_temporal(), n_attn_layers=2)
    with pytest.raises(SourceError, match=r"missing attn_layers\.1"):
        load_sae(_folder_with(tmp_path, conf, name="c"))


def test_truncated_files(tmp_path):
    folder = _folder_with(tmp_path, reference_conf(random_temporal()))
    data = (folder / "latest_ckpt.safetensors").read_bytes()
    (folder / "latest_ckpt.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cannot read"):
        load_sae(folder)
    pt_folder = tmp_path / "pt"
    write_conf(pt_folder, reference_conf(random_temporal()))
    (pt_folder / "latest_ckpt.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SourceError, match="cannot read"):
        load_sae(pt_folder)


# -- SAELens layout ------------------------------------------------------------------------------------------


def random_standard(arch="topk", **kw) -> StandardSAE:
    has_thr = arch == "jumprelu" or kw.get("has_threshold", False)
    kw.pop("has_threshold", None)
    sae = StandardSAE(
        StandardConfig(
            arch, d_in=12, width=40, k=5 if arch in ("topk", "batchtopk") else None, has_threshold=has_thr, **kw
        )
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 1 / math.sqrt(12)))
        if has_thr:
            sae.threshold.abs_()
    return sae.eval()


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_standard_round_trip_and_saelens_reads_it(tmp_path, arch):
    sae_lens = pytest.importorskip("sae_lens")
    sae = random_standard(arch)
    folder = save_standard_sae(sae, tmp_path / arch, metadata={"hook_name": "blocks.3.hook_resid_post"})
    again = load_sae(folder)
    assert_same_sae(again, sae)
    assert again.cfg.metadata["hook_name"] == "blocks.3.hook_resid_post"
    json.dumps(again.describe())
    ref = sae_lens.SAE.load_from_disk(str(folder))
    assert ref.cfg.architecture() == {"relu": "standard"}.get(arch, arch)
    with torch.no_grad():
        acts = ref.encode(X)
        recon = ref(X)
    out = again.encode(X)
    assert_close_scaled(out.codes.to_dense(40), acts, what="codes")
    assert_close_scaled(out.recon, recon, what="recon")


def test_batchtopk_round_trip(tmp_path):
    sae = random_standard("batchtopk", has_threshold=True)
    again = load_sae(save_standard_sae(sae, tmp_path / "b"))
    assert again.cfg.architecture == "batchtopk" and again.cfg.uses_threshold and again.k is None
    assert_same_sae(again, sae)
    plain = random_standard("batchtopk")
    again = load_sae(save_standard_sae(plain, tmp_path / "c"))
    assert again.cfg.architecture == "batchtopk" and again.k == 5


def test_saelens_rescaled_decoder_is_folded(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = random_standard("topk", rescale_acts_by_decoder_norm=True)
    folder = save_standard_sae(sae, tmp_path / "r")
    ref = sae_lens.SAE.load_from_disk(str(folder))
    loaded = load_sae(folder)
    assert not loaded.cfg.rescale_acts_by_decoder_norm
    torch.testing.assert_close(loaded.W_dec.norm(dim=-1), torch.ones(40))
    with torch.no_grad():
        assert_close_scaled(loaded.encode(X).codes.to_dense(40), ref.encode(X), what="codes")


def test_saelens_cfg_errors(tmp_path):
    sae = random_standard("topk")
    folder = save_standard_sae(sae, tmp_path / "e")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SourceError, match="architecture 'gated' is not supported"):
        load_sae(folder)
    cfg["architecture"] = "topk"
    cfg["d_in"] = 13
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SourceError, match=r"W_enc has shape \[12, 40\] but"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_sae(folder)


def test_from_saelens_objects():
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.temporal_sae import TemporalSAE as SLTemporal
    from sae_lens.saes.temporal_sae import TemporalSAEConfig

    cfg = TemporalSAEConfig(
        d_in=12,
        d_sae=48,
        n_heads=4,
        n_attn_layers=1,
        bottleneck_factor=2,
        sae_diff_type="topk",
        kval_topk=5,
        tied_weights=True,
        normalize_activations="constant_scalar_rescale",
        activation_normalization_factor=0.5,
        apply_b_dec_to_input=True,
    )
    ref = SLTemporal(cfg).eval()
    ours = from_saelens(ref)
    assert isinstance(ours, TemporalSAE) and ours.cfg.scaling_factor == 0.5 and ours.cfg.bottleneck_factor == 2
    with torch.no_grad():
        z_novel, _ = ref.encode_with_predictions(X)
        assert_close_scaled(ours.encode(X).codes.to_dense(48), z_novel, what="codes")
        assert_close_scaled(ours.encode(X).recon, ref(X), what="recon")
    topk = sae_lens.SAE.from_dict(
        {"architecture": "topk", "d_in": 12, "d_sae": 40, "k": 4, "dtype": "float32", "device": "cpu"}
    )
    conv = from_saelens(topk)
    assert isinstance(conv, StandardSAE) and conv.k == 4
    with torch.no_grad():
        torch.testing.assert_close(conv.encode(X).codes.to_dense(40), topk.encode(X))


# -- specs ---------------------------------------------------------------------------------------------------------


def test_hf_spec_offline(tmp_path, monkeypatch):
    from fixtures import hub_snapshot

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SourceError, match="not in the local Hugging Face cache"):
        load_sae("hf://someone/temporalSAEs/gemma/layer_12/temporal")
    # a cached snapshot loads without the network
    sae = random_temporal()
    save_temporal_sae(sae, hub_snapshot(tmp_path / "hub", "someone/temporalSAEs") / "gemma" / "layer_12" / "temporal")
    loaded = load_sae("hf://someone/temporalSAEs/gemma/layer_12/temporal")
    assert_same_sae(loaded, sae)
    # offline, a folder the cache lacks is not downloaded — not absent from the repository
    with pytest.raises(SourceError, match=r"nothing/here/conf\.yaml of the repo someone/temporalSAEs is missing") as e:
        load_sae("hf://someone/temporalSAEs/nothing/here")
    assert "no folder" not in str(e.value)
    with pytest.raises(ConfigError, match="bad hub spec"):
        load_sae("hf://justone")


def test_saelens_spec_errors():
    pytest.importorskip("sae_lens")
    with pytest.raises(SourceError, match="SAELens could not load"):
        load_sae("saelens://no-such-release-xyz/blocks.0.hook_resid_post")
    with pytest.raises(ConfigError, match="saelens://<release>/<sae_id>"):
        load_sae("saelens://only-release")


def test_embedded_spec(tmp_path, monkeypatch):
    embedded = pytest.importorskip("tempolens.sources.embedded")
    sae = random_temporal()
    save_temporal_sae(sae, tmp_path / "temporal")
    save_standard_sae(random_standard("topk"), tmp_path / "topk")
    monkeypatch.setattr(embedded, "embedded_sae_path", lambda kind="temporal": tmp_path / kind)
    assert isinstance(load_sae("embedded"), TemporalSAE)
    assert isinstance(load_sae("embedded:temporal"), TemporalSAE)
    assert isinstance(load_sae("embedded:topk"), StandardSAE)
    with pytest.raises(ConfigError, match="unknown embedded SAE"):
        load_sae("embedded:relu")


def test_bad_specs(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        load_sae(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no SAE"):
        load_sae(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown SAE spec scheme"):
        load_sae("s3://bucket/sae")


def test_file_inside_folder_and_device_dtype(tmp_path):
    sae = random_temporal()
    folder = save_temporal_sae(sae, tmp_path / "t")
    loaded = load_sae(str(folder / "conf.yaml"), dtype=torch.float64)
    assert loaded.D.dtype == torch.float64 and not loaded.training


def test_scaling_factor_location(tmp_path):
    conf = reference_conf(random_temporal(scale=0.5))
    del conf["sae"]["scaling_factor"]
    with pytest.raises(ConfigError, match=r"missing field sae\.scaling_factor"):
        load_sae(_folder_with(tmp_path, conf, name="a"))
    conf["data"]["scaling_factor"] = 0.5
    assert load_sae(_folder_with(tmp_path, conf, name="b")).cfg.scaling_factor == 0.5
    conf["data"]["scaling_factor"] = "1e-3"  # PyYAML reads exponents without a dot as strings
    assert load_sae(_folder_with(tmp_path, conf, name="c")).cfg.scaling_factor == 1e-3


def test_unlisted_omegaconf_class_is_inert_by_default(tmp_path):
    """A pickle naming an omegaconf class outside the list loads inertly, but not as a real object."""

    class Fake:  # pickles under a made-up omegaconf name
        pass

    Fake.__module__, Fake.__qualname__ = "omegaconf.nodes", "EnumNode"
    import sys
    import types

    mod = types.ModuleType("omegaconf.nodes")
    mod.EnumNode = Fake
    sae = random_temporal()
    path = tmp_path / "x.pt"
    saved = sys.modules.get("omegaconf.nodes")
    sys.modules["omegaconf.nodes"] = mod
    try:
        torch.save({"sae": sae.state_dict(), "cfg": Fake()}, path)
    finally:
        if saved is not None:
            sys.modules["omegaconf.nodes"] = saved
        else:
            del sys.modules["omegaconf.nodes"]
    obj = read_checkpoint(path)
    assert set(obj) == {"sae", "cfg"} and torch.equal(obj["sae"]["D"], sae.D)
    with pytest.raises(UnsafeCheckpointError, match="omegaconf.nodes.EnumNode"):
        read_checkpoint(path, allow_pickled_config=True)


def test_saelens_missing_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sae_lens", None)  # import sae_lens → ImportError
    with pytest.raises(SourceError, match=r"need sae-lens"):
        load_sae("saelens://gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82")


def test_jumprelu_log_threshold(tmp_path):
    from safetensors.torch import load_file, save_file

    sae = random_standard("jumprelu")
    folder = save_standard_sae(sae, tmp_path / "j")
    weights = load_file(folder / "sae_weights.safetensors")
    weights["log_threshold"] = weights.pop("threshold").log()
    save_file(weights, folder / "sae_weights.safetensors")
    loaded = load_sae(folder)
    torch.testing.assert_close(loaded.threshold, sae.threshold)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw"])
def test_pickle_refusal_names_the_refused_global_in_every_format(tmp_path, fmt):
    """zip (torch.save), legacy (_use_new_zipfile_serialization=False) and a raw pickle: each refusal names
    the dangerous call in one line, and nothing runs."""
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"w": torch.zeros(2), "x": _Evil(f"touch {marker}")}
    if fmt == "raw":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(UnsafeCheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    name = f"{os.system.__module__}.system"  # posix.system on Linux
    assert name in msg and "would execute code" in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_pickle_globals_reads_opcodes_without_running_anything():
    import pickle

    from tempolens.saes.loading import pickle_globals

    for proto in (0, 2, 4):
        assert f"{os.system.__module__}.system" in pickle_globals(pickle.dumps(_Evil("true"), protocol=proto)), proto
        assert "builtins.eval" in pickle_globals(pickle.dumps(_EvalEvil("1"), protocol=proto)), proto
    assert pickle_globals(b"\x00\x01 not a pickle") == []
