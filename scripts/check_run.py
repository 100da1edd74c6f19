"""Check the outputs of a `tempolens run` folder as CI does after the quickstart.

    python scripts/check_run.py RUN_FOLDER

Asserts that the site's index.html, the Neuronpedia batch files and the bulk-import layout exist, and that every
batch file and bulk row passes the strict schema validators in tests/schema_validation.py, and that SHA256SUMS
matches. Prints one line per check; exits 1 with the first problem.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from schema_validation import validate_batch, validate_bulk_activation, validate_bulk_feature  # noqa: E402


def check(run: Path) -> list[str]:
    dash = run / "dashboards"
    index = dash / "site" / "index.html"
    if not index.is_file():
        raise SystemExit(f"check_run: missing {index}")
    lines = [f"site: {index} ({len(list((dash / 'site').rglob('*')))} files)"]
    for name in ("neuronpedia", "neuronpedia-pred"):  # novel codes always; predicted codes for Temporal SAEs
        if name == "neuronpedia" or (dash / name).is_dir():
            lines += check_exports(dash / name)
    return lines + check_sums(dash)


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
