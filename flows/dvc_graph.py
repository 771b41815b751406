"""The stage graph and stage status, read from DVC itself (dvc.yaml is the single source of truth).

The flow and `facedag status` both go through here, so neither keeps its own copy of the DAG.
"""

from __future__ import annotations

import json
from contextlib import chdir
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import yaml
from dvc.repo import Repo

from facedag.records import atomic_write_bytes

# The product's step order. DVC's graph decides what depends on what; this only breaks
# ties between steps that DVC sees as unrelated (the frozen model stages have no outs
# yet, so DVC knows no edge between them).
STEP_ORDER = ["download", "profile", "trim", "extract", "align", "dedupe", "train", "evaluate_model", "convert",
              "evaluate_video", "render", "export"]


LOCK_BACKUP = Path(".dvc") / "tmp" / "facedag-dvc.lock.good"


def _valid_lock(text: str) -> bool:
    """Whether `text` is a dvc.lock DVC accepts (its own schema: a file cut short can still be YAML)."""
    import voluptuous
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    try:
        COMPILED_LOCKFILE_SCHEMA(yaml.safe_load(text))
    except (yaml.YAMLError, voluptuous.Invalid):
        return False
    return True


def repair_dvc_state(root: str | Path) -> list[str]:
    """Undo what a dvc killed mid-write leaves behind; one line per repair (empty: nothing to do).

    DVC rewrites `.dvc/tmp/rwlock` and `dvc.lock` in place, with no temp file and rename, so a
    dvc killed while writing one (SIGKILL, the OOM killer, a lost node) leaves half a document,
    and every later dvc command in the project fails on it. `make chaos` found both.

    - A corrupt rwlock is removed: it only lists the locks of running dvc processes, so a
      corrupt one guards nothing, and DVC recreates it.
    - A whole dvc.lock is copied to `.dvc/tmp/facedag-dvc.lock.good`; a corrupt one is replaced
      by that copy. The copy misses at most the stage that was running when dvc was killed,
      which DVC then simply runs again.

    Call it only when no dvc runs in the project: the flow does, before each step.
    """
    root = Path(root)
    done = []
    rwlock = root / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(rwlock.read_text() or "{}")
    except OSError:
        pass
    except ValueError:
        rwlock.unlink(missing_ok=True)
        done.append("removed a half-written .dvc/tmp/rwlock (left by a dvc killed while writing it)")
    lock, backup = root / "dvc.lock", root / LOCK_BACKUP
    try:
        text = lock.read_text()
    except OSError:
        return done
    if _valid_lock(text):
        backup.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(backup, text.encode())
    elif backup.is_file():
        atomic_write_bytes(lock, backup.read_bytes())
        done.append("restored dvc.lock from its last whole copy (a dvc was killed while writing it); "
                    "the stage it was writing will run again")  # fmt: skip
    return done


@dataclass(frozen=True)
class StageInfo:
    """One DVC stage as the flow needs it."""

    name: str  # DVC's address, e.g. "download@src" or "train"
    step: str  # the name before "@"
    frozen: bool
    metrics: tuple[str, ...] = field(default=())  # repo-relative paths of its metrics files
    upstream: tuple[str, ...] = field(default=())  # names of stages it depends on directly


def _step_of(name: str) -> str:
    return name.split("@", 1)[0]


def load_stages(root: str | Path = ".") -> dict[str, StageInfo]:
    """All stages of the project's dvc.yaml files, with their direct dependencies."""
    root = Path(root).resolve()
    # DVC names stages relative to the process's cwd ("sub/dvc.yaml:name"), and `dvc repro`
    # runs in `root`: read the graph from there so the names are the ones repro takes.
    with chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph  # edges: stage -> stage it depends on
        stages: dict[str, StageInfo] = {}
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):  # .dvc files of `dvc add` are not stages to run
                continue
            name = stage.addressing
            metrics = tuple(
                str(Path(out.fs_path).resolve().relative_to(root)) for out in stage.outs if out.metric
            )
            upstream = tuple(sorted(dep.addressing for dep in graph.successors(stage) if getattr(dep, "cmd", None)))
            stages[name] = StageInfo(name, _step_of(name.rsplit(":", 1)[-1]), bool(stage.frozen), metrics, upstream)
    return stages


def with_upstream(stages: dict[str, StageInfo], targets: list[str]) -> set[str]:
    """The named stages (a full name like `dedupe@src` or a step like `dedupe`) and all they need."""
    wanted: set[str] = set()
    for target in targets:
        hits = [n for n, s in stages.items() if n == target or s.step == target]
        if not hits:
            raise KeyError(f"no stage or step named {target!r} in dvc.yaml (have: {', '.join(sorted(stages))})")
        wanted.update(hits)
    todo = list(wanted)
    while todo:
        for up in stages[todo.pop()].upstream:
            if up not in wanted:
                wanted.add(up)
                todo.append(up)
    return wanted


def ordered_steps(stages: dict[str, StageInfo], only: set[str] | None = None) -> list[list[str]]:
    """Groups of stage names to run one after another; the stages within a group run side by side.

    A group is one step (all `@ID` variants of it). Steps are ordered topologically by
    DVC's edges, ties broken by the product's step order, then by name.
    """
    names = [n for n in stages if only is None or n in only]
    step_graph = nx.DiGraph()
    for name in names:
        step_graph.add_node(stages[name].step)
        for up in stages[name].upstream:
            if only is None or up in only:
                step_graph.add_edge(stages[up].step, stages[name].step)
    if not nx.is_directed_acyclic_graph(step_graph):
        raise ValueError("the steps of dvc.yaml form a cycle: a step's stages must not depend on a later step")

    def rank(step: str) -> tuple[int, str]:
        return (STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER), step)

    order = list(nx.lexicographical_topological_sort(step_graph, key=rank))
    return [sorted(n for n in names if stages[n].step == step) for step in order]


def stage_status(root: str | Path = ".") -> dict[str, str]:
    """Per stage: 'up to date', 'not built yet (frozen)', or 'changed: <what changed>' (from `dvc status`
    and dvc.lock)."""
    root = Path(root).resolve()
    stages = load_stages(root)
    lock_path = root / "dvc.lock"
    locked = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {}) if lock_path.exists() else {}
    with chdir(root), Repo(".") as repo:
        raw = repo.status()
    result: dict[str, str] = {}
    for name, info in stages.items():
        if info.frozen:
            result[name] = "not built yet (frozen)"
        elif name not in locked:  # DVC would list every dep as modified: say it plainly
            result[name] = "changed: never run"
        elif not raw.get(name):
            result[name] = "up to date"
        else:
            result[name] = "changed: " + _describe(raw[name], locked[name].get("params", {}), root)
    return result


def _describe(changes: list, locked_params: dict, root: Path) -> str:
    """Turn DVC's status entries into one line: which deps, params and outs changed, and how."""
    parts: list[str] = []
    for entry in changes:
        if isinstance(entry, str):  # e.g. "changed command", "always changed"
            parts.append(entry)
            continue
        for kind, items in entry.items():
            if not isinstance(items, dict):
                parts.append(f"{kind}: {items}")
                continue
            for path, state in items.items():
                if isinstance(state, dict):  # params: {"params.yaml": {"dedupe": "modified"}}
                    for key, how in state.items():
                        parts.extend(_param_changes(root / path, key, how, locked_params.get(path, {})))
                else:
                    parts.append(f"{kind.replace('changed ', '').rstrip('s')} {path} {state}")
    return "; ".join(parts) or "changed"


def _param_changes(params_file: Path, key: str, how: str, locked: dict) -> list[str]:
    """Name the leaf keys that changed under a whole-section param (DVC only says 'dedupe modified')."""
    current = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    before = locked.get(key)
    if how != "modified" or not isinstance(current, dict) or not isinstance(before, dict):
        return [f"param {key} {how}"]
    leaves = [f"param {key}.{k} {before.get(k)!r} -> {current.get(k)!r}"
              for k in sorted(set(before) | set(current)) if before.get(k) != current.get(k)]
    return leaves or [f"param {key} {how}"]
