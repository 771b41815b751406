"""The flow's view of the DAG comes from DVC: the stage list, order and upstream closure."""

from __future__ import annotations

import pytest

from flows.dvc_graph import load_stages, ordered_steps, with_upstream
from tests.conftest import REPO

STEPS = ["download", "profile", "trim", "extract", "align", "dedupe", "train", "evaluate_model", "convert",
         "evaluate_video", "render", "export", "report"]
PER_ID = ["download", "profile", "trim", "extract", "align", "dedupe"]


@pytest.fixture(scope="module")
def stages():
    return load_stages(REPO)


def test_all_steps_are_declared_per_identity(stages):
    assert {s.step for s in stages.values()} == set(STEPS)
    for step in PER_ID:
        assert {f"{step}@src", f"{step}@dst"} <= set(stages)


def test_steps_run_in_dag_order_and_ids_side_by_side(stages):
    groups = ordered_steps(stages)
    assert [g[0].split("@")[0] for g in groups] == STEPS
    assert groups[0] == ["download@dst", "download@src"]


def test_upstream_closure_follows_dvc_edges(stages):
    assert with_upstream(stages, ["extract@src"]) == {"download@src", "profile@src", "trim@src", "extract@src"}
    assert with_upstream(stages, ["trim"]) == {"download@src", "download@dst", "profile@src", "profile@dst",
                                               "trim@src", "trim@dst"}
    with pytest.raises(KeyError, match="no stage or step named"):
        with_upstream(stages, ["nope"])


def test_model_stages_follow_the_data_and_each_other(stages):
    assert not any(s.frozen for s in stages.values())
    assert set(stages["train"].upstream) == {"dedupe@src", "dedupe@dst"}
    assert stages["convert"].upstream == ("train",)
    assert {"convert", "train"} <= set(stages["render"].upstream)
    assert set(stages["export"].upstream) == {"convert", "render"}
    assert {"render", "convert", "train", "dedupe@src", "align@dst", "trim@src"} <= set(stages["report"].upstream)
    assert stages["extract@src"].metrics == ("data/extract/src/metrics.json",)


def test_half_written_dvc_files_are_repaired(tmp_path) -> None:
    """DVC rewrites .dvc/tmp/rwlock and dvc.lock in place: a dvc killed mid-write leaves half a file."""
    from flows.dvc_graph import LOCK_BACKUP, repair_dvc_state

    assert repair_dvc_state(tmp_path) == []  # nothing there
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True)
    rwlock.write_text('{"read": {}, "write": {}}')
    lock = tmp_path / "dvc.lock"
    whole = "schema: '2.0'\nstages:\n  train:\n    cmd: python -m stages.train\n"
    lock.write_text(whole)
    assert repair_dvc_state(tmp_path) == [] and rwlock.exists()  # whole files stay; dvc.lock is copied
    assert (tmp_path / LOCK_BACKUP).read_text() == whole

    rwlock.write_text('{"read": {"/p/data": [{"pid": 1, "cmd": "dvc rep')
    lock.write_text("schema: '2.0'\nstages:\n  train:\n    cmd: [python")  # cut inside a list: not YAML
    repairs = repair_dvc_state(tmp_path)
    assert len(repairs) == 2 and not rwlock.exists() and lock.read_text() == whole

    lock.write_text("schema: '2.0'\nstages:\n  train:\n")  # cut short but still YAML: DVC's schema refuses it
    assert repair_dvc_state(tmp_path) and lock.read_text() == whole

    lock.write_text("")  # truncated to nothing
    assert repair_dvc_state(tmp_path) and lock.read_text() == whole
