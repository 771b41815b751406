"""Shots: cut detection on a clip with hard cuts, segmenting, and greedy coverage selection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facedag.curation.shots import Candidate, Shot, scan_clip, segment, select_shots, shots_from_cuts
from facedag.sources.media import iter_frames, probe, run_ffmpeg, scan_frames


@pytest.fixture(scope="module")
def cut_clip_path(tmp_path_factory):
    """3.6 s at 25 fps: testsrc2, then SMPTE bars, then a Mandelbrot zoom; hard cuts at 1.2 and 2.4 s."""
    out = tmp_path_factory.mktemp("shots") / "cuts.mp4"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=1.2",
        "-f", "lavfi", "-i", "smptebars=s=160x120:r=25:d=1.2",
        "-f", "lavfi", "-i", "mandelbrot=s=160x120:r=25",
        "-filter_complex", "[2:v]trim=duration=1.2,setpts=PTS-STARTPTS[m];[0:v][1:v][m]concat=n=3:v=1:a=0,"
                           "format=yuv420p",
        "-c:v", "libx264", "-preset", "ultrafast", str(out),
    ])  # fmt: skip
    return out


def test_scan_finds_the_hard_cuts_and_samples_in_the_same_pass(cut_clip_path):
    info = probe(cut_clip_path)
    seen = []

    def analyze(batch):
        seen.extend(t for t, _ in batch)
        return [image.shape for _, image in batch]

    scan = scan_clip(iter_frames(cut_clip_path), info.fps, threshold=27, min_scene_seconds=0.5, sample_fps=2,
                     analyze=analyze, batch=3)
    assert scan.cuts == pytest.approx([1.2, 2.4], abs=0.041)  # within a frame
    assert scan.frames == 90 and scan.duration == pytest.approx(3.6, abs=0.05)
    assert [t for t, _ in scan.samples] == seen and len(seen) == 8  # 2 per second
    assert all(rec == (120, 160, 3) for _, rec in scan.samples)
    shots = shots_from_cuts("c", scan.cuts, scan.duration)
    assert [round(s.duration, 1) for s in shots] == [1.2, 1.2, 1.2]


def test_scan_of_reference_frames_only_keeps_foreign_frames_out(tmp_path):
    """The same cuts from a B-frame encode scanned by reference frames only (scan_frames): each
    cut within two frames, and a shot whose last frames were never decoded ends after the
    last frame seen of it, so neither shot holds a frame of the other."""
    src = tmp_path / "bframes.mp4"
    run_ffmpeg([
        "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1.2",
        "-f", "lavfi", "-i", "smptebars=s=320x240:r=25:d=1.2",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p",
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "250", "-sc_threshold", "0", str(src),
    ])  # fmt: skip
    frames = list(scan_frames(src, width=160, sample_fps=2, reference_only=True))
    assert len(frames) < 60  # fewer than the 60 frames of the clip were decoded
    scan = scan_clip(frames, 25.0, threshold=27, min_scene_seconds=0.5, sample_fps=2)
    assert len(scan.cuts) == 1 and 1.2 <= scan.cuts[0] <= 1.2 + 2 / 25 + 1e-6
    first, second = shots_from_cuts("c", scan.cuts, scan.duration, scan.ends)
    assert first.end <= 1.2 + 1e-6 and second.start >= 1.2 - 1e-6
    assert scan.ends and first.end < second.start  # the skipped frames at the cut are in neither shot


def test_scan_finds_the_cuts_of_the_demo_clip(demo_sources):
    path = demo_sources / "src.mp4"
    scan = scan_clip(iter_frames(path), probe(path).fps, sample_fps=1)
    for cut in (2.0, 4.0):  # the demo's three framings
        assert min(abs(c - cut) for c in scan.cuts) < 0.05


def test_segment_splits_long_shots_equally_and_drops_short_ones():
    shots = [Shot("a", 0, 0.0, 0.3), Shot("a", 1, 0.3, 50.3), Shot("a", 2, 50.3, 55.0)]
    kept, short = segment(shots, max_seconds=20, min_seconds=0.5)
    assert short == [shots[0]]
    assert [s.scene for s in kept] == [1, 1, 1, 2]
    assert [round(s.duration, 3) for s in kept] == [16.667, 16.667, 16.667, 4.7]
    assert [s.index for s in kept] == [0, 1, 2, 3] and kept[2].end == 50.3


def _cand(key, seconds, cells):
    return Candidate(key, seconds, np.asarray(cells, dtype=np.int64), samples=len(cells))


def test_a_short_varied_shot_beats_a_long_repetitive_one():
    long_same = _cand("long", 20.0, [7] * 40)  # an hour of one speech, in small
    short_varied = _cand("short", 3.0, [1, 2, 3, 4, 5, 6])
    picks = select_shots([long_same, short_varied], budget_seconds=10)
    assert picks[1].kept and picks[1].rank == 1
    assert not picks[0].kept and picks[0].reason == "over_budget"
    assert picks[1].score > 1.5 and picks[1].new_cells == 6


def test_greedy_counts_only_new_cells_and_respects_the_budget():
    cands = [
        _cand("a", 4.0, [1, 2, 3, 4]),
        _cand("a-again", 4.0, [1, 2, 3, 4]),  # same conditions as a: only the faces term
        _cand("b", 4.0, [5, 6]),
        _cand("c", 2.0, []),  # no face
        _cand("d", 3.0, [8, 9]),
    ]
    picks = select_shots(cands, budget_seconds=11.5, repeat_weight=0.05)
    kept = [cands[i].key for i in sorted((i for i, p in enumerate(picks) if p.kept), key=lambda i: picks[i].rank)]
    assert kept == ["a", "d", "b"]  # 4 + 3 + 4 = 11 s; "a-again" would add no cell
    assert sum(c.duration for c, p in zip(cands, picks, strict=True) if p.kept) <= 11.5
    assert picks[3].reason == "no_face" and not picks[3].kept
    assert picks[1].reason == "over_budget" and picks[1].new_cells == 0
    # scores at pick time never increase (submodular coverage, lazy greedy)
    ranked = sorted((p for p in picks if p.kept), key=lambda p: p.rank)
    assert all(a.score >= b.score for a, b in itertools.pairwise(ranked))


def test_repeats_fill_a_generous_budget_and_nothing_exceeds_it():
    rng = np.random.default_rng(0)
    cands = [_cand(i, float(rng.uniform(0.5, 20)), rng.integers(0, 30, size=rng.integers(0, 12)))
             for i in range(60)]
    for budget in (1.0, 25.0, 120.0, 10_000.0):
        picks = select_shots(cands, budget)
        used = sum(c.duration for c, p in zip(cands, picks, strict=True) if p.kept)
        assert used <= budget + 1e-9
        if budget == 10_000.0:  # everything with a face fits
            assert all(p.kept == (c.faces > 0) for c, p in zip(cands, picks, strict=True))
