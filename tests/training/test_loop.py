"""The training loop in-process on tiny real data (two demo portraits aligned a few ways):
outputs, dvclive curves that continue across runs, raising max_steps continues the run, a data
change starts fresh with the old checkpoints moved aside; the held-out split read from dedupe's
files; the best checkpoint (planted scores, and a real run), early stopping on a plateau, a
resume that keeps a better best, and the weight average that is scored, saved and resumed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from facedag.params import Params
from facedag.records import StageFailed
from facedag.sources.demo import write_evidence
from facedag.training.average import WeightAverage
from facedag.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from facedag.training.dataset import dataset_hash, dataset_path, holdout_path, load_dataset
from facedag.training.loop import train
from facedag.training.model import ModelConfig, build_model
from facedag.training.portrait_set import write_portrait_dataset
from facedag.training.scoring import BestTracker

REPO = Path(__file__).resolve().parents[2]
FACE = 32
TINY_TRAIN = {"max_steps": 6, "batch_size": 4, "encoder_width": 8, "decoder_width": 8, "bottleneck": 16,
              "checkpoint_every": 3, "eval_every": 3, "preview_every": 3, "keep_checkpoints": 2}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/dedupe/{src,dst}/ at 32 px: dataset.parquet 3 tracks x 4 faces, holdout.parquet a 4th track."""
    root = tmp_path_factory.mktemp("tinydata")
    for name, portrait in (("src", "astronaut"), ("dst", "grace_hopper")):
        write_portrait_dataset(dataset_path(root, name), portrait, FACE, tracks=3, per_track=4, seed=1)
        write_portrait_dataset(holdout_path(root, name), portrait, FACE, tracks=1, per_track=4, seed=2, first_track=3)
    return root


def tiny_project(root: Path, data: Path, train: dict[str, Any] | None = None) -> Path:
    """A project folder: params.yaml (this repo's, tiny train/base) and the tiny data."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"] = {**params.get("base", {}), "face_size": FACE}
    params["train"] = {**TINY_TRAIN, **(train or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(data / "data", root / "data", dirs_exist_ok=True)
    write_evidence(root / "data" / "demo")  # the consent records' evidence, where params.yaml names it
    return root


def load(root: Path) -> Params:
    return Params.model_validate(yaml.safe_load((root / "params.yaml").read_text()))


def with_train(params: Params, **train: Any) -> Params:
    """`params` with train settings that params.yaml may not know yet (patience, min_delta)."""
    return params.model_copy(update={"train": params.train.model_copy(update=train)})


def test_dataset_reads_dedupes_split(tmp_path: Path, tiny_data: Path) -> None:
    sets = load_dataset(tiny_data, ["src", "dst"], FACE)
    for fs in sets.values():
        assert fs.images.shape == (16, 3, FACE, FACE) and not fs.holdout_is_train
        held = {fs.groups[i].split("#")[0] for i in fs.holdout_idx.tolist()}
        trained = {fs.groups[i].split("#")[0] for i in fs.train_idx.tolist()}
        assert len(held) == 1 and len(trained) == 3 and not held & trained
        assert len(fs.holdout_idx) == 4 and len(fs.train_idx) == 12

    root = tmp_path / "d"
    shutil.copytree(tiny_data / "data", root / "data")
    before = dataset_hash(root, ["src", "dst"], FACE)
    write_portrait_dataset(holdout_path(root, "dst"), "grace_hopper", FACE, tracks=1, per_track=3, seed=5,
                           first_track=3)
    assert dataset_hash(root, ["src", "dst"], FACE) != before  # the hash covers holdout.parquet

    holdout_path(root, "src").unlink()  # no held-out set: scored on training faces, and it says why
    fs = load_dataset(root, ["src"], FACE)["src"]
    assert fs.holdout_is_train and "holdout.parquet" in fs.note
    assert set(fs.holdout_idx.tolist()) <= set(fs.train_idx.tolist())

    write_portrait_dataset(holdout_path(root, "src"), "astronaut", FACE, tracks=1, per_track=2, first_track=0)
    with pytest.raises(StageFailed, match=r"clip astronaut_0000\.mp4 .* both in"):
        load_dataset(root, ["src"], FACE)


def test_best_tracker_picks_the_planted_best_and_stops_on_a_plateau() -> None:
    tracker = BestTracker(patience=2, min_delta=0.0)
    news = [tracker.offer(step, score) for step, score in ((50, 0.5), (100, 0.8), (150, 0.7), (200, 0.75))]
    assert news == [True, True, False, False]
    assert (tracker.step, tracker.score) == (100, 0.8) and tracker.exhausted

    # tiny gains still replace the best, but do not reset patience; a NaN improves nothing
    tracker = BestTracker(patience=3, min_delta=0.01)
    for step, score in ((1, 0.5), (2, 0.6), (3, 0.6005), (4, float("nan")), (5, 0.601)):
        tracker.offer(step, score)
    assert (tracker.step, tracker.score, tracker.waited) == (5, 0.601, 3) and tracker.exhausted
    # an off-schedule evaluation (a stop between evaluations) may keep a best but counts for no patience
    tracker = BestTracker(patience=1, min_delta=0.0)
    tracker.offer(10, 0.5)
    assert tracker.offer(13, 0.4, scheduled=False) is False and not tracker.exhausted
    assert tracker.offer(14, 0.9, scheduled=False) is True and tracker.waited == 0
    restored = BestTracker(patience=1, min_delta=0.0)
    restored.load_state_dict(tracker.state_dict())
    assert restored == tracker
    assert BestTracker(patience=0, min_delta=0.0).exhausted is False


def test_train_outputs_curves_and_continue(tmp_path: Path, tiny_data: Path) -> None:
    root = tiny_project(tmp_path / "p", tiny_data)
    logs: list[str] = []
    r = train(load(root), root, logs.append)
    assert (r.step, r.resumed_from, r.stopped) == (6, None, "max_steps")
    models = root / "models"
    record = json.loads((models / "model.json").read_text())
    assert record["step"] == 6 and record["identities"] == ["src", "dst"] and record["dataset_hash"]
    assert (models / "model.safetensors").stat().st_size > 0
    assert sorted(p.name for p in (models / "checkpoints").glob("step-*.pt")) == [
        "step-000000003.pt", "step-000000006.pt"]
    assert {p.name for p in (models / "previews").iterdir()} >= {"step-000000003.png", "step-000000006.png",
                                                                   "latest.png"}
    assert any("EG/s" in line and "min left" in line and "loss src" in line for line in logs)
    # the best of the evaluations at steps 3 and 6, loadable with safetensors, its record beside it
    best = json.loads((models / "best.json").read_text())
    scores = {int(row.split("\t")[0]): float(row.split("\t")[1]) for row in
              (models / "live/plots/metrics/score_holdout.tsv").read_text().splitlines()[1:]}
    assert set(scores) == {3, 6} and best["step"] == max(scores, key=scores.__getitem__)
    assert best["info"]["score"] == pytest.approx(scores[best["step"]], abs=1e-6)
    assert (r.best_step, r.best_score) == (best["step"], best["info"]["score"])
    assert set(best["info"]["held_out"]["src"]) == {"ssim", "psnr", "l1"} and best["info"]["holdout_is_train"] == []
    weights = load_file(str(models / "best.safetensors"))
    assert weights.keys() == load_file(str(models / "model.safetensors")).keys()
    assert record["info"]["best"] == {"step": best["step"], "score": best["info"]["score"]}
    assert record["info"]["stopped_early"] is False

    # raising max_steps continues the same run; the dvclive curves continue with it
    params = load(root)
    params.train.max_steps = 9
    logs.clear()
    r = train(params, root, logs.append)
    assert (r.step, r.resumed_from) == (9, 6) and "resumed from step 6" in logs
    steps = [int(line.split("\t")[0]) for line in
             (models / "live/plots/metrics/loss/src.tsv").read_text().splitlines()[1:]]
    assert steps == [3, 6, 9]
    summary = json.loads((models / "live/metrics.json").read_text())
    assert summary["step"] == 9 and set(summary["ssim_holdout"]) == {"src", "dst"}

    # a data change: fresh start, old checkpoints and curves moved aside, not deleted
    write_portrait_dataset(dataset_path(root, "dst"), "grace_hopper", FACE, tracks=2, per_track=3, seed=9)
    logs.clear()
    r = train(params, root, logs.append)
    assert r.resumed_from is None and r.step == 9
    assert any(line.startswith("starting fresh") and "dataset changed" in line for line in logs)
    stale = list((models / "checkpoints").glob("stale-*"))
    assert len(stale) == 1 and (stale[0] / "live").is_dir() and len(list(stale[0].glob("step-*.pt"))) == 2
    assert (stale[0] / "best.safetensors").exists()  # the old run's best went aside with it
    assert json.loads((models / "best.json").read_text())["dataset_hash"] != best["dataset_hash"]


def test_patience_stops_on_a_plateau_and_the_stop_holds(tmp_path: Path, tiny_data: Path) -> None:
    """min_delta 1 plants a plateau: after the first evaluation no SSIM gain can count."""
    root = tiny_project(tmp_path / "p", tiny_data, {"max_steps": 12, "checkpoint_every": 100})
    params = with_train(load(root), patience=1, min_delta=1.0)
    logs: list[str] = []
    r = train(params, root, logs.append)
    assert (r.step, r.stopped) == (6, "patience")  # evaluations at 3 (the first) and 6 (no gain of 1)
    assert any(line.startswith("stopping early at step 6") for line in logs)
    record = json.loads((root / "models/model.json").read_text())
    assert record["info"]["stopped_early"] is True and record["step"] == 6
    assert load_checkpoint(list_checkpoints(root / "models/checkpoints")[0][1])["early_stop"]["step"] == 6

    logs.clear()  # the same params: it does not train on
    r = train(params, root, logs.append)
    assert (r.step, r.steps_run, r.stopped) == (6, 0, "patience")
    assert any(line.startswith("not training on: stopped early at step 6") for line in logs)

    logs.clear()  # raising max_steps gives a fresh patience window: one more evaluation, then stop again
    r = train(with_train(params, max_steps=15), root, logs.append)
    assert (r.resumed_from, r.step, r.stopped) == (6, 9, "patience")
    assert any("continuing after the early stop at step 6" in line for line in logs)

    r = train(with_train(params, max_steps=15, patience=0), root, logs.append)  # patience off: to max_steps
    assert (r.step, r.stopped) == (15, "max_steps")
    assert json.loads((root / "models/model.json").read_text())["info"]["stopped_early"] is False


def test_resume_keeps_a_better_best(tmp_path: Path, tiny_data: Path) -> None:
    root = tiny_project(tmp_path / "p", tiny_data, {"max_steps": 3})
    models = root / "models"
    train(load(root), root, lambda _: None)
    # plant a best no later evaluation can beat in the checkpoint
    state = load_checkpoint(list_checkpoints(models / "checkpoints")[0][1])
    assert state["best"]["step"] == 3
    state["best"] = {**state["best"], "score": 0.999}
    save_checkpoint(models / "checkpoints", state, keep=2)
    best_bytes = (models / "best.safetensors").read_bytes()
    r = train(with_train(load(root), max_steps=6), root, lambda _: None)
    assert r.resumed_from == 3 and (r.best_step, r.best_score) == (3, 0.999)
    assert (models / "best.safetensors").read_bytes() == best_bytes  # not replaced by a worse one
    # without the best files (deleted by hand), the next evaluation writes a new one and says so
    (models / "best.safetensors").unlink()
    logs: list[str] = []
    r = train(with_train(load(root), max_steps=9), root, logs.append)
    assert any(line.startswith("warning:") and "best.safetensors is missing" in line for line in logs)
    assert r.best_step == 9 and torch.equal(load_file(str(models / "best.safetensors"))["decoders.src.rgb.bias"],
                                             load_file(str(models / "model.safetensors"))["decoders.src.rgb.bias"])


def test_weight_average_warms_up_then_follows_the_decay() -> None:
    cfg = ModelConfig(FACE, 4, 4, 8, ("src", "dst"))
    trained = build_model(cfg)
    assert WeightAverage(trained, 0.0).model is trained  # ema 0: the raw weights, nothing copied
    average = WeightAverage(trained, 0.99)
    assert average.model is not trained and not any(p.requires_grad for p in average.model.parameters())
    start = [p.detach().clone() for p in trained.parameters()]
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    average.update(trained, 1)  # warm-up: decay (1 + 1) / (10 + 1), not 0.99
    for a, s0 in zip(average.model.parameters(), start, strict=True):
        assert torch.allclose(a, s0 + 1.0 - 2 / 11, atol=1e-6)
    average.update(trained, 10_000)  # past the warm-up: 0.99
    for a, s0 in zip(average.model.parameters(), start, strict=True):
        assert torch.allclose(a, s0 + 1.0 - 0.99 * 2 / 11, atol=1e-5)


def test_the_average_is_saved_checkpointed_and_resumed(tmp_path: Path, tiny_data: Path) -> None:
    root = tiny_project(tmp_path / "p", tiny_data, {"ema": 0.9, "deterministic": True})
    logs: list[str] = []
    train(load(root), root, logs.append)
    models = root / "models"
    state = load_checkpoint(list_checkpoints(models / "checkpoints")[0][1])
    saved = load_file(str(models / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in state["ema"].items())  # the average is what is saved ...
    assert not all(torch.equal(saved[k], v) for k, v in state["model"].items())  # ... not the raw weights
    assert json.loads((models / "model.json").read_text())["info"]["ema"] == 0.9

    # killed and resumed at step 3 == uninterrupted: the average goes on from the checkpoint's
    partial = tiny_project(tmp_path / "q", tiny_data, {"ema": 0.9, "deterministic": True, "max_steps": 3})
    train(load(partial), partial, logs.append)
    train(with_train(load(partial), max_steps=6), partial, logs.append)
    resumed = load_file(str(partial / "models" / "model.safetensors"))
    assert all(torch.equal(resumed[k], v) for k, v in saved.items())

    # a checkpoint without an average (ema 0) resumed with one: it starts from the weights, and says so
    raw = tiny_project(tmp_path / "r", tiny_data, {"ema": 0.0, "max_steps": 3})
    train(load(raw), raw, logs.append)
    assert load_checkpoint(list_checkpoints(raw / "models" / "checkpoints")[0][1])["ema"] is None
    logs.clear()
    train(with_train(load(raw), ema=0.9, max_steps=6), raw, logs.append)
    assert "the checkpoint has no weight average: starting it from its weights" in logs


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(tmp_path: Path, tiny_data: Path) -> None:
    """A checkpoint as a CUDA run wrote it before augmentation drew on the CPU (a 16-byte Philox
    generator state where a CPU one takes 5056 bytes, two GPUs' global states) resumes here and
    says so, instead of crashing on every rerun."""
    root = tiny_project(tmp_path / "p", tiny_data, {"max_steps": 3, "deterministic": True})
    train(load(root), root, lambda _: None)
    ckpts = root / "models" / "checkpoints"
    state = load_checkpoint(list_checkpoints(ckpts)[0][1])
    assert state["device"] == "cpu" and state["augment_rng"].numel() == torch.Generator().get_state().numel()
    cuda_state = torch.tensor(list(range(16)), dtype=torch.uint8)  # seed (8 bytes) + offset (8 bytes)
    with pytest.raises(RuntimeError, match="CPUGeneratorImplState"):  # what resuming used to do
        torch.Generator().set_state(cuda_state)
    state.update(device="cuda", augment_rng=cuda_state, rng={**state["rng"], "cuda": [cuda_state, cuda_state]})
    save_checkpoint(ckpts, state, keep=2)
    logs: list[str] = []
    r = train(with_train(load(root), max_steps=6), root, logs.append)
    assert (r.resumed_from, r.step, r.stopped) == (3, 6, "max_steps")
    assert "resumed from step 3 (checkpoint written on cuda, resumed on cpu)" in logs
    assert any("augmentation generator state (16 bytes) is another device's" in line for line in logs)
    assert any("2 CUDA generator state(s) are not restored: no GPU here" in line for line in logs)

    # a checkpoint from a GPU run of this version (CPU augmentation state, device cuda) resumes to the bit
    whole = tiny_project(tmp_path / "w", tiny_data, {"max_steps": 6, "deterministic": True})
    train(load(whole), whole, lambda _: None)
    part = tiny_project(tmp_path / "q", tiny_data, {"max_steps": 3, "deterministic": True})
    train(load(part), part, lambda _: None)
    qckpts = part / "models" / "checkpoints"
    state = load_checkpoint(list_checkpoints(qckpts)[0][1])
    state.update(device="cuda", rng={**state["rng"], "cuda": [cuda_state]})
    save_checkpoint(qckpts, state, keep=2)
    train(with_train(load(part), max_steps=6), part, lambda _: None)
    a, b = load_file(str(whole / "models/model.safetensors")), load_file(str(part / "models/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cadence_fires_on_steps_or_minutes() -> None:
    from facedag.training.loop import Cadence

    by_steps = Cadence(5, 0.0)
    assert [s for s in range(1, 16) if by_steps.due(s)] == [5, 10, 15]
    by_time = Cadence(10**9, 1e-4)  # 6 ms
    assert not by_time.due(1)
    time.sleep(0.02)
    assert by_time.due(2) and not by_time.due(3)  # it fired, and the clock starts again


def plant_yaw(root: Path) -> None:
    """Give the project's training faces a spread of yaws (the portrait set is all frontal): a
    few turned each way, most frontal, as footage is."""
    for name in ("src", "dst"):
        path = dataset_path(root, name)
        table = pq.read_table(path)
        yaw = [-50.0, 55.0] + [0.0] * (table.num_rows - 2)
        table = table.set_column(table.schema.get_field_index("yaw"), "yaw", pa.array(yaw, pa.float32()))
        pq.write_table(table, path)


def test_gan_and_uniform_yaw_resume_to_the_bit(tmp_path: Path, tiny_data: Path) -> None:
    """The adversarial loss on from step 1 and yaw-bin batches: the discriminators are in the
    checkpoint, and a run stopped at step 3 (as a kill after that checkpoint leaves it) and
    resumed ends equal (torch.equal) to an uninterrupted one; a checkpoint written with the GAN
    off resumes with it on from fresh discriminators, and says so."""
    gan = {"deterministic": True, "gan_weight": 0.1, "gan_start": 1, "uniform_yaw": True, "yaw_bins": 5}
    logs: list[str] = []
    full = tiny_project(tmp_path / "full", tiny_data, gan)
    plant_yaw(full)
    train(load(full), full, logs.append)
    assert "src: training faces per yaw bin [1, 0, 10, 0, 1] (uniform_yaw: non-empty bins drawn evenly)" in logs
    assert any(line.startswith("adversarial loss: weight 0.1 from step 1") for line in logs)
    state = load_checkpoint(list_checkpoints(full / "models" / "checkpoints")[0][1])
    assert state["step"] == 6 and state["gan"]["optimizer"]["state"]
    assert {"nets.src.net.0.weight", "nets.dst.net.0.weight"} <= set(state["gan"]["nets"])
    assert "gan" not in state["config"]  # not part of the model: changing it continues the generator
    summary = json.loads((full / "models" / "live" / "metrics.json").read_text())
    assert summary["loss"]["disc"]["src"] > 0  # the discriminators' curves beside the reconstruction's

    part = tiny_project(tmp_path / "part", tiny_data, {**gan, "max_steps": 3})
    plant_yaw(part)
    train(load(part), part, logs.append)
    logs.clear()
    train(with_train(load(part), max_steps=6), part, logs.append)
    assert "resumed from step 3" in logs and not any("reseeded" in line or "fresh" in line for line in logs)
    resumed = load_checkpoint(list_checkpoints(part / "models" / "checkpoints")[0][1])
    for key in ("model", "ema"):
        assert all(torch.equal(resumed[key][k], v) for k, v in state[key].items()), key
    assert all(torch.equal(resumed["gan"]["nets"][k], v) for k, v in state["gan"]["nets"].items())
    saved = load_file(str(full / "models" / "model.safetensors"))
    again = load_file(str(part / "models" / "model.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in saved.items())

    off = tiny_project(tmp_path / "off", tiny_data, {"deterministic": True, "max_steps": 3})
    train(load(off), off, logs.append)
    assert load_checkpoint(list_checkpoints(off / "models" / "checkpoints")[0][1])["gan"] is None
    logs.clear()
    train(with_train(load(off), max_steps=4, gan_weight=0.1), off, logs.append)
    assert "the checkpoint has no discriminator state (written with train.gan_weight 0): " \
           "starting fresh discriminators" in logs
    assert "resumed from step 3" in logs  # the generator goes on: gan settings are not the model's
