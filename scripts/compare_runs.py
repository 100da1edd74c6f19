"""Compare two `tempolens run` folders file by file: which outputs are byte-identical, which differ only by
the run's own identity (the store's creation time, the run folder's path), and which differ in content.

Usage: python scripts/compare_runs.py RUN_A RUN_B [--ignore GLOB ...]

gzip members are compared decompressed (their headers hold a timestamp). Timing logs (`*_log*.json`),
`SHA256SUMS`, cache keys (`*.key`), cached statistics (`dashboards/*.safetensors`, whose metadata holds timings)
and the store's `meta.json` are listed apart: they record when and how fast
a run went. Exit status 1 when any other file differs in content or exists on one side only.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import re
import sys
from pathlib import Path

RUN_RECORDS = ("*_log*.json", "*SHA256SUMS", "*.key", "store/meta.json", "dashboards/*.safetensors")


def created_of(run: Path) -> str:
    return str(json.loads((run / "store" / "meta.json").read_text()).get("created", ""))


def content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def normalise(data: bytes, run: Path, created: str) -> bytes:
    for s in {str(run), str(run.resolve())}:
        data = data.replace(s.encode(), b"<RUN>")
    if created:
        data = data.replace(created.encode(), b"<CREATED>")
        data = data.replace(re.sub(r"Z$", "", created).encode(), b"<CREATED>")
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--ignore", nargs="*", default=[], help="globs of relative paths left out (intended changes)")
    args = ap.parse_args()
    files_a = {p.relative_to(args.a).as_posix() for p in args.a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(args.b).as_posix() for p in args.b.rglob("*") if p.is_file()}
    ignored = {f for f in files_a | files_b if any(fnmatch.fnmatch(f, g) for g in args.ignore)}
    records = {f for f in files_a | files_b if any(fnmatch.fnmatch(f, g) for g in RUN_RECORDS)} - ignored
    ca, cb = created_of(args.a), created_of(args.b)
    same, identity, differ = [], [], []
    for f in sorted((files_a & files_b) - ignored - records):
        x, y = content(args.a / f), content(args.b / f)
        if x == y:
            same.append(f)
        elif normalise(x, args.a, ca) == normalise(y, args.b, cb):
            identity.append(f)
        else:
            differ.append(f)
    only_a = sorted(files_a - files_b - ignored)
    only_b = sorted(files_b - files_a - ignored)
    print(f"byte-identical: {len(same)}")
    print(f"identical up to the creation time / run path: {len(identity)}")
    print(f"run records (timings, keys, checksums; not compared): {len(records)}")
    print(f"left out as intended changes: {len(ignored)}")
    for name, rows in (("DIFFERENT", differ), (f"only in {args.a}", only_a), (f"only in {args.b}", only_b)):
        print(f"{name}: {len(rows)}")
        for f in rows[:50]:
            print(f"  {f}")
    return 1 if differ or only_a or only_b else 0


if __name__ == "__main__":
    sys.exit(main())
