"""Do tempolens and SAEDashboard agree where they should?

Reference: the tempolens code store, read brute-force (every code of every counted token), gives
per latent the number of active tokens, the maximum activation and the top activations with their
(prompt, position). Against it we check

- SAEDashboard's Neuronpedia batch files (an independent forward: TransformerLens + SAELens instead
  of HF transformers + tempolens's SAE): density, max activation, top-20 examples;
- tempolens's own dashboards (site data records): the same three, which must match exactly.

Definitions that differ on purpose and are aligned before comparing:
- SAEDashboard's ``frac_nonzero`` divides by *all* tokens (BOS included) and is parsed back from a
  ``{:.3%}`` title, i.e. rounded to 1e-5; tempolens divides by counted tokens (BOS/EOS/pad excluded).
- SAEDashboard drops BOS from every example (positions shift by one) and rounds values to 3 decimals.
- TransformerLens and HF compute the same model with different kernels (fp32 differences of order
  1e-6 relative), so a TopK SAE can swap a near-tied k-th latent at a few tokens; such swaps move a
  density by one token (1/n_tokens) and are counted, not hidden.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

# ----------------------------------------------------------------------------------- reference


def store_reference(store_path: str | Path, n_top: int = 20) -> dict[str, Any]:
    """Brute-force per-latent statistics of a code store (BOS/EOS/pad positions excluded).

    Returns ``count [W]``, ``max [W]``, ``top`` (dict latent → list of ``(prompt, pos, value)``,
    value-descending, at most ``n_top``), ``tokens [P, T]``, ``n_valid``, ``n_total``, ``width``.
    """
    from tempolens.store.codestore import CodeStore

    store = CodeStore(store_path)
    W, T = store.width, store.prompt_len
    lat_l, val_l, gpos_l, tok_l, pid_l = [], [], [], [], []
    n_valid = n_total = 0
    for sh in store.iter_shards():
        tok = sh.code_token()
        valid = sh.valid_mask().reshape(-1)
        keep = valid[tok]
        prompt = sh.prompt_ids[tok // T]
        lat_l.append(sh.code_latent[keep].long())
        val_l.append(sh.code_value[keep].float())
        gpos_l.append((prompt * T + tok % T)[keep])
        tok_l.append(sh.tokens.long())
        pid_l.append(sh.prompt_ids.long())
        n_valid += int(valid.sum())
        n_total += valid.numel()
    lat, val, gpos = torch.cat(lat_l), torch.cat(val_l), torch.cat(gpos_l)
    pids = torch.cat(pid_l)
    tokens = torch.empty(int(pids.max()) + 1, T, dtype=torch.long)
    tokens[pids] = torch.cat(tok_l)
    count = torch.bincount(lat, minlength=W)
    mx = torch.zeros(W).scatter_reduce(0, lat, val, reduce="amax", include_self=True)
    # group by latent, value-descending inside a group; ties broken by position (stable)
    order = torch.argsort(gpos, stable=True)
    order = order[torch.argsort(val[order], descending=True, stable=True)]
    order = order[torch.argsort(lat[order], stable=True)]
    starts = torch.zeros(W + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(count, 0)
    rank = torch.arange(order.numel()) - starts[lat[order]]
    sel = order[rank < n_top]
    top: dict[int, list[tuple[int, int, float]]] = {}
    for l, g, v in zip(lat[sel].tolist(), gpos[sel].tolist(), val[sel].tolist()):
        top.setdefault(l, []).append((g // T, g % T, v))
    return {
        "count": count,
        "max": mx,
        "top": top,
        "tokens": tokens,
        "n_valid": n_valid,
        "n_total": n_total,
        "width": W,
        "prompt_len": T,
    }


# ----------------------------------------------------------------------------------- readers


def read_batch_features(folder: str | Path) -> list[dict]:
    """Feature objects of every ``batch-*.json`` under ``folder`` (SAEDashboard / Neuronpedia layout)."""
    feats: list[dict] = []
    for path in sorted(Path(folder).glob("batch-*.json")):
        feats.extend(json.loads(path.read_text()).get("features", []))
    return sorted(feats, key=lambda f: int(f["feature_index"]))


def read_site_features(site: str | Path) -> list[dict]:
    """Records of a tempolens site with their windows decoded (``tempolens.dashboards.site.read_site_records``:
    feature chunks, shared prompt tables and token strings, docs/site-data.md)."""
    from tempolens.dashboards.site import read_site_records

    return [r for _, r in sorted(read_site_records(site).items())]


def _f(x: Any) -> float:
    return float(x)


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _norm_piece(s: str) -> str:
    """Token spelling reduced to what both tools' vocab renderings share (ASCII, ▁ as space)."""
    return _NON_ASCII.sub("?", s.replace("\u2581", " "))


def prompt_index_by_prefix(pieces: Sequence[Sequence[str]], skip: int = 1, n: int = 16) -> dict[tuple, int]:
    """Key (first ``n`` normalised pieces after ``skip`` positions) → prompt; ambiguous keys → -1."""
    out: dict[tuple, int] = {}
    for i, row in enumerate(pieces):
        key = tuple(_norm_piece(s) for s in row[skip : skip + n])
        out[key] = -1 if key in out else i
    return out


def top_examples(
    feature: dict, prompt_len: int, key_index: dict[tuple, int] | None = None, n: int = 16
) -> list[tuple[int, int, float]]:
    """``(prompt, position, value)`` of a feature's top group (``bin_min == -1``).

    Uses ``prompt_index`` when the record has it, otherwise finds the prompt by its first tokens.
    Whole-prompt windows are assumed (prompt_len ≤ window): a window one token short has dropped BOS.
    """
    out = []
    for a in feature.get("activations", []):
        if _f(a["bin_min"]) != -1:
            continue
        toks, vals, q = a["tokens"], a["values"], int(a["qualifying_token_index"])
        offset = prompt_len - len(toks)
        if "prompt_index" in a:
            p = int(a["prompt_index"])
        else:
            p = (key_index or {}).get(tuple(_norm_piece(s) for s in toks[:n]), -1)
        out.append((p, q + offset, _f(vals[q])))
    return out


# ----------------------------------------------------------------------------------- comparison


def compare_features(
    ref: dict[str, Any],
    feats: Iterable[dict],
    *,
    density_denominator: str,
    value_decimals: int | None,
    density_resolution: float,
    key_index: dict[tuple, int] | None = None,
    n_top: int = 20,
) -> dict[str, Any]:
    """Agreement of dashboard feature objects with the store reference (see the module docstring).

    ``density_denominator``: ``valid`` (tempolens) or ``all`` (SAEDashboard counts BOS in the denominator).
    ``value_decimals``: rounding applied by the tool to example values (None = full precision).
    """
    T = ref["prompt_len"]
    denom = ref["n_valid"] if density_denominator == "valid" else ref["n_total"]
    one_token = 1.0 / denom
    val_tol_abs = 0.5 * 10 ** (-value_decimals) if value_decimals is not None else 0.0
    n = n_alive = 0
    dens_diff, dens_tokens, max_rel = [], [], []
    top_overlap, top_exact, top_val_rel = [], 0, []
    unmatched = 0
    worst: list[tuple[float, int]] = []
    for f in feats:
        l = int(f["feature_index"])
        if l >= ref["width"]:
            continue
        n += 1
        ref_count = int(ref["count"][l])
        ref_dens = ref_count / denom
        got = _f(f.get("frac_nonzero", 0.0))
        dens_diff.append(abs(got - ref_dens))
        dens_tokens.append(abs(got - ref_dens) / one_token)
        if ref_count == 0:
            continue
        n_alive += 1
        ref_top = ref["top"].get(l, [])
        ex = top_examples(f, T, key_index)
        if not ex:
            max_rel.append(float("inf"))
            continue
        got_max = max(v for _, _, v in ex)
        rm = float(ref["max"][l])
        max_rel.append(max(0.0, abs(got_max - rm) - val_tol_abs) / max(abs(rm), 1e-12))
        unmatched += sum(1 for p, _, _ in ex if p < 0)
        got_pos = {(p, t) for p, t, _ in ex if p >= 0}
        ref_pos = {(p, t) for p, t, _ in ref_top}
        k = min(n_top, len(ref_pos)) or 1
        ov = len(got_pos & ref_pos) / k
        top_overlap.append(ov)
        top_exact += int(got_pos == ref_pos)
        ref_val = {(p, t): v for p, t, v in ref_top}
        for p, t, v in ex:
            if (p, t) in ref_val:
                rv = ref_val[(p, t)]
                top_val_rel.append(max(0.0, abs(v - rv) - val_tol_abs) / max(abs(rv), 1e-12))
        worst.append((ov, l))

    def q(xs: list[float], p: float) -> float:
        if not xs:
            return float("nan")
        s = sorted(xs)
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    worst.sort()
    return {
        "n_latents": n,
        "n_alive": n_alive,
        "density": {
            "max_abs_diff": max(dens_diff) if dens_diff else float("nan"),
            "median_abs_diff": q(dens_diff, 0.5),
            "max_diff_in_tokens": max(dens_tokens) if dens_tokens else float("nan"),
            "n_within_resolution": sum(d <= density_resolution + 1e-12 for d in dens_diff),
            "n_within_1_token": sum(d <= one_token + density_resolution + 1e-12 for d in dens_diff),
            "denominator": density_denominator,
            "resolution": density_resolution,
        },
        "max_act": {
            "median_rel_diff": q(max_rel, 0.5),
            "p99_rel_diff": q(max_rel, 0.99),
            "max_rel_diff": max(max_rel) if max_rel else float("nan"),
            "n_within_1e-4": sum(r <= 1e-4 for r in max_rel),
            "n_within_1e-3": sum(r <= 1e-3 for r in max_rel),
        },
        "top": {
            "mean_overlap": sum(top_overlap) / len(top_overlap) if top_overlap else float("nan"),
            "min_overlap": min(top_overlap) if top_overlap else float("nan"),
            "n_identical_sets": top_exact,
            "n_compared": len(top_overlap),
            "matched_value_max_rel_diff": max(top_val_rel) if top_val_rel else float("nan"),
            "unmatched_examples": unmatched,
            "worst_latents": [l for _, l in worst[:5]],
        },
    }


def verify_prompts(ref: dict[str, Any], tokens: torch.Tensor) -> bool:
    """True when the store holds exactly these prompts (same ids, same order)."""
    st = ref["tokens"]
    return tuple(st.shape) == tuple(tokens.shape) and bool(torch.equal(st, tokens.long()))


def agreement_report(
    store: str | Path,
    tokens: torch.Tensor,
    pieces: Sequence[Sequence[str]] | None,
    saedash_dir: str | Path | None,
    tempolens_site: str | Path | None,
) -> dict[str, Any]:
    """Both comparisons for one configuration (either side may be missing)."""
    ref = store_reference(store)
    out: dict[str, Any] = {
        "same_prompts": verify_prompts(ref, tokens[: ref["tokens"].shape[0]]),
        "n_valid_tokens": ref["n_valid"],
        "n_tokens": ref["n_total"],
    }
    if tempolens_site is not None and Path(tempolens_site).exists():
        feats = read_site_features(tempolens_site)
        out["tempolens_vs_store"] = compare_features(
            ref, feats, density_denominator="valid", value_decimals=None, density_resolution=1e-9
        )
    if saedash_dir is not None and Path(saedash_dir).exists():
        key_index = prompt_index_by_prefix(pieces) if pieces is not None else None
        feats = read_batch_features(saedash_dir)
        out["saedash_vs_store"] = compare_features(
            ref, feats, density_denominator="all", value_decimals=3, density_resolution=5e-6, key_index=key_index
        )
    return out


def summarize_agreement(a: dict[str, Any]) -> list[str]:
    """Human-readable lines for the Markdown report."""
    lines = [
        f"- same prompts in the store and in SAEDashboard's token file: {'yes' if a.get('same_prompts') else 'NO'}"
    ]
    for name, label in (
        ("tempolens_vs_store", "tempolens dashboards vs code store (exact)"),
        ("saedash_vs_store", "SAEDashboard vs tempolens code store"),
    ):
        c = a.get(name)
        if not c:
            continue
        d, m, t = c["density"], c["max_act"], c["top"]
        lines.append(
            f"- {label}: {c['n_latents']} latents ({c['n_alive']} active). Density: max |Δ| {d['max_abs_diff']:.2e} "
            f"({d['max_diff_in_tokens']:.2f} tokens), {d['n_within_resolution']}/{c['n_latents']} within rounding, "
            f"{d['n_within_1_token']}/{c['n_latents']} within one token. Max activation: median rel. Δ "
            f"{m['median_rel_diff']:.1e}, "
            f"max {m['max_rel_diff']:.1e}, {m['n_within_1e-3']}/{c['n_alive']} within 1e-3. Top-{20}: mean overlap "
            f"{t['mean_overlap']:.3f}, "
            f"identical sets {t['n_identical_sets']}/{t['n_compared']}, matched values max rel. Δ "
            f"{t['matched_value_max_rel_diff']:.1e}"
            + (f", {t['unmatched_examples']} examples not located" if t["unmatched_examples"] else "")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Check one configuration by hand: ``python benchmarks/compare.py --store S --tokens T [--pieces P] [--saedash
    DIR] [--site DIR]``."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--store", required=True, help="tempolens code store")
    p.add_argument("--tokens", required=True, help="tokens.pt of the prompts (from bench_children.py prepare)")
    p.add_argument("--pieces", help="pieces.json (token pieces per prompt) to locate SAEDashboard examples")
    p.add_argument("--saedash", help="folder with SAEDashboard's batch-*.json")
    p.add_argument("--site", help="tempolens site folder (data/features/chunk-*.js)")
    p.add_argument("--json", help="also write the report here")
    a = p.parse_args(argv)
    tokens = torch.load(a.tokens, weights_only=True)
    pieces = json.loads(Path(a.pieces).read_text()) if a.pieces else None
    rep = agreement_report(a.store, tokens, pieces, a.saedash, a.site)
    print("\n".join(summarize_agreement(rep)))
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
