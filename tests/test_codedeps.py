"""dvc.yaml's code deps are exactly each stage's import closure (facedag.codedeps), and the
closure follows what it should: function-level and relative imports, plugin folders whole,
`import facedag` for the version, never a parent package picked up on the way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facedag.codedeps import closure, dep_paths, source_files
from tests.conftest import REPO


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    """{stage: (its module, its declared code deps)} from the real dvc.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, spec in stages.items():
        body = spec.get("do", spec)
        module = body["cmd"].split()[2]
        code = [d for d in body["deps"] if isinstance(d, str) and d.split("/")[0] in ("facedag", "stages")]
        out[name] = (module, code)
    return out


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(stage: str) -> None:
    module, declared = stage_commands()[stage]
    assert declared == dep_paths(module), (
        f"dvc.yaml's code deps of {stage} differ from its imports: run `python -m facedag.codedeps --sync dvc.yaml`")


def test_closure_rules(tmp_path: Path) -> None:
    files = {
        "stages/__init__.py": "",
        "stages/s.py": "from facedag.a import f\n\ndef run():\n    from facedag.sub import b\n    import facedag\n",
        "facedag/__init__.py": '__version__ = "1"\n',
        "facedag/a.py": "from . import c\nimport numpy\n",
        "facedag/c.py": "",
        "facedag/unused.py": "",
        "facedag/sub/__init__.py": '"""a docstring only"""\n',
        "facedag/sub/b.py": "from facedag.plug import REG\n",
        "facedag/plug/__init__.py": "from facedag.registry import Registry\nREG = Registry(__name__, 'x', 'y')\n",
        "facedag/plug/one.py": "from facedag.c import *\n",
        "facedag/plug/_helper.py": "",
        "facedag/registry.py": "class Registry: ...\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    names = closure("stages.s", tmp_path)
    assert set(names) == {"stages.s", "facedag", "facedag.a", "facedag.c", "facedag.sub.b", "facedag.plug",
                          "facedag.plug.one", "facedag.plug._helper", "facedag.registry"}
    assert dep_paths("stages.s", tmp_path) == ["stages/s.py", "facedag/__init__.py", "facedag/a.py", "facedag/c.py",
                                               "facedag/plug", "facedag/registry.py", "facedag/sub/b.py"]
    assert tmp_path / "facedag/plug/one.py" in source_files("stages.s", tmp_path)


def test_sync_rewrites_only_the_code_deps(tmp_path: Path) -> None:
    from facedag.codedeps import sync_dvc_yaml

    real = (REPO / "dvc.yaml").read_text()
    stale = real.replace("        - facedag/sources/media.py\n", "        - facedag/gone.py\n", 1)
    assert stale != real
    copy = tmp_path / "dvc.yaml"
    copy.write_text(stale)
    assert sync_dvc_yaml(copy, REPO) and copy.read_text() == real
    assert not sync_dvc_yaml(copy, REPO)
