"""The flow's view of the DAG comes from DVC: the stage list, order and upstream closure."""

from __future__ import annotations

import pytest

from flows.dvc_graph import load_stages, ordered_steps, with_upstream
from tests.conftest import REPO

STEPS = ["download", "profile", "trim", "extract", "align", "dedupe", "train", "evaluate_model", "convert",
         "evaluate_video", "render", "report"]
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
    assert {"render", "convert", "train", "dedupe@src", "align@dst", "trim@src"} <= set(stages["report"].upstream)
    assert stages["extract@src"].metrics == ("data/extract/src/metrics.json",)


def test_a_half_written_dvc_rwlock_is_removed(tmp_path) -> None:
    """DVC rewrites .dvc/tmp/rwlock in place: a dvc killed mid-write leaves half a JSON document."""
    from flows.dvc_graph import repair_rwlock

    lock = tmp_path / ".dvc" / "tmp" / "rwlock"
    assert repair_rwlock(tmp_path) is False  # none there
    lock.parent.mkdir(parents=True)
    lock.write_text('{"read": {}, "write": {}}')
    assert repair_rwlock(tmp_path) is False and lock.exists()  # a whole one stays
    lock.write_text('{"read": {"/p/data": [{"pid": 1, "cmd": "dvc rep')
    assert repair_rwlock(tmp_path) is True and not lock.exists()
