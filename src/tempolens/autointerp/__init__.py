"""Autointerp: example windows from code stores → explain → score → SQLite results → ballpark report.

Public entry points: ``AutointerpConfig`` / ``run_autointerp`` (the ``tempolens autointerp`` command),
``rebuild`` (report from the DB alone), and the building blocks in ``windows``, ``prompts``,
``parsing``, ``llm``, ``scorers``, ``metrics``, ``db`` and ``report``. Imports are lazy so that
``import tempolens.autointerp`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AutointerpConfig", "run_autointerp", "rebuild"]


def __getattr__(name: str) -> Any:
    if name in ("AutointerpConfig", "run_autointerp"):
        from tempolens.autointerp import pipeline

        return getattr(pipeline, name)
    if name == "rebuild":
        from tempolens.autointerp.report import rebuild

        return rebuild
    raise AttributeError(name)
