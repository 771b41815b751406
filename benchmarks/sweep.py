"""A small `dvc exp` sweep of convert's knobs on real footage, scored by evaluate_video.

    python -m benchmarks.sweep setup [--workdir DIR] [--train-minutes 25]
    python -m benchmarks.sweep run [--workdir DIR] [--out benchmarks/sweep.json]
    python -m benchmarks.sweep models [--workdir DIR] [--train-minutes 25] [--only 'layout liae']

`setup` builds a throwaway DVC project (this code): `src` is the demo's astronaut clip
(public domain), `dst` and the target are ../shared/samples/video_02.mp4 (CC BY 2.0: hikers
walking toward the camera, moving light), and trains a 128 px model for `--train-minutes`
on this machine (the longest CPU run that fits; the figures name the device), then commits
the project so experiments can branch from it.

`run` refreshes the project's copy of the code and its params (this repository's, with the
project's footage and model size, so that "defaults" are this repository's), reruns the data
stages whose code changed and keeps the trained model, then runs one
`dvc exp run -S ... evaluate_video` per setting, changing one knob at a time from the
defaults: the colour mode, the mask kind, mask erosion, mask feather and temporal smoothing.
DVC reuses the trained model and reruns convert and evaluate_video.
It also scores the newest training checkpoint's raw weights against their moving average
(train.ema) on the held-out faces: the baseline for the weights the pipeline uses.
`models` sweeps the model's knobs (MODEL_SETTINGS: layout, adversarial loss, uniform yaw): it
retrains the defaults for `--train-minutes` from scratch, then trains one model per knob for the
same minutes in a clone of the project that shares its DVC cache, and scores each the same way
(plus held-out SSIM and the steps reached: on a shared CPU the same minutes are not the same
steps, so the table says both). Run it before `run`, which then varies convert on the retrained
defaults.
Writes `benchmarks/sweep.json` (atomically; each phase its own keys) and prints the tables the
README shows.
Needs ../shared/samples; not in CI (about a minute per setting on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import SAMPLES, device_name
from facedag.swap.colour import COLOUR
from facedag.swap.masks import MASKS

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
WORKDIR = Path("/tmp/facedag-sweep")
CODE = ("facedag", "stages", "flows")
# one knob at a time from the defaults (params.yaml's convert section)
SHIPPED_CONVERT = yaml.safe_load((REPO / "params.yaml").read_text())["convert"]
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    *[(f"colour {mode}", {"convert.colour": mode}) for mode in COLOUR.names() if mode != SHIPPED_CONVERT["colour"]],
    *[(f"mask {kind}", {"convert.mask": kind}) for kind in MASKS.names() if kind != SHIPPED_CONVERT["mask"]],
    ("erode 0.02", {"convert.mask_erode": 0.02}),
    ("erode 0.05", {"convert.mask_erode": 0.05}),
    ("feather 0.02", {"convert.mask_feather": 0.02}),
    ("feather 0.04", {"convert.mask_feather": 0.04}),
    ("feather 0.12", {"convert.mask_feather": 0.12}),
    ("smoothing off", {"convert.smooth_min_cutoff": 50.0, "convert.smooth_beta": 0.0}),
    ("smoothing strong", {"convert.smooth_min_cutoff": 0.1}),
]
# params.yaml values that suit the demo only (its comments say why): on real footage the sweep takes
# the code's defaults for them, so that its "defaults" row is what a user's own project starts from
DEMO_ONLY = {"train": ("lr",), "convert": ("mask_feather",)}


def _real_footage(params: dict[str, Any]) -> dict[str, Any]:
    """`params` (params.yaml's, parsed) with DEMO_ONLY's keys set to the code's defaults."""
    from facedag.params import Convert, Train

    sections = {"train": Train(), "convert": Convert()}
    for section, keys in DEMO_ONLY.items():
        for key in keys:
            params[section][key] = getattr(sections[section], key)
    return params


# The knobs that fix the project's model size and budget (setup's), kept when the params are refreshed
MODEL_SIZE = ("max_minutes", "max_steps", "encoder_width", "decoder_width", "bottleneck", "batch_size", "eval_every",
              "checkpoint_every", "preview_every")
# Model knobs: each trains its own model for the same minutes as the defaults' (`models`)
MODEL_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("layout liae", {"train.layout": "liae"}),
    # DeepFaceLab's "GAN power" 0.1, once the face is roughly learned (a third of an 8-minute CPU run)
    ("gan 0.1 from step 200", {"train.gan_weight": 0.1, "train.gan_start": 200}),
    ("uniform yaw", {"train.uniform_yaw": True}),
]
COLUMNS = ["id_retrieval", "id_margin", "pose_error", "expression_error", "flicker", "seam", "colour_gap",
           "detect_rate"]
MODEL_COLUMNS = ["steps", "held_out_ssim", *COLUMNS]


def _run(cwd: Path, *cmd: str, timeout: float = 7200) -> str:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(cwd.parent), "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1",
           "GIT_AUTHOR_NAME": "sweep", "GIT_AUTHOR_EMAIL": "sweep@localhost", "GIT_COMMITTER_NAME": "sweep",
           "GIT_COMMITTER_EMAIL": "sweep@localhost"}  # fmt: skip
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"sweep: `{' '.join(cmd)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _copy_code(root: Path) -> None:
    for name in CODE:
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")


def setup(workdir: Path, train_minutes: float) -> Path:
    """The project on the samples, trained; returns its root."""
    from facedag.records import sha256_file
    from facedag.sources.demo import build_all

    sample = SAMPLES / "video_02.mp4"
    if not sample.is_file():
        raise SystemExit(f"sweep: {sample} is missing (../shared/samples)")
    root = workdir / "project"
    shutil.rmtree(workdir, ignore_errors=True)
    root.mkdir(parents=True)
    _copy_code(root)
    for name in (".gitignore", ".dvcignore"):
        shutil.copy2(REPO / name, root / name)
    build_all(root / "data" / "demo")
    notice = root / "consent" / "samples-NOTICE.md"
    notice.parent.mkdir()
    shutil.copy2(SAMPLES / "NOTICE.md", notice)
    hikers = {"subject": "hikers in video_02.mp4 (Peter Stevens)", "basis": "licence",
              "evidence": "consent/samples-NOTICE.md", "evidence_sha256": sha256_file(notice),
              "scope": "facedag benchmarks"}  # fmt: skip
    params = _real_footage(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["identities"]["dst"] = {"consent": hikers, "sources": [{"uri": str(sample), "licence": "CC-BY-2.0"}]}
    params["target"] = {"uri": str(sample), "licence": "CC-BY-2.0", "consent": hikers}
    params["train"].update(max_minutes=train_minutes, max_steps=1_000_000, encoder_width=32, decoder_width=32,
                           bottleneck=256, batch_size=8, eval_every=100, checkpoint_every=200, preview_every=1000)
    params["render"]["preset"] = "veryfast"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(root, "git", "init", "-q")
    _run(root, str(VENV_BIN / "dvc"), "init", "-q")
    started = time.monotonic()
    print(_run(root, str(VENV_BIN / "dvc"), "repro", "evaluate_model")[-2000:], flush=True)
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "baseline")
    print(f"sweep: trained and committed in {time.monotonic() - started:.0f} s: {root}", flush=True)
    return root


def _refresh(root: Path, freeze: bool = True) -> None:
    """Bring the project's code and params up to this repository's (keeping its footage and model
    size), rerun the data stages whose code changed, and commit."""
    _copy_code(root)
    project = yaml.safe_load((root / "params.yaml").read_text())
    # this repository's params (so that "defaults" are its defaults, and keys it renamed since
    # setup are read as it reads them), with the project's footage and model size
    params = _real_footage(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["identities"], params["target"] = project["identities"], project["target"]
    params["train"].update({k: v for k, v in project["train"].items() if k in params["train"] and k in MODEL_SIZE})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = [f"{step}@{ident}" for step in ("profile", "dedupe") for ident in ("src", "dst")]
    print(_run(root, str(VENV_BIN / "dvc"), "repro", *data)[-1500:], flush=True)
    if freeze:
        # The trained model keeps what it learned (a sweep of convert's knobs must not retrain
        # for 25 minutes): train and evaluate_model are committed as they are, and frozen, so that
        # no experiment retrains it, whatever it decides about train's deps (DVC cannot freeze
        # `foreach` stages; the data stages were just reproduced)
        _run(root, str(VENV_BIN / "dvc"), "commit", "--force", "train", "evaluate_model")
        _run(root, str(VENV_BIN / "dvc"), "freeze", "train", "evaluate_model")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "code", "--allow-empty")


def sweep(workdir: Path, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    """One experiment per convert setting (those named in `only`, else all) on the project's
    trained model; their evaluate_video metrics as a table."""
    root = workdir / "project"
    _refresh(root)
    rows = []
    for name, changes in SETTINGS:
        if only and name not in only:
            continue
        started = time.monotonic()
        sets = [arg for key, value in changes.items() for arg in ("-S", f"{key}={value}")]
        exp = "sweep-" + "".join(c if c.isalnum() else "-" for c in name)
        # an experiment leaves its params in the workspace: start each from the committed defaults
        _run(root, "git", "checkout", "--", "params.yaml")
        _run(root, str(VENV_BIN / "dvc"), "exp", "run", "--name", exp, *sets, "evaluate_video")
        metrics = json.loads((root / "data" / "evaluate" / "video" / "metrics.json").read_text())
        rows.append({"setting": name, "params": changes, "seconds": round(time.monotonic() - started, 1),
                     **{k: metrics.get(k) for k in COLUMNS}})  # fmt: skip
        print(f"sweep: {name}: " + ", ".join(f"{k} {metrics.get(k)}" for k in COLUMNS), flush=True)
    model = json.loads((root / "data" / "evaluate" / "model" / "metrics.json").read_text())
    rows = _merge(out, "rows", rows, [name for name, _ in SETTINGS])
    report = _write(out, {"model": model, "weights": raw_vs_average(root), "rows": rows})
    print(table(rows))
    return report


def _write(out: Path, part: dict[str, Any]) -> dict[str, Any]:
    """Merge `part` into the report at `out` (the convert and the model sweeps each own their keys)
    and write it atomically."""
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.update(part, device=device_name(), date=datetime.now(UTC).isoformat(timespec="seconds"),
                  footage="src: demo astronaut; dst and target: ../shared/samples/video_02.mp4")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    return report


def _merge(out: Path, key: str, rows: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """`rows` with the report's earlier rows under `key` of settings not rerun this time (a sweep
    continued with --only), in `order`."""
    earlier = json.loads(out.read_text()).get(key, []) if out.is_file() else []
    names = {r["setting"] for r in rows}
    merged = [r for r in earlier if r["setting"] not in names] + rows
    return sorted(merged, key=lambda r: order.index(r["setting"]) if r["setting"] in order else len(order))


def _scores(root: Path) -> dict[str, Any]:
    """A trained project's evaluate_video columns, its held-out SSIM and how far training got."""
    video = json.loads((root / "data" / "evaluate" / "video" / "metrics.json").read_text())
    model = json.loads((root / "data" / "evaluate" / "model" / "metrics.json").read_text())
    record = json.loads((root / "models" / "model.json").read_text())
    return {**{k: video.get(k) for k in COLUMNS}, "held_out_ssim": model.get("mean_ssim"), "steps": record.get("step")}


def models(workdir: Path, out: Path, train_minutes: float, only: list[str] | None = None) -> dict[str, Any]:
    """Retrain the defaults, then one model per MODEL_SETTINGS row (those in `only`, else all), each
    for `train_minutes` from scratch, in a clone of the project that shares its DVC cache (the data
    stages are not rerun), and score each through convert and evaluate_video."""
    root = workdir / "project"
    dvc = str(VENV_BIN / "dvc")
    rows = []
    for name, changes in [("defaults", {}), *MODEL_SETTINGS]:
        if only and name not in only:
            continue
        if name == "defaults":
            _run(root, dvc, "unfreeze", "train", "evaluate_model")
            _refresh(root, freeze=False)
        started = time.monotonic()
        if changes:
            project = workdir / ("model-" + "".join(c if c.isalnum() else "-" for c in name))
            shutil.rmtree(project, ignore_errors=True)
            _run(workdir, "git", "clone", "-q", str(root), str(project))
            # the demo sources are built files (setup's), not outputs: the clone needs its own copy
            shutil.copytree(root / "data" / "demo", project / "data" / "demo")
            _run(project, dvc, "cache", "dir", str(root / ".dvc" / "cache"))
            _run(project, dvc, "config", "cache.type", "symlink")
            # what the defaults' run made (data stages, their model: replaced below); the stages
            # after evaluate_video never ran in the project and have nothing to check out
            _run(project, dvc, "checkout", "--quiet", "--with-deps", "evaluate_video", "evaluate_model")
            params = yaml.safe_load((project / "params.yaml").read_text())
            for key, value in changes.items():
                section, field = key.split(".")
                params[section][field] = value
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        else:
            project = root
        shutil.rmtree(project / "models", ignore_errors=True)  # from scratch: no checkpoint to resume
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["train"]["max_minutes"] = train_minutes
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _run(project, dvc, "repro", "evaluate_video", "evaluate_model")
        if project == root:  # the defaults' model is what the convert sweep then varies
            _run(root, "git", "add", "-A")
            _run(root, "git", "commit", "-qm", "defaults retrained", "--allow-empty")
        rows.append({"setting": name, "params": changes, "seconds": round(time.monotonic() - started, 1),
                     **_scores(project)})
        print(f"sweep: {name}: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items() if k in MODEL_COLUMNS),
              flush=True)
    rows = _merge(out, "model_rows", rows, [name for name, _ in [("defaults", {}), *MODEL_SETTINGS]])
    report = _write(out, {"model_rows": rows, "train_minutes": train_minutes})
    print(table(rows, MODEL_COLUMNS))
    return report


def raw_vs_average(root: Path) -> dict[str, Any]:
    """The newest checkpoint's raw weights and their moving average, each scored on the
    held-out faces (facedag.training.scoring.evaluate): {"step", "ema", "raw": {identity: {ssim, psnr,
    l1}}, "average": {...}}, or {} when the checkpoint has no average."""
    from facedag.training.checkpoint import list_checkpoints, load_checkpoint
    from facedag.training.dataset import load_dataset
    from facedag.training.losses import face_region
    from facedag.training.model import ModelConfig, build_model
    from facedag.training.scoring import evaluate

    checkpoints = list_checkpoints(root / "models" / "checkpoints")
    if not checkpoints:
        return {}
    state = load_checkpoint(checkpoints[0][1])
    if state.get("ema") is None:
        return {}
    cfg = ModelConfig.from_dict(state["config"])
    sets = load_dataset(root, list(cfg.identities), cfg.face_size)
    region = face_region(cfg.face_size)
    out: dict[str, Any] = {"step": int(state["step"]),
                           "ema": yaml.safe_load((root / "params.yaml").read_text())["train"].get("ema")}
    for name, weights in (("raw", state["model"]), ("average", state["ema"])):
        model = build_model(cfg)
        model.load_state_dict(weights)
        out[name] = evaluate(model, sets, region)
    return out


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """The sweep as a markdown table."""
    columns = columns or COLUMNS
    def cell(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| setting | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {r['setting']} | " + " | ".join(cell(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["setup", "run", "models"])
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--train-minutes", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "sweep.json")
    parser.add_argument("--only", action="append",
                        help="run only this setting (repeatable), e.g. 'mask hull'; `models` retrains the defaults "
                        "only when named or when no --only is given")
    args = parser.parse_args(argv)
    if args.phase == "setup":
        setup(args.workdir, args.train_minutes)
    elif args.phase == "models":
        models(args.workdir, args.out, args.train_minutes, args.only)
    else:
        sweep(args.workdir, args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
