"""`python -m tests.corpus OUT_DIR`: build the bad-input corpus into OUT_DIR (one folder per item)
and write OUT_DIR/corpus.json: per item its file and the outcome the pipeline owes it, for
trying the stages by hand (list the files as sources in a params.yaml) or another tool on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facedag.records import atomic_write_json
from tests import corpus
from tests.conftest import SAMPLES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to build the corpus in (created)")
    args = parser.parse_args(argv)
    if not corpus.samples_present():
        print(f"corpus: {SAMPLES} is absent: items that need it are skipped", file=sys.stderr)
    files = corpus.build(args.out)
    rows = []
    for name, path in files.items():
        item = corpus.BY_NAME[name]
        outcome = f"rejected at {item.stage}: {item.reason}" if item.reason else f"passes {item.stage}"
        if item.faces:
            outcome += f" with >= {item.faces} face(s) in a frame"
        rows.append({"name": name, "path": path.relative_to(args.out).as_posix(), "stage": item.stage,
                     "reason": item.reason, "faces": item.faces, "size": item.size, "audio": item.audio})  # fmt: skip
        print(f"{name:22} {outcome:48} {path.relative_to(args.out)}")
    atomic_write_json(args.out / "corpus.json", rows)
    print(f"corpus: {len(files)} items in {args.out}, expectations in {args.out / 'corpus.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
