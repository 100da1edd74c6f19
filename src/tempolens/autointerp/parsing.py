"""Strict parsers of LLM replies. Replies are untrusted text: never evaluated, length-capped.

Each parser returns the parsed value or raises ``ParseFailure`` with a short reason; the
pipeline records the failure (and the raw reply) in the results DB and moves on.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from tempolens.errors import TempolensError

MAX_REPLY_CHARS = 4000
"""Replies longer than this are rejected before any parsing (no regex over huge input)."""


class ParseFailure(TempolensError):
    """An LLM reply does not have the required form. ``reason`` is short and stable (for counting)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _check_size(text: object) -> str:
    if not isinstance(text, str):
        raise ParseFailure("not_text")
    if len(text) > MAX_REPLY_CHARS:
        raise ParseFailure("too_long", f"{len(text)} chars")
    return text


def _strip_fences(text: str) -> str:
    t = text.strip()
    m = re.fullmatch(r"```[a-zA-Z]{0,10}\s*\n?(.*?)\n?```", t, flags=re.S)
    return m.group(1).strip() if m else t


def _printable(text: str) -> str:
    """Drop control/format characters (bidi overrides, zero-width, NUL ...) and collapse spaces."""
    out = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch == " ")
    return re.sub(r"\s+", " ", out).strip()


_PREFIX = re.compile(
    r"^(?:explanation\s*:\s*)?(?:(?:this|the)\s+(?:neuron|latent|feature)\s+(?:activates|fires)\s+(?:on|for)\s*:?\s*)?",
    flags=re.I,
)


def parse_explanation(text: str, max_chars: int = 200) -> str:
    """One-line explanation: the first non-empty line, without a "This neuron activates on" prefix,
    quotes and trailing period; control characters removed; cut at ``max_chars`` (on a word boundary).

    Fails on empty replies and replies with no letters.
    """
    text = _strip_fences(_check_size(text))
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _printable(line)
    line = _PREFIX.sub("", line).strip().strip("\"'`*“”‘’").strip()
    line = line.rstrip(".").strip()
    if not line or not any(ch.isalpha() for ch in line):
        raise ParseFailure("empty_explanation")
    if len(line) > max_chars:
        cut = line[:max_chars]
        line = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return line


_DETECTION = re.compile(r"[0-9]{1,4}(?:[ \t]*(?:,|\band\b|[ \t])[ \t]*[0-9]{1,4})*", re.ASCII)


def parse_detection(text: str, n: int) -> list[int]:
    """SAEBench detection reply: comma-separated 1-based indices in ``1..n``, or ``None``.

    Accepts ``"1, 4, 7"``, ``"1,4 and 7"``, ``"None"`` (case-insensitive), an optional trailing
    period and surrounding quotes/code fences; rejects anything else, out-of-range and duplicate
    indices. Returns the sorted indices (``[]`` for None).
    """
    t = _strip_fences(_check_size(text)).strip().strip("\"'`").strip().rstrip(".").strip()
    if t.lower() == "none":
        return []
    if not t:
        raise ParseFailure("empty_reply")
    if not _DETECTION.fullmatch(t):
        raise ParseFailure("not_a_list", t[:60])
    nums = [int(x) for x in re.findall(r"[0-9]+", t)]
    bad = [x for x in nums if not 1 <= x <= n]
    if bad:
        raise ParseFailure("out_of_range", f"{bad[:5]} not in 1..{n}")
    if len(set(nums)) != len(nums):
        raise ParseFailure("duplicate_index")
    return sorted(nums)


def parse_binary_list(text: str, n: int) -> list[int]:
    """delphi-style reply: a JSON list of exactly ``n`` integers, each 0 or 1 (e.g. ``[1, 0, 0, 1, 0]``).

    Surrounding code fences are allowed; nothing else (no prose, no nesting, no booleans,
    no strings). Parsed with ``json.loads`` on the bracketed text only — never evaluated.
    """
    t = _strip_fences(_check_size(text)).strip()
    if not t:
        raise ParseFailure("empty_reply")
    if not re.fullmatch(r"\[[ \t\n0-9,]*\]", t):
        raise ParseFailure("not_a_list", t[:60])
    try:
        val = json.loads(t)
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise ParseFailure("bad_json", str(e)[:60]) from None
    if not isinstance(val, list):
        raise ParseFailure("not_a_list")
    if len(val) != n:
        raise ParseFailure("wrong_length", f"{len(val)} != {n}")
    if any(type(x) is not int or x not in (0, 1) for x in val):
        raise ParseFailure("not_binary")
    return [int(x) for x in val]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_answer_object(text: str, kind: str, n: int) -> list[int]:
    """A JSON-schema answer (``response_format``): ``{"indices": [...]}`` (kind ``indices``: distinct
    integers in ``1..n``, returned sorted) or ``{"labels": [...]}`` (kind ``binary``: exactly ``n``
    integers, each 0 or 1). Exactly that one key; code fences allowed; nothing is evaluated."""
    key = {"indices": "indices", "binary": "labels"}.get(kind)
    if key is None:
        raise ValueError(f"unknown answer kind {kind!r}")
    t = _strip_fences(_check_size(text)).strip()
    if not t:
        raise ParseFailure("empty_reply")
    if not t.startswith("{"):
        raise ParseFailure("not_an_object", t[:60])
    try:
        val = json.loads(t, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ParseFailure("bad_json", str(e)[:60]) from None
    if not isinstance(val, dict) or set(val) != {key}:
        raise ParseFailure("wrong_keys", str(sorted(val))[:60] if isinstance(val, dict) else type(val).__name__)
    items = val[key]
    if not isinstance(items, list) or any(type(x) is not int for x in items):
        raise ParseFailure("not_an_int_list")
    if kind == "binary":
        if len(items) != n:
            raise ParseFailure("wrong_length", f"{len(items)} != {n}")
        if any(x not in (0, 1) for x in items):
            raise ParseFailure("not_binary")
        return list(items)
    bad = [x for x in items if not 1 <= x <= n]
    if bad:
        raise ParseFailure("out_of_range", f"{bad[:5]} not in 1..{n}")
    if len(set(items)) != len(items):
        raise ParseFailure("duplicate_index")
    return sorted(items)
