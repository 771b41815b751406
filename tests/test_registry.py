"""Plugin folders: names from the files, an unknown name is one clear error, params validates
against the folder, and a new file is a new choice without touching anything else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facedag.params import Convert
from facedag.registry import Registry, plugin_names
from facedag.swap.colour import COLOUR
from facedag.swap.masks import MASKS
from facedag.training.layouts import LAYOUTS


def test_the_folders_and_their_plugins() -> None:
    assert set(COLOUR.names()) == {"avg", "rct", "hist", "none"}  # _lab.py is a helper, not a mode
    assert MASKS.names() == ("extended", "hull", "learned", "mesh")
    assert LAYOUTS.names() == ("df", "liae")
    assert plugin_names("facedag.faces.landmarkers") == ("mediapipe", "retinaface")
    assert callable(COLOUR.get("avg")) and callable(MASKS.get("hull"))


def test_unknown_names_are_one_line_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown colour mode 'lut' \(one of: avg, hist, none, rct\)"):
        COLOUR.get("lut")
    with pytest.raises(ValueError, match="unknown colour mode"):
        Convert(colour="lut")
    with pytest.raises(ValueError, match="unknown mask kind"):
        Convert(mask="xseg")


def test_a_new_file_is_a_new_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "myplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "first.py").write_text("def run():\n    return 'first'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("myplugins", "thing", "run")
    assert registry.names() == ("first",)
    (pkg / "second.py").write_text("def run():\n    return 'second'\n")
    assert registry.names() == ("first", "second")
    assert registry.get("second")() == "second"
    (pkg / "broken.py").write_text("X = 1\n")
    with pytest.raises(TypeError, match="without `run`"):
        registry.get("broken")
    sys.modules.pop("myplugins", None)
