"""Atomic outputs, rejection records and stage metrics.

Every stage writes its files through these helpers, so that a kill at any moment never
leaves a half-written file where a whole one belongs (temp file in the same folder,
fsync, then `os.replace`), and so that every unusable item is recorded the same way in
`rejected.jsonl` (see DESIGN.md: item, stage, reason, message).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Rejected(Exception):
    """An item (source, clip, frame, face) that cannot be used.

    `reason` is a stable machine-readable code (snake_case) that users and scripts can
    rely on; `message` is for people. Library code raises it; stages catch it, record it
    and carry on with the rest of the batch.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StageFailed(Exception):
    """Raised when nothing usable is left: the stage exits non-zero with this one line."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and move it into place.

    On an exception the temp file is removed and `path` keeps its previous content. A full
    disk (ENOSPC, EDQUOT) becomes StageFailed "no space left on device while writing <path>":
    one clear line, and the previous outputs intact.
    The temp name keeps the suffix, so tools that pick a format by extension (ffmpeg,
    pyarrow, matplotlib) behave as for the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem[:40]}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StageFailed(f"no space left on device while writing {final}") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    """Let numpy scalars and paths through json.dumps without the caller converting them."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Rejections:
    """The `rejected.jsonl` of one stage run.

    The file is written whole at `close()` (atomically), empty when nothing was rejected,
    so that DVC can declare it as an output and a rerun never appends to a stale list.
    """

    def __init__(self, out_dir: str | os.PathLike[str], stage: str) -> None:
        self.path = Path(out_dir) / "rejected.jsonl"
        self.stage = stage
        self.rows: list[dict[str, str]] = []

    def add(self, item: str, reason: str, message: str) -> None:
        """Record one unusable item and print it as one line, so logs show it too."""
        row = {"item": str(item), "stage": self.stage, "reason": reason, "message": message}
        self.rows.append(row)
        print(f"[{self.stage}] rejected {item}: {reason}: {message}", flush=True)

    def add_error(self, item: str, error: Rejected) -> None:
        """Record a `Rejected` raised by library code."""
        self.add(item, error.reason, error.message)

    def __len__(self) -> int:
        return len(self.rows)

    def close(self) -> None:
        """Write the file atomically."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows)
        atomic_write_bytes(self.path, text.encode())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks: clips are stored and recorded by it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metrics(out_dir: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    """Write the stage's `metrics.json` (a DVC metric) atomically."""
    atomic_write_json(Path(out_dir) / "metrics.json", metrics)
