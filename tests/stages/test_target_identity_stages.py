"""profile@ID and convert pick the target's person by who it is: the real five-person sample
(../shared/samples/video_01.mp4) as the target, a reference crop of one guest as
`target.reference`. profile measures that guest alone; convert's choice is written to
data/convert/identity.json and identity.png; an unusable reference fails convert in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.stages.test_extract import REPO
from tests.stages.test_extract_identity import VIDEO, reference_crop

pytestmark = pytest.mark.skipif(not VIDEO.exists(), reason="../shared/samples/video_01.mp4 is absent")


def project(root: Path, reference: str | None, policy: str = "identity") -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["target"] = {"uri": str(VIDEO), "reference": reference}
    data["convert"].update({"policy": policy, "min_size": 20})
    data["profile"] = {"fps": 4}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def profile(root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "stages.profile", "src"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads((root / "data/profile/src/target.json").read_text())


def test_profile_measures_only_the_reference_person(tmp_path: Path) -> None:
    crop, _ = reference_crop(tmp_path)
    one = profile(project(tmp_path / "one", str(crop)))
    everyone = profile(project(tmp_path / "all", None, policy="all"))
    assert one["frames_sampled"] == everyone["frames_sampled"] >= 10
    assert len(one["samples"]["yaw"]) <= one["frames_sampled"] < len(everyone["samples"]["yaw"]) / 3


def test_convert_writes_who_it_replaces_and_refuses_a_bad_reference(tmp_path: Path) -> None:
    from facedag.params import load_params
    from facedag.records import StageFailed
    from stages.convert import target_person

    crop, _ = reference_crop(tmp_path)
    root = project(tmp_path / "p", str(crop))
    person = target_person(load_params(root / "params.yaml"), tmp_path / "out")
    report = json.loads((tmp_path / "out/identity.json").read_text())
    assert person is not None and report["mode"] == "reference" and report["identity"] == "dst"
    assert sum(g["kept"] for g in report["groups"]) == 1 and (tmp_path / "out/identity.png").stat().st_size > 1000
    root = project(tmp_path / "bad", str(tmp_path / "nobody.png"))
    with pytest.raises(StageFailed, match=r"target.reference: reference image .*nobody.png not found"):
        target_person(load_params(root / "params.yaml"), tmp_path / "out2")
    root = project(tmp_path / "largest", None, policy="largest")
    assert target_person(load_params(root / "params.yaml"), tmp_path / "out3") is None
    assert json.loads((tmp_path / "out3/identity.json").read_text())["mode"] == "policy:largest"
