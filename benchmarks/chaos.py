"""`make chaos`: SIGKILL every stage at random moments, rerun it, and check that nothing was lost.

    python -m benchmarks.chaos [--trials 5] [--stages extract@src convert ...] [--seed 0]
                               [--out benchmarks/chaos.json] [--workdir DIR]

Builds a throwaway DVC project (this code, the demo sources, the tests' tiny params with three
shots per identity and bit-exact training), runs the DAG once, stage by stage, as the
reference (timing each stage), then for each stage, last stage first, `--trials` times:

1. `dvc repro --single-item --force <stage>` in its own process group, SIGKILLed (the whole
   group: dvc, the stage, its ffmpeg) at a random moment of the stage's measured duration
   (seeded; trial k of n falls in the k-th n-th of 90 % of it, so the kills spread over the run);
   train first loses its checkpoints, so that it trains from scratch as in the reference;
2. checks the outputs the kill left: every declared output that exists must parse whole
   (a half file where a whole one belongs is counted in `half_files_found`; hidden temp
   files of atomic writes are not outputs);
3. `dvc repro --single-item --force <stage>`, which must exit 0. Forced, so that the stage
   really runs: unforced, DVC would check the reference's outputs out of its cache (whole,
   but that tests DVC, not the stage; tests/stages/test_chaos.py covers the unforced rerun of a first
   run). The log tells whether it resumed (extract: `resuming: k of n clips done`, convert:
   `resuming: k of ~n chunks done`, train: `resumed from step N`) or started over;
4. checks: every output parses (`valid`), no temp file of an atomic write is left beside
   or inside the outputs (`temp_files_left`), `dvc status <stage>` is clean, and the outputs
   equal the reference's (`equal`): byte for byte, JSON records without their timing and
   history keys (seconds, fps, resumed_from, ...), dvclive tables without a timestamp column.
   Stages that are not deterministic (the report draws the training's speed) count as
   `valid` only; `differs` names the files.

Going from the last stage to the first keeps every stage's inputs equal to the reference's:
a rerun changes only its own stage's outputs, and the stages after it were tested already.

Writes `benchmarks/chaos.json` (atomically): per stage trials, kills, reruns_ok, resumed,
restarted, equal, valid, status_clean, half_files_found, temp_files_left,
seconds, plus the machine, date, seed and the reference's stage durations. Not in CI (it
takes about (trials x 14 stages) x 20 s); tests/stages/test_chaos.py is the CI version with one
kill per stage at a fixed point.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import device_name
from facedag.records import atomic_write_json, sha256_file
from flows.dvc_graph import repair_dvc_state

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "chaos.json"
VENV_BIN = Path(sys.executable).parent
CHUNK_FRAMES = 48  # convert's chunks for the 150-frame demo target: 4 of them, so a kill can land between
# tests/conftest.py's TINY, plus three kept shots per identity (extract resumes per clip) and
# bit-exact training (a resumed train can then be compared to the reference byte for byte)
EXTRA_PARAMS = {"trim": {"max_seconds": 6}, "train": {"deterministic": True}}
PERSIST = ("models/checkpoints", "models/previews", "models/live")  # train's persist outs
TEMP_NAME = re.compile(r"^\..+\.(tmp|old)(\.[A-Za-z0-9]+)?$")  # records.atomic_path, report_html's staging
VOLATILE_KEY = re.compile(r"(^|_)(seconds|fps|per_s|time|timestamp|date|created|elapsed|resumed_from)$")
COUNTS = ("trials", "kills", "reruns_ok", "resumed", "restarted", "equal", "valid", "status_clean", "half_files_found",
          "temp_files_left")  # fmt: skip
RESUMED = re.compile(r"resuming: \d+ of|resumed from step [1-9]")


# -- helpers shared with tests/stages/test_chaos.py ------------------------------------------------------


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for dvc and the stages: this venv first on PATH, telemetry off."""
    env = dict(os.environ, DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1",
               PYTHONUNBUFFERED="1", FACEDAG_CONVERT_CHUNK_FRAMES=str(CHUNK_FRAMES))  # fmt: skip
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FACEDAG_FAULT", None)
    env.update(extra)
    return env


def dvc(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=root, env=env or tool_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def stage_names(root: Path) -> list[str]:
    """The stages in dvc.yaml's order (upstream first, as dvc.yaml is written)."""
    proc = dvc(root, "stage", "list", "--name-only")
    if proc.returncode != 0:
        raise RuntimeError(f"dvc stage list failed: {proc.stderr.strip()}")
    return proc.stdout.split()


def stage_outs(root: Path, stage: str) -> list[str]:
    """The outputs (metrics and plots included) a stage declares in dvc.yaml."""
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        (found,) = repo.stage.collect(stage)
        return [str(out.def_path) for out in found.outs]


def out_files(root: Path, outs: Iterable[str]) -> list[Path]:
    """The files of the outputs that exist. In a directory output, hidden entries are temp
    files (atomic_path's `.x.tmp.mp4`, fetch's `.norm-*.mp4`): no stage names an output so."""
    files = []
    for out in outs:
        path = root / out
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
    return files


def _hidden(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def temp_files(root: Path, outs: Iterable[str]) -> list[str]:
    """Temp files or folders of atomic writes beside the outputs, and hidden entries inside
    directory outputs."""
    found: set[Path] = set()
    for out in outs:
        path = root / out
        if path.parent.is_dir():
            found.update(p for p in path.parent.iterdir() if TEMP_NAME.match(p.name))
        if path.is_dir():
            found.update(p for p in path.rglob(".*"))
    return sorted(str(p.relative_to(root)) for p in found)


def check_file(path: Path) -> str | None:
    """None when the file parses whole for its kind; otherwise why not."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif suffix in (".mp4", ".mkv"):
            import av

            with av.open(os.fspath(path)) as container:
                n = sum(1 for _ in container.decode(video=0))
            if n == 0:
                return "no frame decodes"
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            for line in path.read_text().splitlines():
                if line.strip():
                    json.loads(line)
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            load_file(os.fspath(path))
        elif suffix == ".pt":
            import torch

            torch.load(path, weights_only=True, map_location="cpu")
        elif suffix in (".png", ".jpg", ".jpeg"):
            import cv2

            if cv2.imread(os.fspath(path)) is None:
                return "image does not decode"
        elif suffix == ".html":
            if "</html>" not in path.read_text(encoding="utf-8").lower():
                return "html without its end"
        elif suffix == ".tsv":
            rows = [line.split("\t") for line in path.read_text().splitlines() if line]
            if rows and any(len(r) != len(rows[0]) for r in rows):
                return "ragged tsv"
        else:
            path.read_bytes()
    except Exception as exc:  # what a half-written file raises varies by parser
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def invalid_files(root: Path, outs: Iterable[str]) -> dict[str, str]:
    """{file: why} for the outputs' files that exist but do not parse whole."""
    bad = {}
    for path in out_files(root, outs):
        why = check_file(path)
        if why is not None:
            bad[str(path.relative_to(root))] = why
    return bad


def status_clean(root: Path, stage: str, env: dict[str, str] | None = None) -> bool:
    """`dvc status <stage>` reports nothing changed."""
    proc = dvc(root, "status", "--json", stage, env=env)
    return proc.returncode == 0 and json.loads(proc.stdout or "{}") == {}


def fingerprint(path: Path) -> str:
    """What `equal` compares: bytes, or for JSON and TSV records the content less timing/history."""
    if path.suffix == ".json":
        return json.dumps(_strip(json.loads(path.read_text())), sort_keys=True)
    if path.suffix == ".pt":  # torch.save names its zip entries after the (random) temp file: compare content
        import torch

        digest = hashlib.sha256()
        _digest_value(torch.load(path, weights_only=True, map_location="cpu"), digest)
        return digest.hexdigest()
    if path.suffix == ".tsv":
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0] if rows else []) if not VOLATILE_KEY.search(name)]
        return "\n".join("\t".join(r[i] for i in keep if i < len(r)) for r in rows)
    return sha256_file(path)


def _digest_value(value: Any, digest: Any) -> None:
    """Feed a checkpoint's content (tensors by dtype, shape and bytes; the rest by repr) to `digest`."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype}{tuple(value.shape)}".encode() + t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"K{key!r}".encode())
            _digest_value(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _digest_value(item, digest)
    else:
        digest.update(f"V{value!r}".encode())


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def fingerprints(root: Path, outs: Iterable[str]) -> dict[str, str]:
    return {str(p.relative_to(root)): fingerprint(p) for p in out_files(root, outs)}


def make_chaos_project(root: Path) -> Path:
    """The throwaway project: demo sources, this code, TINY + EXTRA_PARAMS, a fresh git + DVC repo."""
    sys.path.insert(0, str(REPO))
    from facedag.sources.demo import build_all
    from tests.conftest import TINY, deep_update, make_project

    demo = root.parent / "demo"
    build_all(demo)
    params = deep_update(json.loads(json.dumps(TINY)), EXTRA_PARAMS)
    return make_project(root, demo, params)


# -- the trials ------------------------------------------------------------------------------------


def killed_run(root: Path, stage: str, delay: float, timeout: float = 900) -> tuple[bool, float]:
    """`dvc repro -s -f <stage>` in its own process group, SIGKILLed after `delay` s.

    Returns (killed while running, seconds it ran). The whole group goes: dvc, the stage's
    python and any ffmpeg it started.
    """
    started = time.monotonic()
    proc = subprocess.Popen([str(VENV_BIN / "dvc"), "repro", "--single-item", "--force", stage], cwd=root,
                            env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout=delay)
        return False, time.monotonic() - started
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # it may have ended in between
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    return True, time.monotonic() - started


def trial(root: Path, stage: str, delay: float, reference: dict[str, str]) -> dict[str, Any]:
    """One kill and rerun of `stage`; what was found."""
    outs = stage_outs(root, stage)
    if stage == "train":  # start from scratch, as the reference did
        for persist in PERSIST:
            shutil.rmtree(root / persist, ignore_errors=True)
    repair_dvc_state(root)  # what facedag's flow does before each step: keeps a whole copy of dvc.lock
    killed, ran = killed_run(root, stage, delay)
    half = invalid_files(root, outs)
    # a dvc killed while rewriting dvc.lock or its lock registry leaves it half written, and
    # every dvc command would fail on it: the flow repairs that before the next step
    repairs = repair_dvc_state(root)
    rerun = dvc(root, "repro", "--single-item", "--force", stage)
    log = rerun.stdout + rerun.stderr
    how = "resumed" if RESUMED.search(log) else "restarted"
    invalid = invalid_files(root, outs)
    now = fingerprints(root, outs)
    differs = sorted(k for k in set(now) | set(reference) if now.get(k) != reference.get(k))
    result = {
        "kill_at_s": round(delay, 2), "killed": killed, "ran_s": round(ran, 2), "rerun_ok": rerun.returncode == 0,
        "how": how, "half_files": half, "invalid": invalid, "temp_files": temp_files(root, outs),
        "status_clean": status_clean(root, stage), "equal": rerun.returncode == 0 and not differs,
        "differs": differs, "dvc_state_repaired": repairs,
    }  # fmt: skip
    if rerun.returncode != 0:
        result["rerun_log"] = log[-1500:]
    return result


def run_chaos(trials: int, stages: list[str] | None, seed: int, out: Path, workdir: Path | None) -> dict[str, Any]:
    base = Path(workdir or tempfile.mkdtemp(prefix="facedag-chaos."))
    if (base / "proj").exists():
        raise SystemExit(f"{base / 'proj'} exists: remove it or give another --workdir")
    root = make_chaos_project(base / "proj")
    names = stage_names(root)
    chosen = [s for s in names if stages is None or s in stages]
    unknown = sorted(set(stages or []) - set(names))
    if unknown:
        raise SystemExit(f"unknown stage(s): {', '.join(unknown)} (have: {', '.join(names)})")

    needed = names[: max(names.index(s) for s in chosen) + 1]  # the chosen stages and what they need
    durations: dict[str, float] = {}
    for stage in needed:  # the reference, stage by stage
        t = time.monotonic()
        proc = dvc(root, "repro", "--single-item", stage)
        durations[stage] = round(time.monotonic() - t, 2)
        print(f"reference {stage}: {durations[stage]} s", flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"the reference run failed at {stage}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    reference = {s: fingerprints(root, stage_outs(root, s)) for s in chosen}

    rng = random.Random(seed)
    report: dict[str, Any] = {}
    for stage in reversed(chosen):
        started = time.monotonic()
        rows = []
        for k in range(trials):
            delay = 0.9 * durations[stage] * (k + rng.random()) / trials  # 0.9: the -f run may be faster
            row = trial(root, stage, delay, reference[stage])
            rows.append(row)
            print(f"{stage} trial {k + 1}/{trials}: kill at {row['kill_at_s']} s (killed: {row['killed']}), "
                  f"rerun {'ok' if row['rerun_ok'] else 'FAILED'} ({row['how']}), equal {row['equal']}, "
                  f"half files {len(row['half_files'])}, temp files {len(row['temp_files'])}, "
                  f"status clean {row['status_clean']}" + (f", differs: {row['differs']}" if row["differs"] else ""),
                  flush=True)  # fmt: skip
        report[stage] = {
            "trials": trials,
            "kills": sum(r["killed"] for r in rows),
            "reruns_ok": sum(r["rerun_ok"] for r in rows),
            "resumed": sum(r["how"] == "resumed" for r in rows),
            "restarted": sum(r["how"] == "restarted" for r in rows),
            "equal": sum(r["equal"] for r in rows),
            "valid": sum(r["rerun_ok"] and not r["invalid"] for r in rows),
            "status_clean": sum(r["status_clean"] for r in rows),
            "half_files_found": sum(len(r["half_files"]) for r in rows),
            "temp_files_left": sum(len(r["temp_files"]) for r in rows),
            "dvc_state_repaired": sum(bool(r["dvc_state_repaired"]) for r in rows),
            "seconds": round(time.monotonic() - started, 1),
            "reference_seconds": durations[stage],
            "runs": rows,
        }
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"device": device_name(), "platform": platform.platform(), "python": platform.python_version()},
        "seed": seed,
        "trials_per_stage": trials,
        "convert_chunk_frames": CHUNK_FRAMES,
        "params": EXTRA_PARAMS | {"base": "tests/conftest.py TINY"},
        "totals": {key: sum(s[key] for s in report.values()) for key in COUNTS},
        "stages": {s: report[s] for s in chosen},
    }
    atomic_write_json(out, summary)
    if workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="kills per stage (default 5)")
    parser.add_argument("--stages", nargs="+", help="only these stages (default: all of dvc.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the JSON summary (default {OUT.relative_to(REPO)})")
    parser.add_argument("--workdir", type=Path, help="keep the project here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    summary = run_chaos(max(1, args.trials), args.stages, args.seed, args.out, args.workdir)
    totals = summary["totals"]
    print(json.dumps(totals))
    print(f"wrote {args.out}")
    whole = totals["half_files_found"] == 0 and totals["reruns_ok"] == totals["valid"] == totals["trials"]
    return 0 if whole else 1


if __name__ == "__main__":
    sys.exit(main())
