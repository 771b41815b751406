"""facedag.preflight on a real demo project: each bad-params case gives exactly one line that
names the key, before any work; a good project passes; the command line prints the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from facedag.preflight import TARGET_SAMPLES, preflight
from tests import badinputs as bad
from tests.conftest import REPO, deep_update, make_project


@pytest.fixture(scope="module")
def project(demo_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo project (its params.yaml, clips and consent evidence), plus a face-less target and a text file."""
    root = make_project(tmp_path_factory.mktemp("preflight"), demo_sources)
    bad.no_faces(root / "data" / "other")
    bad.text_file(root / "data" / "other")
    return root


def _variant(project: Path, name: str, changes: dict[str, Any] | None = None, text: str | None = None) -> str:
    """Write params `name` (the project's params.yaml with `changes` merged in, or `text` as is)."""
    if text is None:
        data = yaml.safe_load((project / "params.yaml").read_text())
        text = yaml.safe_dump(deep_update(data, changes or {}), sort_keys=False)
    (project / name).write_text(text)
    return name


def _one_line(problems: list[str], *needles: str) -> str:
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line and all(n in line for n in needles), line
    return line


def test_the_demo_project_passes(project: Path) -> None:
    assert preflight(root=project) == []


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"base": {"face_size": "big"}}, "base.face_size"),
        ({"render": {"label": "perhaps"}}, "render.label"),
        ({"download": {"max_sid": 3}}, "download.max_sid"),
        ({"identities": {"dst": {"sources": []}}}, "identities.dst.sources"),
        ({"identities": {"dst": {"sources": [{"path": "data/demo/dst.mp4"}]}}}, "identities.dst.sources[0].uri"),
    ],
    ids=["wrong_type", "wrong_bool", "unknown_key", "no_sources", "source_without_uri"],
)
def test_schema_errors_name_the_key(project: Path, changes: dict[str, Any], key: str) -> None:
    line = _one_line(preflight(_variant(project, "p.yaml", changes), root=project), key)
    assert line.startswith(f"{project / 'p.yaml'}: {key}: "), line


def test_bad_yaml(project: Path) -> None:
    name = _variant(project, "broken.yaml", text="identities: {src: [unclosed\n")
    _one_line(preflight(name, root=project), "broken.yaml", "not valid YAML")


def test_missing_source_file(project: Path) -> None:
    sources = [{"uri": "data/demo/src.mp4"}, {"uri": "data/demo/nope.mp4"}]
    name = _variant(project, "p.yaml", {"identities": {"src": {"sources": sources}}})
    line = _one_line(preflight(name, root=project), "identities.src.sources[1].uri", "file not found", "nope.mp4")
    assert line.startswith("identities.src.sources[1].uri: ")


def test_urls_are_not_fetched_but_their_scheme_is_checked(project: Path) -> None:
    sources = [{"uri": "https://host.invalid/clip.mp4"}, {"uri": "ftp://host.invalid/clip.mp4"}]
    name = _variant(project, "p.yaml", {"identities": {"src": {"sources": sources}}})
    _one_line(preflight(name, root=project), "identities.src.sources[1].uri", "unsupported URL scheme 'ftp'")


def test_a_cut_that_ends_before_it_starts(project: Path) -> None:
    sources = [{"uri": "data/demo/src.mp4", "start": 4.0, "end": 2.0}]
    name = _variant(project, "p.yaml", {"identities": {"src": {"sources": sources}}})
    _one_line(preflight(name, root=project), "identities.src.sources[0].end", "not after start 4")


def test_target_with_no_face(project: Path) -> None:
    name = _variant(project, "p.yaml", {"target": {"uri": "data/other/no_faces.mp4"}})
    line = _one_line(preflight(name, root=project), "target.uri")
    assert line.startswith(f"target.uri: no face found in {TARGET_SAMPLES} sampled frames"), line
    assert preflight(name, root=project, check_target_face=False) == []


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("data/other/missing.mp4", "file not found"),
        ("data/other/notes.mp4", "not_a_video"),
        ("https://host.invalid/t.mp4", "must be a local file"),
    ],
    ids=["missing", "not_a_video", "url"],
)
def test_target_that_cannot_be_read(project: Path, uri: str, says: str) -> None:
    name = _variant(project, "p.yaml", {"target": {"uri": uri}})
    line = _one_line(preflight(name, root=project), "target.uri", says)
    assert line.startswith("target.uri: ")


@pytest.mark.parametrize("key", ["swap_to", "replace"])
def test_convert_names_an_unknown_identity(project: Path, key: str) -> None:
    name = _variant(project, "p.yaml", {"convert": {key: "nobody"}})
    _one_line(preflight(name, root=project), f"convert.{key}", "'nobody'", "have: src, dst")


def test_missing_consent_of_the_swapped_identity(project: Path) -> None:
    data = yaml.safe_load((project / "params.yaml").read_text())
    del data["identities"]["src"]["consent"]
    name = _variant(project, "p.yaml", text=yaml.safe_dump(data))
    _one_line(preflight(name, root=project), "identities.src.consent", "no consent record")


def test_several_problems_one_line_each(project: Path) -> None:
    data = yaml.safe_load((project / "params.yaml").read_text())
    del data["target"]["consent"]
    data["identities"]["dst"]["sources"] = [{"uri": "gone.mp4"}]
    data["convert"] = {"replace": "nobody"}
    problems = preflight(_variant(project, "p.yaml", text=yaml.safe_dump(data)), root=project)
    assert [p.split(":", 1)[0] for p in problems] == ["identities.dst.sources[0].uri", "convert.replace",
                                                      "target.consent"], problems  # fmt: skip


def test_command_line(project: Path) -> None:
    """`python -m facedag.preflight`: exit 1 with one line and no traceback, or exit 0."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    name = _variant(project, "cli.yaml", {"download": {"max_sid": 3}})
    cmd = [sys.executable, "-m", "facedag.preflight", "--root", str(project)]
    proc = subprocess.run([*cmd, "--params", name], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"preflight: {project / name}: download.max_sid: "), proc.stderr
    ok = subprocess.run([*cmd, "--no-face"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "preflight: ok" and not ok.stderr, ok.stderr
