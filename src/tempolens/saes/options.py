"""The option every command with an ``--sae`` shares, defined once (mixed into their configs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SAELoadOptions:
    """How SAE checkpoints are read (a base of every config that has an ``--sae`` option)."""

    sae_strict: bool = False
    """Refuse keys of a Temporal SAE's conf.yaml that tempolens does not know, instead of ignoring them
    with a note (either way they are recorded in the store's meta.json). Keys that would change the
    forward pass (a sae_type other than temporal, use_pos_encoding: true) are always refused; the full
    list is in docs/checkpoints.md."""

    def __post_init__(self) -> None:
        from tempolens.options import check

        check(isinstance(self.sae_strict, bool), f"--sae-strict is a switch (true or false); got {self.sae_strict!r}")
