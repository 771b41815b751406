"""Partial work that survives a kill, so long stages resume instead of starting over.

`dvc repro` deletes a stage's outputs before it runs the stage, so what a killed run had
finished cannot live among the outputs: it lives in a resume folder outside them,
`.dvc/tmp/facedag-resume/<stage>/<ID>/` (DVC keeps `.dvc/tmp` out of git and out of its
own bookkeeping). Outside a DVC project (a stage run by hand in a plain folder) it lives
under the system temp dir, one folder per working directory; `FACEDAG_RESUME_ROOT`
overrides both.

A resume folder belongs to one *key*: a hash of everything that decides the stage's result
(its params section and `base`, the sha256 of its inputs, the source of its code (facedag.codedeps),
the versions of the libraries that compute it). Opening it with another key empties it
first, so a partial result made by other code, params or inputs is never reused. Every part
is written atomically (facedag.records.atomic_path), and a part counts as done only when
its marker is in place, so a kill while a part is written leaves at most a temp file that
the next run overwrites. The stage clears the folder once its outputs are complete.

Fault injection (tests and `make chaos` only): `FACEDAG_FAULT` lists kill points,
comma separated, each `<stage>:<point>:<n>`: the process SIGKILLs itself the n-th time it
reaches that point. Points are named in the stage code (`fault_point`, e.g. extract's
`clip_done`, convert's `chunk_done` and `frame`) or are `replace` (the n-th `os.replace` or
`os.rename` in the stage's process, seen through an audit hook that `arm_faults` installs:
the temp file is whole but not yet moved into place) or `replace=<glob>` (only renames onto a
file name matching the glob). The variable is never set in normal runs; nothing happens then.

Disk full: `no_space_left(exc)` tells an out-of-space error (an OSError with ENOSPC or
EDQUOT, or ffmpeg's message saying so) from other errors, and `space_guard(path)` turns it
into one clear StageFailed line naming the file being written.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facedag.codedeps import PROJECT, source_files
from facedag.records import StageFailed, atomic_path, atomic_write_json, sha256_file

ROOT_ENV = "FACEDAG_RESUME_ROOT"
FAULT_ENV = "FACEDAG_FAULT"
KEY_FILE = "key.json"


def resume_root(cwd: str | os.PathLike[str] | None = None) -> Path:
    """Where resume folders live: $FACEDAG_RESUME_ROOT, `.dvc/tmp/facedag-resume` in a DVC
    project, else `<tempdir>/facedag-resume-<hash of the working directory>`."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    here = Path(cwd or os.getcwd()).resolve()
    if (here / ".dvc").is_dir():
        return here / ".dvc" / "tmp" / "facedag-resume"
    tag = hashlib.sha256(os.fsencode(here)).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"facedag-resume-{tag}"


def code_version(module: str) -> str:
    """sha256 over the source of `module` and every project module it imports
    (facedag.codedeps, the same files dvc.yaml lists as the stage's code deps): any code
    change gives a new key."""
    digest = hashlib.sha256()
    for path in source_files(module):
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the distributions that compute a result (a new onnxruntime may
    detect a face a hair differently, a new ffmpeg may encode differently)."""
    out = {}
    for name in sorted(names):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def file_digests(paths: Iterable[str | os.PathLike[str]]) -> list[list[str]]:
    """[[path, sha256 or "missing"], ...] of input files, in the given order (a missing file is
    the stage's to report; it still makes a key)."""
    return [[os.fspath(p), sha256_file(p) if os.path.isfile(p) else "missing"] for p in paths]


class ResumeDir:
    """One stage's resume folder for one key.

    `open(stage, key_parts)` hashes `key_parts` (anything JSON can hold; see module doc) and
    returns the folder, emptied first when it held parts of another key. Parts are files named
    by the stage; `done(name)` is true only for a part moved whole into place.
    """

    def __init__(self, path: str | os.PathLike[str], key: str, root: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.key = key
        self.root = Path(root) if root is not None else self.path

    @classmethod
    def open(cls, stage: str, key_parts: Any, root: str | os.PathLike[str] | None = None) -> ResumeDir:
        """The folder of `stage` (`extract@src` -> `<root>/extract/src`) for this key."""
        blob = json.dumps(key_parts, sort_keys=True, separators=(",", ":"), default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()
        base = Path(root) if root is not None else resume_root()
        path = base.joinpath(*stage.split("@"))
        try:
            held = json.loads((path / KEY_FILE).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            held = None
        if held != key and path.exists():
            shutil.rmtree(path)  # another key's parts (or a folder without a key): never reused
        path.mkdir(parents=True, exist_ok=True)
        if held != key:
            atomic_write_json(path / KEY_FILE, {"key": key, "parts": json.loads(blob)})
        return cls(path, key, base)

    def file(self, name: str) -> Path:
        """The path of part `name` (whether or not it is done)."""
        return self.path / name

    def done(self, name: str) -> bool:
        return (self.path / name).is_file()

    @contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temp path for part `name`, moved into place when the block ends without error."""
        with atomic_path(self.path / name) as tmp:
            yield tmp

    def put_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def get_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def parts(self, pattern: str) -> list[str]:
        """Names of the done parts matching the glob `pattern`, sorted (temp files excluded)."""
        return sorted(p.name for p in self.path.glob(pattern) if p.is_file() and not p.name.startswith("."))

    def clear(self) -> None:
        """Remove the folder, and its parents up to the root that are left empty: the stage's
        outputs are complete, the parts are no longer needed, nothing empty is left behind."""
        shutil.rmtree(self.path, ignore_errors=True)
        parent = self.path.parent
        while parent == self.root or self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (another stage's parts), or a mount point
                break
            if parent == self.root:
                break
            parent = parent.parent


# -- disk full --------------------------------------------------------------------------------

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = tuple(os.strerror(code) for code in _NO_SPACE)  # "No space left on device", ...


def no_space_left(exc: BaseException) -> bool:
    """True for an out-of-space error: an OSError with ENOSPC/EDQUOT (Python, pyarrow), or an
    error whose message carries that text (ffmpeg reports it only on its stderr)."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    text = str(exc)
    return any(t in text for t in _NO_SPACE_TEXT)


@contextmanager
def space_guard(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an out-of-space error in the block into StageFailed("no space left on device while
    writing <path>"): one clear line instead of a traceback or a misleading reason."""
    try:
        yield
    except StageFailed:
        raise
    except Exception as exc:
        if no_space_left(exc):
            raise StageFailed(f"no space left on device while writing {os.fspath(path)}") from None
        raise


# -- fault injection (tests and `make chaos` only) --------------------------------------------

_fault_env: str | None = None
_faults: dict[tuple[str, str], int] = {}
_counts: dict[tuple[str, str], int] = {}


def _parse_faults() -> dict[tuple[str, str], int]:
    """{(stage, point): n} from $FACEDAG_FAULT, parsed again only when the variable changes."""
    global _fault_env, _faults
    env = os.environ.get(FAULT_ENV, "")
    if env != _fault_env:
        _fault_env, _faults = env, {}
        for item in filter(None, (s.strip() for s in env.split(","))):
            stage, point, n = item.rsplit(":", 2)
            _faults[(stage, point)] = int(n)
        _counts.clear()
    return _faults


def _hit(stage: str, point: str) -> None:
    key = (stage, point)
    _counts[key] = _counts.get(key, 0) + 1
    if _counts[key] == _faults[key]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def fault_point(stage: str, point: str) -> None:
    """Test-only: SIGKILL this process the n-th time it gets here, when FACEDAG_FAULT asks for
    `<stage>:<point>:<n>`. Costs a dict lookup otherwise."""
    if os.environ.get(FAULT_ENV) and (stage, point) in _parse_faults():
        _hit(stage, point)


def current_stage() -> str | None:
    """The stage this process runs (`trim@src`, `train`), from `python -m stages.<name> [ID]`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", "") or ""
    if not name.startswith("stages."):
        return None
    stage = name.removeprefix("stages.")
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        stage += f"@{sys.argv[1]}"
    return stage


def arm_faults(stage: str | None = None) -> None:
    """Test-only: make the `replace` points of FACEDAG_FAULT fire in this process.

    Installs an audit hook on `os.rename` (raised by os.rename and os.replace, before the
    rename happens). `stage` defaults to `current_stage()`, looked up at the first rename (so
    this can run from a sitecustomize, before the stage's module is known). Does nothing when
    FACEDAG_FAULT names no `replace` point.
    """
    if not any(point.split("=")[0] == "replace" for _, point in _parse_faults()):
        return
    resolved: list[str | None] = [stage]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "os.rename":
            return
        if resolved[0] is None:
            resolved[0] = current_stage() or ""
        name = os.path.basename(os.fsdecode(args[1])) if isinstance(args[1], (str, bytes, os.PathLike)) else ""
        for (where, point), _ in list(_parse_faults().items()):
            kind, _, pattern = point.partition("=")
            if where == resolved[0] and kind == "replace" and (not pattern or fnmatch.fnmatch(name, pattern)):
                _hit(where, point)

    sys.addaudithook(hook)
