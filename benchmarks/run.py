"""`make bench`: run every benchmark and write benchmarks/results.json.

    python -m benchmarks.run [watermark convert ...]

Named benchmarks (bench_<name>) rerun only those and update their figures in results.json,
keeping the others as they were measured.

Each figure is `{"value", "unit", "device", "baseline"}`, the baseline measured side by
side in the same run (see benchmarks/common.py). Figures whose sample footage is absent
are left out, and said so on stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from facedag.records import atomic_write_json

BENCHES = ["benchmarks.bench_extract", "benchmarks.bench_dedupe", "benchmarks.bench_train", "benchmarks.bench_convert",
           "benchmarks.bench_watermark", "benchmarks.bench_trim", "benchmarks.bench_identity",
           "benchmarks.bench_gan", "benchmarks.bench_occluder"]
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    chosen = [f"benchmarks.bench_{n}" for n in names] if names else BENCHES
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)} (have: {', '.join(b.rsplit('_', 1)[1] for b in BENCHES)})")
        return 2
    results: dict[str, dict] = json.loads(RESULTS.read_text()) if names and RESULTS.is_file() else {}
    for name in chosen:
        print(f"== {name}", flush=True)
        figures = importlib.import_module(name).run()
        for key, fig in figures.items():
            print(f"{key}: {fig['value']} {fig['unit']} (baseline {fig['baseline']['what']}: "
                  f"{fig['baseline']['value']} {fig['baseline']['unit']}) on {fig['device']}", flush=True)
        results.update(figures)
    atomic_write_json(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
