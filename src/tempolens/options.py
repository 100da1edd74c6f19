"""Options are defined once, as dataclass fields with a docstring under each.

``add_options(parser, Config)`` turns such a dataclass into ``argparse`` arguments (the field
docstring becomes the ``--help`` text, ``Literal`` types become choices, ``bool`` fields become
``--flag/--no-flag``), and ``options_from_args(Config, namespace)`` builds the dataclass back,
so the CLI and the Python API share one definition and one validation (``__post_init__``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from tempolens.errors import ConfigError

T = TypeVar("T")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written directly under dataclass fields, by field name (base classes included)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def nested_skip(cls: type) -> dict[str, set[str]]:
    """Fields of nested configs that the parent config sets itself (``NESTED_DERIVED`` on the class)."""
    return {k: set(v) for k, v in getattr(cls, "NESTED_DERIVED", {}).items()}


def add_options(
    parser: argparse.ArgumentParser, cls: type, group_title: str | None = None, skip: set[str] | None = None
) -> None:
    """Add one ``--option`` per field of dataclass ``cls`` to ``parser``.

    A field whose type is itself a dataclass contributes its own options (in a group named
    after it). Options of the same name in several nested configs are one option whose value
    goes to each of them. ``skip`` names fields that are not options (set by a parent config).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(group_title) if group_title else parser
    seen: set[str] = parser.__dict__.setdefault("_tempolens_dests", set())
    derived = nested_skip(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_") or f.metadata.get("cli") is False or f.name in (skip or set()):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            add_options(parser, hints[f.name], f"{f.name} options", skip=derived.get(f.name, set()))
            continue
        if f.name in seen:
            continue
        seen.add(f.name)
        tp, optional = _unwrap_optional(hints[f.name])
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
        )
        help_text = docs.get(f.name, "")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        shown_default = default if not isinstance(default, Path) else str(default)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["help"] = f"{help_text} (default: {'on' if default else 'off'})"
        else:
            origin = get_origin(tp)
            if origin is Literal:
                choices = list(get_args(tp))
                kwargs["choices"] = choices
                kwargs["type"] = type(choices[0])
                kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
            elif origin in (list, tuple):
                item = get_args(tp)[0] if get_args(tp) else str
                kwargs["nargs"] = "+"
                kwargs["type"] = item if item in (int, float, str) else str
                kwargs["metavar"] = f.name.upper()
            elif tp in (int, float, str):
                kwargs["type"] = tp
                kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}[tp]
            elif tp is Path:
                kwargs["type"] = Path
                kwargs["metavar"] = "PATH"
            else:
                kwargs["type"] = str
            suffix = "" if default is None and optional else f" (default: {shown_default})"
            kwargs["help"] = (help_text + suffix).replace("%", "%%")
        group.add_argument(_flag(f.name), **kwargs)


def options_from_args(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the parsed arguments that belong to it (others are ignored)."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    derived = nested_skip(cls)
    kwargs = {
        f.name: getattr(ns, f.name)
        for f in fields
        if hasattr(ns, f.name) and not dataclasses.is_dataclass(hints[f.name])
    }
    for f in fields:
        if dataclasses.is_dataclass(hints[f.name]) and f.name not in overrides:
            sub = argparse.Namespace(**{k: v for k, v in vars(ns).items() if k not in derived.get(f.name, set())})
            kwargs[f.name] = options_from_args(hints[f.name], sub)
    kwargs.update(overrides)
    for k, v in list(kwargs.items()):
        tp, _ = _unwrap_optional(hints[k])
        if get_origin(tp) is tuple and isinstance(v, list):
            kwargs[k] = tuple(v)
    return cls(**kwargs)


def check(condition: bool, message: str) -> None:
    """Validation helper for ``__post_init__``: raise ``ConfigError(message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = list(choices)
    check(value in choices, f"--{name.replace('_', '-')} must be one of {', '.join(map(str, choices))}; got {value!r}")
