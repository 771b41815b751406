"""The HTML report (facedag.report.html, stages/report.py), built by `dvc repro` from a real
tiny run of the whole DAG: every section is there, every image is a file inside data/report
that decodes, user text is escaped, a partial run gives notes instead of a crash, and a
rebuild replaces the folder whole."""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from facedag.report import html as report_html
from facedag.report.html import write_report
from facedag.sources.demo import RECIPES, write_evidence
from facedag.sources.demo import build as build_clip
from tests.conftest import TINY, VENV_BIN, deep_update, make_project, tool_env

pytestmark = pytest.mark.slow
IDS = ["src", "dst"]
PER_IDENTITY = ["pose-lighting", "kept-faces", "rejected-faces", "stage-rejections", "trim-coverage", "target-gaps",
                "identity-groups"]
GLOBAL = ["summary", "curves", "timelapse", "quality", "frame-curves", "target-identity", "identity-curve",
          "before-after", "provenance"]

# The stage as proposed for dvc.yaml (added to the temp project's dvc.yaml until the real one has it).
REPORT_STAGE = """
  report:
    cmd: python -m stages.report
    deps:
      - data/download
      - data/trim
      - data/extract
      - data/align
      - data/dedupe
      - models/live
      - models/previews
      - data/convert/frames.parquet
      - data/render
      - ${target.uri}
      - stages/report.py
      - facedag/report/html.py
      - facedag/sources/media.py
      - facedag/tables.py
      - facedag/records.py
      - facedag/params.py
      - facedag/stagekit.py
    params:
      - identities
      - target.uri
    outs:
      - data/report
"""

_BUILT: dict[str, Path] = {}


def run_bounded(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in its own process group; on a timeout or an error the whole group is killed."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def build_report_project(factory: pytest.TempPathFactory) -> Path:
    """A tiny real run of the whole DAG plus the report stage, built once per test session (the
    browser test reuses it). The demo clips are cut to 3 s and dedupe keeps 5 faces, so the run is
    quick and dedupe rejects faces for both reasons the sheets show (near-duplicates, over budget)."""
    if "root" not in _BUILT:
        demo = factory.mktemp("report-demo")
        for recipe in RECIPES:
            build_clip(dataclasses.replace(recipe, seconds=3.0), demo)
        write_evidence(demo)  # the consent records' evidence
        root = make_project(factory.mktemp("report") / "proj", demo,
                            deep_update(copy.deepcopy(TINY), {"dedupe": {"max_faces": 1}}))
        dvc_yaml = root / "dvc.yaml"
        if "report" not in (yaml.safe_load(dvc_yaml.read_text()).get("stages") or {}):
            dvc_yaml.write_text(dvc_yaml.read_text().rstrip("\n") + "\n" + REPORT_STAGE)
        done = run_bounded([str(VENV_BIN / "dvc"), "repro"], root, timeout=900)
        assert done.returncode == 0 and "Running stage 'report'" in done.stdout, done.stdout[-4000:]
        _BUILT["root"] = root
    return _BUILT["root"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report_project(tmp_path_factory)


class Page(HTMLParser):
    """Tags, attributes, and the images of each section (by its data-section key, in order)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[tuple[str, list[str], list[str]]] = []  # key, img srcs, notes
        self._note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.sections.append((a.get("data-section") or "", [], []))
        elif tag == "img" and self.sections:
            self.sections[-1][1].append(a.get("src") or "")
        elif tag == "p" and a.get("class") == "note":
            self._note = True

    def handle_data(self, data: str) -> None:
        if self._note and self.sections:
            self.sections[-1][2].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._note = False


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode_src(folder: Path, src: str) -> Image.Image:
    """The image behind `src`: a data: URI, or a relative file that must stay inside `folder`."""
    if src.startswith("data:image/"):
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
    else:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/"), f"not relative: {src}"
        path = (folder / src).resolve()
        assert path.is_relative_to(folder.resolve()), f"outside the report folder: {src}"
        data = path.read_bytes()
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.width > 0 and img.height > 0
    return img


def test_stage_builds_the_report_of_a_real_run(project: Path) -> None:
    report = project / "data" / "report"
    page = parse(report / "index.html")
    keys = [key for key, _, _ in page.sections]
    assert keys == ["summary", *PER_IDENTITY * len(IDS), *GLOBAL[1:]]
    by_key: dict[str, list[tuple[list[str], list[str]]]] = {}
    for key, srcs, notes in page.sections:
        by_key.setdefault(key, []).append((srcs, notes))
        assert not any("could not build" in n or "missing" in n for n in notes), (key, notes)

    srcs = [s for _, ss, _ in page.sections for s in ss]
    assert srcs and len(set(srcs)) == len(srcs)
    for src in srcs:
        assert src.startswith("images/")
        _decode_src(report, src)
    assert sorted(p.name for p in (report / "images").iterdir()) == sorted(s.split("/", 1)[1] for s in srcs)

    # per identity: one pose/lighting figure, one tile per kept face, the trim coverage figure
    for i, name in enumerate(IDS):
        metrics = json.loads((project / "data" / "dedupe" / name / "metrics.json").read_text())
        assert len(by_key["pose-lighting"][i][0]) == 1
        assert len(by_key["kept-faces"][i][0]) == min(metrics["kept"], report_html.KEPT_MAX)
        assert len(by_key["trim-coverage"][i][0]) == 1
        rejected = [json.loads(line) for line in
                    (project / "data" / "dedupe" / name / "rejected.jsonl").read_text().splitlines() if line]
        shown = min(len(rejected), report_html.REJECTED_PER_REASON * len({r["reason"] for r in rejected}))
        assert len(by_key["rejected-faces"][i][0]) == shown  # every rejected face shown has its image
        assert metrics["over_budget"] > 0, f"max_faces leaves faces out, so the rejected sheet has tiles: {metrics}"
    html_text = (report / "index.html").read_text()
    assert "over_budget" in html_text and "already has sharper faces" in html_text  # reasons and their messages

    assert len(by_key["curves"][0][0]) == 1
    timelapse = [_decode_src(report, s) for s in by_key["timelapse"][0][0]]
    previews = sorted((project / "models" / "previews").glob("step-*.png"))
    assert len(previews) >= 2
    assert getattr(timelapse[0], "n_frames", 1) == min(len(previews), report_html.GIF_MAX), "an animated timelapse"
    assert len(timelapse) == 1 + min(len(previews), report_html.PREVIEWS_MAX)  # the animation, then the strip
    pairs = by_key["before-after"][0][0]
    assert len(pairs) == 2 * report_html.FRAME_PAIRS
    sizes = {_decode_src(report, s).size for s in pairs}
    assert len(sizes) == 1  # before and after at the same size

    # DVC: the report is the stage's output, and a second repro runs nothing
    again = run_bounded([str(VENV_BIN / "dvc"), "repro", "report"], project, timeout=300)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout[-2000:]


EVIL_ID = '"><img src=x onerror=alert(1)> $\\bad{$'
EVIL_REASON = '<script>alert("reason")</script>'
EVIL_MESSAGE = "</small></figure><b onmouseover=alert(2)>bold</b> & more"


def test_user_text_is_escaped(project: Path, tmp_path: Path) -> None:
    """An identity name and a rejection reason/message carrying markup show as text, never as markup."""
    root = tmp_path / "run"
    for part in ("data/download", "data/trim", "data/extract", "data/align", "data/dedupe"):
        for name in IDS:
            shutil.copytree(project / part / name, root / part / (EVIL_ID if name == "src" else name))
    for part in ("data/convert", "data/render", "data/demo", "models"):
        shutil.copytree(project / part, root / part)
    rejected = root / "data/dedupe" / EVIL_ID / "rejected.jsonl"
    face = pq.read_table(root / "data/align" / EVIL_ID / "aligned.parquet", columns=["face"])["face"][0].as_py()
    rejected.write_text(rejected.read_text() + json.dumps({"item": str(face), "stage": "dedupe",
                                                           "reason": EVIL_REASON, "message": EVIL_MESSAGE}) + "\n")

    index = write_report(root, tmp_path / "out", [EVIL_ID, "dst"], "data/demo/target.mp4")
    text = index.read_text()
    page = parse(index)
    assert {tag for tag, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3",
                                              "h4", "p", "nav", "ul", "li", "a", "section", "table", "thead",
                                              "tbody", "tr", "th", "td", "div", "figure", "figcaption", "img",
                                              "small"}
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert "<script" not in text and "<img src=x" not in text and "<b " not in text
    assert "&lt;script&gt;alert(&quot;reason&quot;)&lt;/script&gt;" in text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;b onmouseover=alert(2)&gt;bold&lt;/b&gt; &amp; more" in text
    # the hostile identity's data was found and drawn (its name is in a figure title, `$` and all)
    keys = [key for key, _, _ in page.sections]
    first = dict(zip(keys[1:6], page.sections[1:6], strict=True))
    assert len(first["pose-lighting"][1]) == 1 and len(first["kept-faces"][1]) > 0
    assert any(src for src in first["rejected-faces"][1])
    for _, srcs, _ in page.sections:
        for src in srcs:
            _decode_src(index.parent, src)


def test_inline_report_is_one_file(project: Path, tmp_path: Path) -> None:
    index = write_report(project, tmp_path / "inline", IDS, "data/demo/target.mp4", inline=True)
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html"]
    srcs = [s for _, ss, _ in parse(index).sections for s in ss]
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert len(srcs) == len(list((project / "data/report/images").iterdir()))
    for src in srcs:
        _decode_src(index.parent, src)


def test_partial_run_gives_notes_not_a_crash(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    index = write_report(empty, tmp_path / "r1", IDS, "data/demo/target.mp4")
    page = parse(index)
    assert [k for k, _, _ in page.sections][-(len(GLOBAL) - 1):] == GLOBAL[1:]
    assert not any(srcs for _, srcs, _ in page.sections)
    for key, _, notes in page.sections:
        if key != "summary":
            assert notes and not any("could not build" in n for n in notes), key

    # only the training outputs: the training parts have pictures, the rest say what is missing
    shutil.copytree(project / "models", tmp_path / "train-only" / "models")
    page = parse(write_report(tmp_path / "train-only", tmp_path / "r2", IDS, "data/demo/target.mp4"))
    got = {key: (srcs, notes) for key, srcs, notes in page.sections}
    assert got["curves"][0] and got["timelapse"][0] and not got["before-after"][0]
    assert any("missing" in n for n in got["before-after"][1])


def test_rebuild_replaces_the_folder_whole(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    write_report(project, out, IDS, "data/demo/target.mp4")
    (out / "images" / "stale.png").write_bytes(b"old")
    before = (out / "index.html").read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_html, "build_page", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(project, out, IDS, "data/demo/target.mp4")
    assert (out / "index.html").read_bytes() == before  # an interrupted build leaves the last report whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # and no temp folder behind
    monkeypatch.undo()

    write_report(tmp_path / "nothing-here", out, IDS, None)
    assert not (out / "images").exists()  # nothing from the previous report is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
