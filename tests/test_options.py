"""Options defined once as dataclass fields drive both the CLI and the Python API."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tempolens.errors import ConfigError
from tempolens.options import add_options, check, field_docs, options_from_args


@dataclass
class Inner:
    seed: int = 0
    """Seed shared with the parent."""
    out: Path = Path("x")
    """Set by the parent."""
    mode: Literal["a", "b"] = "a"
    """A choice."""


@dataclass
class Outer:
    NESTED_DERIVED = {"inner": ["out"]}
    run_dir: Path = Path("runs/r")
    """Where the run goes."""
    verbose: bool = False
    """Say more."""
    names: tuple[str, ...] = ()
    """Several names."""
    limit: int | None = None
    """An optional limit."""
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        check(self.limit is None or self.limit > 0, "--limit must be > 0")
        self.inner.out = self.run_dir / "inner"


def _parse(argv):
    p = argparse.ArgumentParser()
    add_options(p, Outer)
    return p, options_from_args(Outer, p.parse_args(argv))


def test_docs_become_help():
    assert field_docs(Outer)["run_dir"] == "Where the run goes."
    p, _ = _parse([])
    text = p.format_help()
    assert "Where the run goes." in text and "--no-verbose" in text and "{a,b}" in text
    assert "--out" not in text  # derived by the parent


def test_defaults_and_overrides():
    _, cfg = _parse([])
    assert cfg == Outer()
    _, cfg = _parse(["--run-dir", "r2", "--verbose", "--names", "x", "y", "--limit", "3", "--seed", "7", "--mode", "b"])
    assert cfg.run_dir == Path("r2") and cfg.verbose and cfg.names == ("x", "y") and cfg.limit == 3
    assert cfg.inner.seed == 7 and cfg.inner.mode == "b" and cfg.inner.out == Path("r2/inner")


def test_validation_errors_are_config_errors():
    with pytest.raises(ConfigError, match="--limit"):
        _parse(["--limit", "0"])


def test_bad_choice_is_argparse_error():
    with pytest.raises(SystemExit):
        _parse(["--mode", "c"])


def test_source_options_are_defined_once_with_one_default_rule():
    """Every command config inherits its source options from tempolens.sources.options: one docstring
    (its --help), one default (device and dtype `auto`), one validation."""
    from tempolens.collect import CollectConfig
    from tempolens.dashboards.pipeline import DashboardConfig
    from tempolens.serve import ServeConfig
    from tempolens.sources.options import DeviceOptions, ModelOptions, SAELoadOptions, SourceOptions
    from tempolens.temporal.command import EventsConfig, KernelConfig
    from tempolens.train.trainer import TrainConfig

    for cls in (CollectConfig, KernelConfig, EventsConfig, ServeConfig):
        assert issubclass(cls, SourceOptions)
        cfg = cls()
        assert (cfg.device, cfg.dtype, cfg.model, cfg.layer) == ("auto", "auto", "embedded", 12)
        assert field_docs(cls)["sae_strict"] == field_docs(SAELoadOptions)["sae_strict"]
        with pytest.raises(ConfigError, match="--layer must be >= 0"):
            cls(layer=-1)
    assert issubclass(TrainConfig, ModelOptions) and TrainConfig().device == "auto"
    assert issubclass(DashboardConfig, DeviceOptions) and issubclass(DashboardConfig, SAELoadOptions)
    assert DashboardConfig().device == "auto"
    with pytest.raises(ConfigError, match="--dtype"):
        CollectConfig(dtype="float8")
