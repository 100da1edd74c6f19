"""Check the outputs of a `tempolens run` folder as CI does after the quickstart.

    python scripts/check_run.py RUN_FOLDER

Asserts that the site's index.html, the Neuronpedia batch files and the bulk-import layout exist, that every
batch file and bulk row passes the strict schema validators in tests/schema_validation.py, that every site
(novel codes, and `site/pred/` when there is one) follows docs/site-data.md (window references and sparse values
valid; decoded, each record passes the validator and its windows equal the batch files'), and that SHA256SUMS
matches. Prints one line per check; exits 1 with the first problem.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from schema_validation import (  # noqa: E402
    ACTIVATION_KEYS,
    validate_batch,
    validate_bulk_activation,
    validate_bulk_feature,
    validate_feature,
    validate_site_chunk_activation,
)

from tempolens.dashboards.site import read_js_data, read_site_records  # noqa: E402


def check(run: Path) -> list[str]:
    dash = run / "dashboards"
    index = dash / "site" / "index.html"
    if not index.is_file():
        raise SystemExit(f"check_run: missing {index}")
    lines = [f"site: {index} ({len(list((dash / 'site').rglob('*')))} files)"]
    for name, site in (("neuronpedia", dash / "site"), ("neuronpedia-pred", dash / "site" / "pred")):
        if name == "neuronpedia" or (dash / name).is_dir():  # novel codes always; predicted codes for Temporal SAEs
            lines += check_exports(dash / name)
            lines.append(check_site(site, dash / name / "batches"))
    return lines + check_sums(dash)


def check_site(site: Path, batch_dir: Path) -> str:
    """The site's data follows docs/site-data.md, and its decoded windows are the batch files' exactly."""
    _, meta = read_js_data(site / "data" / "meta.js", "tempolensMeta")
    temporal, n_chunk_bytes = bool(meta["is_temporal"]), 0
    for p in sorted((site / "data" / "features").glob("chunk-*.js")):
        n_chunk_bytes += p.stat().st_size
        for key, rec in read_js_data(p, "tempolensFeatures")[1].items():
            for i, a in enumerate(rec["activations"]):
                validate_site_chunk_activation(
                    f"{p.name}[{key}].activations[{i}]",
                    a,
                    window_len=meta["window_len"],
                    prompt_len=meta["prompt_len"],
                    temporal=temporal,
                )
    records = read_site_records(site)
    batches = {
        f["feature_index"]: f for p in batch_dir.glob("batch-*.json") for f in json.loads(p.read_text())["features"]
    }
    for i, rec in records.items():
        validate_feature(f"site latent {i}", rec, site=True, temporal=temporal)
        shown = [{k: a[k] for k in sorted(ACTIVATION_KEYS)} for a in rec["activations"]]
        if shown != [{k: a[k] for k in sorted(ACTIVATION_KEYS)} for a in batches[i]["activations"]]:
            raise SystemExit(f"check_run: the decoded windows of latent {i} in {site} differ from the batch files'")
    if len(records) != meta["n_latents"] or records.keys() != batches.keys():
        raise SystemExit(f"check_run: {site} has {len(records)} records, the batch files {len(batches)}")
    size = sum(p.stat().st_size for p in (site / "data").rglob("*.js"))
    per = max(len(records), 1) * 1000
    return (
        f"site {site}: {len(records)} records valid, windows equal the batch files'; data "
        f"{size / per:.1f} KB per latent (feature chunks {n_chunk_bytes / per:.1f})"
    )


def check_exports(np_dir: Path) -> list[str]:
    lines: list[str] = []
    batches = sorted((np_dir / "batches").glob("batch-*.json"))
    if not batches:
        raise SystemExit(f"check_run: no batch files under {np_dir / 'batches'}")
    n_features = 0
    for p in batches:
        obj = json.loads(p.read_text())
        validate_batch(obj)
        n_features += len(obj["features"])
    lines.append(f"{np_dir.name} batch files: {len(batches)} valid, {n_features} features")
    sources = sorted((np_dir / "bulk").glob("*/*/source.jsonl"))
    if len(sources) != 1:
        raise SystemExit(f"check_run: expected one bulk source.jsonl under {np_dir / 'bulk'}, found {len(sources)}")
    bulk = sources[0].parent
    src = json.loads(sources[0].read_text())
    n_feat = n_act = 0
    for p in sorted((bulk / "features").glob("batch-*.jsonl.gz")):
        for line in gzip.decompress(p.read_bytes()).decode().splitlines():
            validate_bulk_feature(p.name, json.loads(line), src["id"], src["modelId"])
            n_feat += 1
    for p in sorted((bulk / "activations").glob("batch-*.jsonl.gz")):
        for line in gzip.decompress(p.read_bytes()).decode().splitlines():
            validate_bulk_activation(p.name, json.loads(line), src["id"], src["modelId"])
            n_act += 1
    if n_feat != n_features:
        raise SystemExit(f"check_run: bulk has {n_feat} features, batch files {n_features}")
    lines.append(f"{np_dir.name} bulk import: {bulk} valid, {n_feat} features, {n_act} activations")
    return lines


def check_sums(dash: Path) -> list[str]:
    sums = dash / "SHA256SUMS"
    if not sums.is_file():
        raise SystemExit(f"check_run: missing {sums} (a finished run writes it last)")
    n = 0
    for line in sums.read_text().splitlines():
        digest, name = line.split("  ", 1)
        if hashlib.sha256((dash / name).read_bytes()).hexdigest() != digest:
            raise SystemExit(f"check_run: {name} does not match SHA256SUMS")
        n += 1
    return [f"SHA256SUMS: {n} files match"]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for line in check(Path(sys.argv[1])):
        print(f"check_run: {line}")
