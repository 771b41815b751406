"""Report figures: written atomically, non-empty PNGs, also for empty and odd inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from facedag.curation.coverage import pose_light_grid, trim_grid
from facedag.report.figures import contact_sheet, dedupe_figure, trim_coverage_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _faces(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"yaw": rng.normal(0, 25, n), "pitch": rng.normal(0, 15, n), "mouth_open": rng.uniform(0, 1, n),
                         "eyes_open": rng.uniform(0, 1.2, n), "luminance": rng.uniform(0.1, 0.9, n),
                         "asymmetry": rng.normal(0, 0.2, n)})


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 5_000


def test_trim_coverage_figure(tmp_path):
    before = _faces(200)
    after = before.iloc[::5]
    out = tmp_path / "coverage.png"
    trim_coverage_figure(out, trim_grid(), before, after, [3.0, 7.5, 9.0], [10, 14, 15], seconds_in=120.0)
    assert _is_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["coverage.png"]  # no temp file left behind


def test_trim_coverage_figure_with_nothing_kept(tmp_path):
    out = tmp_path / "c.png"
    trim_coverage_figure(out, trim_grid(), _faces(3), _faces(0), [], [], seconds_in=1.0)
    assert _is_png(out)


def test_dedupe_figure_and_contact_sheet(tmp_path):
    rng = np.random.default_rng(0)
    before = {k: v.to_numpy() for k, v in _faces(300).items()}
    keep = rng.choice(300, 40, replace=False)
    after = {k: v[keep] for k, v in before.items()}
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(40)]
    images[3] = images[3][:, :, 0]  # a grey one
    out = tmp_path / "report.png"
    dedupe_figure(out, pose_light_grid(), before, after, images, {"faces_in": 300, "kept": 40})
    assert _is_png(out)
    sheet = contact_sheet(images, cols=10, side=32)
    assert sheet.shape == (4 * 34 + 2, 10 * 34 + 2, 3)
    empty = tmp_path / "empty.png"
    dedupe_figure(empty, pose_light_grid(), before, {k: v[:0] for k, v in before.items()}, [], {"kept": 0})
    assert _is_png(empty)
