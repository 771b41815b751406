"""Training checkpoints: atomic, pickle-free to load, kept K deep, and never silently lost.

A checkpoint is `models/checkpoints/step-<step, 9 digits>.pt`, written by torch.save to a temp
file beside it, fsynced and moved into place (facedag.records.atomic_path), so a kill -9 at any
moment leaves either the old set or the old set plus one whole new file. It holds only what
`torch.load(weights_only=True)` accepts (tensors, dicts, lists, str, int, float, bool, None):
weights, optimiser, scaler, step, every RNG state (torch, CUDA, numpy, python `random`, and the
training loop's own generators) converted to tensors and lists, the model config, the
dataset hash and the device type it was written on.

Checkpoints travel: everything is saved as CPU tensors, the training loop's own generators are
CPU generators (their state is the same on every machine), and CUDA generator states are
restored only where they fit (restore_rng), so a checkpoint written on a GPU resumes on a CPU,
on a machine with fewer GPUs, and back; the resume says which device wrote it.

Loading never runs code: `torch.load(weights_only=True)` refuses any pickle that names a
callable (an `os.system` in a `__reduce__`, say) before calling it; we turn that into
`CheckpointRefused` with a clear message. A file that fails to parse (truncated, bad zip) is
`CheckpointCorrupt`.

Resume (`find_resume`), newest first:
- refused or corrupt: warn, move it into `refused-<UTC time>/` or `corrupt-<UTC time>/` beside
  the others (so keep-last-K never counts it again), and try the one before;
- loads, and the config and dataset hash match: resume from it;
- loads but the config or the data changed: start fresh, saying which, and move every checkpoint
  into `stale-<UTC time>/`. Nothing is ever deleted except by keep-last-K.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facedag.records import atomic_path

CHECKPOINT_RE = re.compile(r"^step-(\d{9})\.pt$")
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used."""


class CheckpointRefused(CheckpointError):
    """The file is a pickle that would run code (or load non-tensor objects) when unpickled."""


class CheckpointCorrupt(CheckpointError):
    """The file does not parse: truncated, not a zip, damaged."""


def checkpoint_path(ckpt_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(ckpt_dir) / f"step-{int(step):09d}.pt"


def list_checkpoints(ckpt_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints directly in `ckpt_dir`, newest (highest step) first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_file() and (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found, reverse=True)


# -- RNG states as weights_only-loadable values -----------------------------------------------
def capture_rng() -> dict[str, Any]:
    """The global RNG states: torch (CPU, every CUDA device), numpy's legacy global, python `random`."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any], log: Callable[[str], None] = lambda _: None) -> None:
    """Undo capture_rng: every global generator continues exactly where it was.

    CUDA states are restored only where they fit: one per GPU this machine has (a checkpoint
    from a machine with more GPUs restores the first ones; one from a CPU-only machine, none),
    each of the size this torch's CUDA generator takes. Training draws nothing from them (its
    own generators are CPU generators), so what does not fit is said and skipped, not fatal.
    """
    torch.set_rng_state(state["torch"])
    saved = list(state.get("cuda") or [])
    if saved and torch.cuda.is_available():
        here = torch.cuda.device_count()
        fits = [s for s in saved[:here] if s.numel() == torch.cuda.get_rng_state(0).numel()]
        for i, s in enumerate(fits):
            torch.cuda.set_rng_state(s, i)
        if len(fits) < len(saved):
            log(f"restored {len(fits)} of the checkpoint's {len(saved)} CUDA generator states ({here} GPU(s) here)")
    elif saved:
        log(f"the checkpoint's {len(saved)} CUDA generator state(s) are not restored: no GPU here")
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# -- save / load ---------------------------------------------------------------------------------
def save_checkpoint(ckpt_dir: str | os.PathLike[str], state: dict[str, Any], keep: int) -> Path:
    """Write `state` (must hold an int "step") atomically; then keep only the newest `keep` checkpoints."""
    path = checkpoint_path(ckpt_dir, state["step"])
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
    for _, old in list_checkpoints(ckpt_dir)[max(1, int(keep)):]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's state, loaded with weights_only=True onto the CPU (never runs pickled code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), text.splitlines()[0])
            raise CheckpointRefused(
                f"refused {path}: it is a pickle that would run code or build arbitrary objects when loaded "
                f"({detail}); facedag loads checkpoints with weights_only=True only, so it was not executed"
            ) from None
        raise CheckpointCorrupt(f"{path} is corrupt: {text.splitlines()[0] if text else type(exc).__name__}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointCorrupt(f"{path} is corrupt or truncated: {first}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointCorrupt(f"{path} is not a facedag checkpoint (no step)")
    return state


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def move_aside(ckpt_dir: str | os.PathLike[str], kind: str, paths: list[Path] | None = None,
               extra: list[Path] | None = None) -> Path | None:
    """Move `paths` (default: every checkpoint in `ckpt_dir`) and `extra` folders into `<kind>-<UTC time>/`.

    Returns the folder, or None when there was nothing to move. Never deletes.
    """
    d = Path(ckpt_dir)
    items = [p for p in (paths if paths is not None else [p for _, p in list_checkpoints(d)]) if p.exists()]
    items += [p for p in (extra or []) if p.exists()]
    if not items:
        return None
    dest = d / f"{kind}-{_stamp()}"
    dest.mkdir(parents=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


def find_resume(ckpt_dir: str | os.PathLike[str], config: dict[str, Any], dataset_hash: str,
                log: Callable[[str], None], stale_extra: list[Path] | None = None) -> dict[str, Any] | None:
    """The state to resume from, or None to start fresh (see the module docstring for the rules).

    `stale_extra` (e.g. the dvclive folder) moves aside with stale checkpoints: its curves
    belong to the old run.
    """
    d = Path(ckpt_dir)
    if d.is_dir():  # temp files of checkpoints a kill interrupted mid-write: never whole, never used
        for tmp in d.glob(".step-*.tmp*"):
            tmp.unlink(missing_ok=True)
    for step, path in list_checkpoints(ckpt_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointRefused as exc:
            dest = move_aside(ckpt_dir, "refused", [path])
            log(f"warning: {exc}; moved to {dest}, trying the one before")
            continue
        except CheckpointCorrupt as exc:
            dest = move_aside(ckpt_dir, "corrupt", [path])
            log(f"warning: skipped checkpoint {path.name}: {exc}; moved to {dest}, trying the one before")
            continue
        why = []
        if state.get("config") != config:
            why.append(f"the model config changed ({_diff(state.get('config'), config)})")
        if state.get("dataset_hash") != dataset_hash:
            why.append("the dataset changed (dataset hash differs)")
        if why:
            dest = move_aside(ckpt_dir, "stale", extra=stale_extra)
            log(f"starting fresh: {' and '.join(why)} since checkpoint step {step}; old checkpoints moved to {dest}")
            return None
        return state
    return None


def _diff(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "no config recorded"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def cpu_copy(obj: Any) -> Any:
    """A deep copy of a checkpoint state with every tensor as a CPU tensor of its own (the live
    weights and moments go on changing while a background thread writes the copy)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu", copy=True) if t.device.type != "cpu" else t.clone()
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class CheckpointWriter:
    """save_checkpoint on a background thread, so that writing (and fsyncing) a checkpoint of a
    real-size model, about 1 GB, does not stall training: `submit` takes a CPU copy of the state
    at once (the only part the step waits for) and a thread writes it atomically, as
    save_checkpoint always does. One write at a time: a submit while one is in flight waits for it
    first. `wait` (every stop calls it) returns when the last one is on disk, and re-raises its error.
    """

    def __init__(self, ckpt_dir: str | os.PathLike[str], keep: int) -> None:
        self.ckpt_dir, self.keep = Path(ckpt_dir), keep
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict[str, Any]) -> None:
        self.wait()
        snapshot = cpu_copy(state)
        self._thread = threading.Thread(target=self._write, args=(snapshot,), name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _write(self, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(self.ckpt_dir, state, self.keep)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err
