"""The `facedag` command: run the DAG through Prefect, or show what DVC would rerun.

`facedag run [STAGE ...]`   the Prefect flow over dvc.yaml (all stages, or the named ones and what they need)
`facedag check`             the preflight alone: params schema, sources, target, consent (one line each)
`facedag status`            per stage: up to date, changed (and what changed), or not built yet
`facedag demo [DIR]`        build the offline demo sources (what `make demo` runs before the flow)
`facedag remote add NAME URL`  add the team's DVC remote (default unless --no-default)
`facedag serve [--host H --port P]`  a Prefect server, the pipeline and train-session deployments, and workers
`facedag verify FILE [--record output.json]`  the synthetic-media marks a video carries, as JSON (exit 0/1)
`facedag check-secrets [CONFIG]`  fail when the committed DVC config holds a credential (CI runs it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# Every command imports flows (whose __init__ turns telemetry off) before Prefect or DVC.
def _check(args: argparse.Namespace) -> int:
    from facedag.preflight import main as preflight_main

    return preflight_main(["--root", args.root, *(["--no-face"] if args.no_face else [])])


def _run(args: argparse.Namespace) -> int:
    from facedag.params import load_params
    from facedag.preflight import preflight
    from facedag.records import StageFailed
    from flows.local_server import LocalServerError, ensure_api, stop_local_server
    from flows.pipeline import next_steps, pipeline, result_files

    # the whole pipeline: every check before any work starts (one line per problem); named
    # stages may run before a target or consent exists (gathering footage comes first), so
    # they get the schema check alone
    if args.stages:
        try:
            load_params(Path(args.root) / "params.yaml")
            problems = []
        except StageFailed as exc:
            problems = [str(exc)]
    else:
        problems = preflight(root=args.root)
    for line in problems:
        print(f"facedag run: {line}", file=sys.stderr)
    if problems:
        return 1
    try:
        ensure_api(log=lambda line: print(line, flush=True))
        rows = pipeline(root=args.root, targets=args.stages or None)
    except LocalServerError as exc:
        print(f"facedag run: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the flow already logged the stage's own error lines
        print(f"facedag run: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_local_server()  # before the summary, so that its shutdown lines do not follow it
    ran = sum(r["status"] == "ran" for r in rows)
    print(f"facedag run: {len(rows)} stages, {ran} ran, {len(rows) - ran} skipped or not built yet")
    for path in result_files(args.root):
        print(f"  {path}")
    for line in next_steps(args.root):
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.dvc_graph import stage_status

    status = stage_status(args.root)
    width = max(map(len, status), default=0)
    for name, state in status.items():
        print(f"{name:<{width}}  {state}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from facedag.sources.demo import main as demo_main

    return demo_main([args.out])


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import serve

    return serve(host=args.host, port=args.port, schedule_minutes=args.every, session_minutes=args.session_minutes,
                 workers=not args.no_workers, root=args.root, cron=args.cron, log_dir=args.log_dir)


def _remote_add(args: argparse.Namespace) -> int:
    from flows.remote import DvcCommandError, add_remote

    try:
        print(add_remote(args.root, args.name, args.url, default=args.default, force=args.force), end="")
    except (ValueError, DvcCommandError) as exc:  # SecretInConfigError is a ValueError
        print(f"facedag remote add: {exc}", file=sys.stderr)
        return 1
    print(f"facedag remote add: {args.name} = {args.url}{' (default)' if args.default else ''}; "
          "commit .dvc/config so the team gets it")
    return 0


def _check_secrets(args: argparse.Namespace) -> int:
    from flows.remote import secrets_in_config

    found = secrets_in_config(args.config)
    for line in found:
        print(f"facedag check-secrets: {line}", file=sys.stderr)
    if not found:
        print(f"facedag check-secrets: {args.config}: no secret-looking keys")
    return 1 if found else 0


def _verify(args: argparse.Namespace) -> int:
    from facedag.provenance.verify import main as verify_main

    return verify_main(args.file, args.record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facedag", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the DVC project (default: the current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline as a Prefect flow over the DVC stages")
    run.add_argument("stages", nargs="*", help="stages or steps to run with what they need (default: all)")
    run.set_defaults(func=_run)
    check = sub.add_parser("check", help="check params.yaml, sources, target and consent before any work")
    check.add_argument("--no-face", action="store_true", help="do not look for a face in the target")
    check.set_defaults(func=_check)
    status = sub.add_parser("status", help="per stage: up to date or changed, and what changed")
    status.set_defaults(func=_status)
    demo = sub.add_parser("demo", help="build the offline demo sources")
    demo.add_argument("out", nargs="?", default="data/demo")
    demo.set_defaults(func=_demo)
    srv = sub.add_parser("serve", help="start (or connect to) a Prefect server, register the deployments, run workers")
    srv.add_argument("--host", default="127.0.0.1",
                     help="bind address (default 127.0.0.1; anywhere else, set PREFECT_SERVER_API_AUTH_STRING)")
    srv.add_argument("--port", type=int, default=4200)
    srv.add_argument("--every", type=float, default=None, metavar="MINUTES",
                     help="start a train-session every MINUTES (default: train.session_minutes)")
    srv.add_argument("--cron", default=None, help="a cron schedule for train-session instead of --every")
    srv.add_argument("--session-minutes", type=float, default=None,
                     help="budget of each session (default: train.session_minutes)")
    srv.add_argument("--no-workers", action="store_true",
                     help="register only; start workers elsewhere (prefect worker start --pool gpu)")
    srv.add_argument("--log-dir", default=None, help="write the server and worker output here, not to the terminal")
    srv.set_defaults(func=_serve)
    remote = sub.add_parser("remote", help="the shared DVC remote (data there; dvc.lock and params.yaml in git)")
    remote_sub = remote.add_subparsers(dest="remote_command", required=True)
    remote_add = remote_sub.add_parser("add", help="add a DVC remote: a folder, a NAS mount, s3://..., ssh://...")
    remote_add.add_argument("name")
    remote_add.add_argument("url", help="no credentials here: see `dvc remote modify --local`")
    remote_add.add_argument("--no-default", dest="default", action="store_false", help="do not make it the default")
    remote_add.add_argument("--force", action="store_true", help="replace a remote of the same name")
    remote_add.set_defaults(func=_remote_add)
    verify = sub.add_parser("verify", help="report the label, tags, watermark, C2PA manifest and provenance of a video")
    verify.add_argument("file")
    verify.add_argument("--record", default=None, help="the provenance record (default: looked up beside FILE)")
    verify.set_defaults(func=_verify)
    secrets = sub.add_parser("check-secrets", help="fail when a DVC config file holds credentials")
    secrets.add_argument("config", nargs="?", default=".dvc/config")
    secrets.set_defaults(func=_check_secrets)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
