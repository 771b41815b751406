"""What every stage entry point shares: argument parsing, a fresh output folder, and the
one-line failure contract (exit 1 with a clear message, no traceback, only when nothing
usable is left)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from facedag.params import Params, load_params
from facedag.records import StageFailed


def fresh_dir(path: str | Path) -> Path:
    """Empty `path` and return it: a rerun must never mix new outputs with stale ones.

    DVC removes declared outputs before it runs a stage; this covers `python -m stages.X`
    run by hand.
    """
    out = Path(path)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def identity_main(stage: str, run: Callable[[Params, str], None]) -> None:
    """Entry point of a per-identity stage: `python -m stages.<stage> <ID>`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}")
    parser.add_argument("identity", help="an identity name from params.yaml (e.g. src or dst)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        if args.identity not in params.identities:
            have = ", ".join(params.identities)
            raise StageFailed(f"identity {args.identity!r} is not in {args.params} (have: {have})")
        run(params, args.identity)
    except StageFailed as exc:
        print(f"{stage}@{args.identity}: error: {exc}", file=sys.stderr)
        sys.exit(1)


def stage_main(stage: str, run: Callable[[Params], None]) -> None:
    """Entry point of a stage over all identities (train, convert, render): `python -m stages.<stage>`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    try:
        run(load_params(args.params))
    except StageFailed as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        sys.exit(1)
