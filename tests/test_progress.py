"""Bars on a terminal, silence in logs."""

from __future__ import annotations

import io

from facedag import progress as progress_module
from facedag.progress import counter, progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_nothing_is_drawn(capsys):
    assert list(progress(range(5), desc="extract")) == [0, 1, 2, 3, 4]
    with counter(3, desc="train") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_on_a_terminal_a_bar_is_drawn(monkeypatch):
    screen = FakeTerminal()
    monkeypatch.setattr(progress_module.sys, "stderr", screen)
    monkeypatch.setattr("tqdm.std.sys.stderr", screen)
    assert list(progress(range(3), total=3, desc="convert", unit="frame")) == [0, 1, 2]
    assert "convert" in screen.getvalue() and "/3" in screen.getvalue()


def test_trim_scan_shows_seconds_and_time_left(monkeypatch):
    """trim's scan draws a bar in seconds of the clip with the time left (tqdm's `<`)."""
    import numpy as np

    from facedag.curation.trim import _with_progress
    from facedag.sources.media import ScanFrame

    screen = FakeTerminal()
    monkeypatch.setattr(progress_module.sys, "stderr", screen)
    monkeypatch.setattr("tqdm.std.sys.stderr", screen)
    small = np.zeros((2, 2, 3), np.uint8)
    frames = [ScanFrame(k, k / 10, small, None) for k in range(100)]
    assert list(_with_progress(iter(frames), 10.0, "clip.mp4")) == frames
    drawn = screen.getvalue()
    assert "trim clip.mp4" in drawn and "/10" in drawn and "<" in drawn
