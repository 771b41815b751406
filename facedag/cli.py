"""The `facedag` command: run the DAG through Prefect, or show what DVC would rerun.

`facedag run [STAGE ...]`   the Prefect flow over dvc.yaml (all stages, or the named ones and what they need)
`facedag status`            per stage: up to date, changed (and what changed), or not built yet
`facedag demo [DIR]`        build the offline demo sources (what `make demo` runs before the flow)
"""

from __future__ import annotations

import argparse
import sys


# Every command imports flows (whose __init__ turns telemetry off) before Prefect or DVC.
def _run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline, result_files

    try:
        rows = pipeline(root=args.root, targets=args.stages or None)
    except Exception as exc:  # the flow already logged the stage's own error lines
        print(f"facedag run: failed: {exc}", file=sys.stderr)
        return 1
    ran = sum(r["status"] == "ran" for r in rows)
    print(f"facedag run: {len(rows)} stages, {ran} ran, {len(rows) - ran} skipped or not built yet")
    for path in result_files(args.root):
        print(f"  {path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.dvc_graph import stage_status

    status = stage_status(args.root)
    width = max(map(len, status), default=0)
    for name, state in status.items():
        print(f"{name:<{width}}  {state}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from facedag.demo import main as demo_main

    return demo_main([args.out])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facedag", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the DVC project (default: the current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline as a Prefect flow over the DVC stages")
    run.add_argument("stages", nargs="*", help="stages or steps to run with what they need (default: all)")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="per stage: up to date or changed, and what changed")
    status.set_defaults(func=_status)
    demo = sub.add_parser("demo", help="build the offline demo sources")
    demo.add_argument("out", nargs="?", default="data/demo")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
