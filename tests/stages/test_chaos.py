"""The CI version of `make chaos` (benchmarks/chaos.py): the real DAG through real DVC, every
stage of the `src` identity and every shared stage killed once with SIGKILL at a fixed point,
then rerun; nothing may be lost.

Fixed points, not timers (facedag.resume's FACEDAG_FAULT, test-only): extract@src after its
first clip's part, convert after its second chunk, train just before its second checkpoint
is moved into place, and every other stage just before its first file is moved into place
(its temp file whole, the output not yet there: the middle of an atomic write). The
`replace` points need an audit hook in the stage's process; a sitecustomize.py on PYTHONPATH
installs it (facedag.resume.arm_faults), so the stages run unchanged.

After each kill: DVC reports the stage killed (-9, or 137 through dash), and no output that exists is a half file.
After each rerun: exit 0, extract/convert/train say they resumed, every output parses, no
temp file is left beside or inside the outputs, `dvc status` is clean for the stage. At the
end the whole pipeline is up to date, and extract@src and convert run again uninterrupted
write exactly what the killed-and-resumed runs wrote.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from benchmarks.chaos import (
    EXTRA_PARAMS,
    dvc,
    fingerprints,
    invalid_files,
    stage_names,
    stage_outs,
    status_clean,
    temp_files,
    tool_env,
)
from facedag.resume import FAULT_ENV
from tests.conftest import TINY, deep_update, make_project

pytestmark = pytest.mark.slow

KILLS = {  # stage: its FACEDAG_FAULT point and count; the @dst variants run the same code and are not killed
    "download@src": "replace:1",
    "trim@src": "replace:1",
    "extract@src": "clip_done:1",
    "align@src": "replace:1",
    "dedupe@src": "replace:1",
    "train": "replace=step-*.pt:2",
    "convert": "chunk_done:2",
    "render": "replace:1",
    "report": "replace:1",
}
RESUMED = {  # what the rerun of a resumable stage says
    "extract@src": "resuming: 1 of 2 clips done",
    "train": "resumed from step 6",
    "convert": "resuming: 2 of ~4 chunks done",
}
# DVC runs a stage's cmd through $SHELL, else /bin/sh: bash execs the command and DVC sees -9;
# dash (CI's /bin/sh) waits on it and exits 128 + 9.
KILLED = re.compile(r"exited with (-9|137)\b")
SHIM = "import os\nif os.environ.get('FACEDAG_FAULT'):\n    from facedag.resume import arm_faults\n    arm_faults()\n"


def test_every_stage_killed_once_then_rerun_loses_nothing(tmp_path: Path, demo_sources: Path) -> None:
    params = deep_update(json.loads(json.dumps(TINY)), EXTRA_PARAMS)
    root = make_project(tmp_path / "proj", demo_sources, params)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    env = tool_env(PYTHONPATH=f"{shim}{os.pathsep}{root}")

    names = stage_names(root)
    assert set(KILLS) <= set(names)
    for stage in names:
        outs = stage_outs(root, stage)
        if stage in KILLS:
            killed = dvc(root, "repro", "--single-item", stage, env={**env, FAULT_ENV: f"{stage}:{KILLS[stage]}"})
            assert killed.returncode != 0 and KILLED.search(killed.stderr), (stage, killed.stderr[-1500:])
            assert invalid_files(root, outs) == {}, stage  # what is there is whole
        rerun = dvc(root, "repro", "--single-item", stage, env=env)
        log = rerun.stdout + rerun.stderr
        assert rerun.returncode == 0, (stage, log[-3000:])
        assert "Traceback" not in log, stage
        if stage in RESUMED:
            assert RESUMED[stage] in log, (stage, log[-1500:])
        assert invalid_files(root, outs) == {}, stage
        assert temp_files(root, outs) == [], stage  # a rerun leaves no temp file of the killed run
        assert status_clean(root, stage, env), stage
    assert json.loads(dvc(root, "status", "--json", env=env).stdout) == {}
    assert not (root / ".dvc" / "tmp" / "facedag-resume").exists() or not any(
        (root / ".dvc" / "tmp" / "facedag-resume").rglob("*.json")
    )  # every resume folder was cleared

    for stage in ("extract@src", "convert"):  # uninterrupted, for comparison
        outs = stage_outs(root, stage)
        resumed = fingerprints(root, outs)
        again = dvc(root, "repro", "--single-item", "--force", stage, env=env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert fingerprints(root, outs) == resumed, stage
        assert status_clean(root, stage, env), stage
