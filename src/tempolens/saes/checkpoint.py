"""Safe reading of SAE checkpoints: safetensors, and torch pickles without executing code.

Trust boundary (docs/temporal-sae.md). Weights are read with safetensors or ``torch.load(weights_only=True)``.
The published ``latest_ckpt.pt`` also pickles an OmegaConf config object. Before unpickling, the
checkpoint's globals are listed statically (``torch.serialization.get_unsafe_globals_in_checkpoint``):
if anything beyond the OmegaConf globals (``OMEGACONF_GLOBALS``; by default any ``omegaconf.*``
class) appears (``os.system``, ``builtins.eval`` ...), loading stops with ``UnsafeCheckpointError``
and nothing is executed.
Otherwise the weights-only unpickler runs with those names mapped to *inert stand-ins* that accept
and discard the config's state — no OmegaConf code runs and omegaconf need not be installed (the
config that counts is ``conf.yaml``). ``allow_pickled_config=True`` maps them to the real OmegaConf
classes instead (``read_checkpoint`` then returns the real config object; omegaconf must be
installed) — still inside the weights-only unpickler, which can build nothing else.

Also the small helpers both SAE layouts share: checking loaded weights against the shapes a config
implies, and turning metadata and dtypes into plain values for the config files they write.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tempolens.errors import SourceError, UnsafeCheckpointError

OMEGACONF_GLOBALS: frozenset[str] = frozenset(
    {
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata",
        "omegaconf.base.Metadata",
        "omegaconf.nodes.AnyNode",
        "omegaconf.nodes.StringNode",
        "omegaconf.nodes.IntegerNode",
        "omegaconf.nodes.FloatNode",
        "omegaconf.nodes.BooleanNode",
        "omegaconf.nodes.BytesNode",
        "omegaconf.nodes.PathNode",
        "typing.Any",
        "collections.defaultdict",
        "builtins.dict",
        "builtins.list",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
    }
)
"""Every global a pickled OmegaConf ``DictConfig`` references (omegaconf 2.x): its container,
node and metadata classes, ``typing.Any`` and the builtin types used as ``ref_type``/``object_type``."""

_BUILTIN_TYPES = {
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
}


class InertPickledObject:
    """Stand-in for a pickled config object: takes any constructor arguments and state, keeps
    nothing and runs no code."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> InertPickledObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<pickled config (ignored)>"


_INERT_ANY = InertPickledObject()


def _inert_defaultdict(*args: Any) -> dict:
    return {}


def _config_globals(names: set[str], real: bool) -> list[tuple[Any, str]]:
    """(object, name) pairs for ``torch.serialization.safe_globals`` covering ``names``."""
    out: list[tuple[Any, str]] = []
    for name in sorted(names):
        if name in _BUILTIN_TYPES:
            out.append((_BUILTIN_TYPES[name], name))
        elif not real:  # every omegaconf.* class → InertPickledObject
            obj: Any = {"typing.Any": _INERT_ANY, "collections.defaultdict": _inert_defaultdict}.get(
                name, InertPickledObject
            )
            out.append((obj, name))
        else:
            module, _, attr = name.rpartition(".")
            if module.startswith("omegaconf"):
                try:
                    import importlib

                    obj = getattr(importlib.import_module(module), attr)
                except ImportError:
                    raise SourceError(
                        "allow_pickled_config=True needs omegaconf to rebuild the pickled config: pip install "
                        "omegaconf "
                        "(or leave allow_pickled_config off: the config is then skipped and conf.yaml is used)"
                    ) from None
            elif name == "typing.Any":
                obj = Any
            else:
                import collections

                obj = collections.defaultdict
            out.append((obj, name))
    return out


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def pickle_globals(data: bytes, max_pickles: int = 8) -> list[str]:
    """``module.name`` of every global that the pickle(s) at the start of ``data`` import, in order,
    found by reading the opcodes (nothing is executed). A legacy torch file is several pickles in a
    row followed by raw storage bytes: reading stops at the first byte that is no pickle."""
    import _compat_pickle
    import io
    import pickletools

    found: list[str] = []
    stream = io.BytesIO(data)
    text_ops = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
    for _ in range(max_pickles):
        strings: list[str] = []  # recent string pushes: STACK_GLOBAL takes the last two (module, name)
        memo: dict[int, str | None] = {}
        last_str: str | None = None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                pushed: str | None = None
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    module, _, name = arg.partition(" ")
                    py3 = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
                    module, name = _compat_pickle.NAME_MAPPING.get((module, name), py3)
                    found.append(f"{module}.{name}")  # Python 2 names (protocols 0-2) as Python 3 loads them
                elif op.name in text_ops:
                    pushed = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last_str
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last_str
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(int(arg))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if pushed is not None:
                    strings.append(pushed)
                if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    last_str = pushed
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle: the storage bytes
            break
        if stream.tell() >= len(data):
            break
    return list(dict.fromkeys(found))


def refused_globals(path: Path, message: str = "") -> list[str]:
    """The globals of a non-zip checkpoint that torch's weights-only unpickler does not allow (it
    names only the first, deep inside a long message); read from the opcodes, torch's message as fallback."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        safe = torch.serialization.get_safe_globals()
        allowed = set(_get_allowed_globals())
        allowed |= {f"{g.__module__}.{g.__qualname__}" for g in safe if hasattr(g, "__qualname__")}
    except Exception:  # noqa: BLE001 - private torch API: fall back to torch's message
        allowed = None
    names: list[str] = []
    if allowed is not None:
        try:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
            names = [g for g in pickle_globals(data) if g not in allowed]
        except OSError:
            names = []
    if not names:
        import re

        names = re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", message)
    return list(dict.fromkeys(names))


def read_checkpoint(path: str | Path, allow_pickled_config: bool = False) -> Any:
    """Read a torch checkpoint without executing code (see the module docstring).

    Raises ``UnsafeCheckpointError`` when the pickle references any global outside
    ``OMEGACONF_GLOBALS`` and torch's own weights-only allow-list.
    """
    path = Path(path)
    hint = "convert it to safetensors in a trusted environment (safetensors.torch.save_file(state_dict, ...))"
    zipped = True
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except ValueError:
        zipped = False  # not a zip checkpoint (legacy format): the weights-only unpickler still guards it
        unsafe = set()
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise SourceError(f"cannot read checkpoint {path} ({first_line(e)}); is the download complete?") from None
    # inert stand-ins run no code whatever class they replace, so any omegaconf.* name may be
    # stood in for; real OmegaConf classes are admitted only from the exact list
    bad = sorted(g for g in unsafe - OMEGACONF_GLOBALS if allow_pickled_config or not g.startswith("omegaconf."))
    if bad:
        raise UnsafeCheckpointError(
            f"{path} would execute code when loaded (it references "
            f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); "
            f"tempolens loads weights only — {hint}"
        )
    allowed = _config_globals(unsafe, real=allow_pickled_config)
    try:
        with torch.serialization.safe_globals(allowed):
            # mmap (zip checkpoints only) keeps a multi-GB checkpoint out of RAM until converted
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        names = refused_globals(path, str(e))
        if names:
            raise UnsafeCheckpointError(
                f"{path} would execute code when loaded (it references {', '.join(names[:4])}"
                f"{' ...' if len(names) > 4 else ''}); tempolens loads weights only — {hint}"
            ) from None
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded as weights only ({first_line(e)[:200]}); {hint}"
        ) from None
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read checkpoint {path} ({first_line(e)[:200]}); is the download complete?") from None


def read_safetensors(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """All tensors of a safetensors file, converted one at a time to ``device``/``dtype`` (peak
    memory ≈ the result plus one tensor), with a clear error for a bad file."""
    from safetensors import safe_open

    try:
        out: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                out[key] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
        return out
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise SourceError(f"cannot read {path} ({first_line(e)[:200]}); is the download complete?") from None


def check_weights(
    weights: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], where: str, conf_hint: str
) -> None:
    """Raise ``SourceError`` naming the tensor when ``weights`` lack, add or misshape any of ``expected``
    (a ``b`` of ``[1, d]`` passes for ``[d]``); ``conf_hint`` names the config that implies the shapes."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else ""))
        raise SourceError(f"{where}: weights do not match {conf_hint}: {'; '.join(parts)}")
    for key, shape in expected.items():
        got = tuple(weights[key].shape)
        if got != shape and not (key == "b" and got == (1, *shape)):
            raise SourceError(f"{where}: {key} has shape {list(got)} but {conf_hint} implies {list(shape)}")


def yaml_safe(v: Any) -> Any:
    """``v`` with mappings/lists kept and every other non-scalar turned into its ``str`` (safe to dump)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        return {str(k): yaml_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [yaml_safe(x) for x in v]
    return str(v)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``, as config files name dtypes."""
    return str(dtype).removeprefix("torch.")
