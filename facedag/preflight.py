"""Preflight: find what would stop the pipeline before any work starts, one line per problem.

`facedag run` and `facedag check` call `preflight()` first. Without it, a typo in a source path
shows up as a rejection after downloads, and a target with no face, or a missing consent
record, after hours of training. Every check here is cheap (no download, no full decode):

1. params.yaml against its schema (facedag.params.load_params): a bad YAML file, a wrong type,
   an unknown key, an identity with no sources. A schema problem ends the preflight there,
   since nothing else can be read reliably; it is the one line returned.
2. Each identity's sources: a local path (or file:// URL) must exist; a URL scheme must be one
   download takes (http, https); `end` must be after `start`. URLs are not fetched.
3. `convert.swap_to` and `convert.replace` name identities.
4. Consent records (facedag.provenance.consent.require_consent) of every identity and of the target:
   what train and convert refuse to run without.
5. The target: a local file that decodes (facedag.sources.media.probe) and shows at least one face in
   `TARGET_SAMPLES` frames spread over it (RetinaFace, facedag.faces.detect.FaceDetector, with
   convert's thresholds), all within `timeout` seconds.

Contract: `preflight()` returns the problems, each a single line that starts with the params
key it is about (`identities.src.sources[1].uri: file not found: ...`,
`target.uri: no face found in 8 sampled frames ...`); an empty list means go. It raises
nothing for a bad project, so a caller prints every line at once and the user fixes them in
one round. `python -m facedag.preflight` prints them to stderr and exits 1 (0 and one "ok"
line when there are none).
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from facedag.params import Params, load_params
from facedag.provenance.consent import require_consent
from facedag.records import Rejected, StageFailed
from facedag.sources.fetch import is_url, local_path

TARGET_SAMPLES = 8
TARGET_TIMEOUT_S = 30.0
T = TypeVar("T")


def preflight(
    params_path: str | Path = "params.yaml",
    *,
    root: str | Path = ".",
    check_target_face: bool = True,
    timeout: float = TARGET_TIMEOUT_S,
) -> list[str]:
    """The problems that would stop the pipeline, one line each naming the key; [] when none.

    params_path: relative paths are taken from `root` (the project; source and target paths in
    params.yaml are relative to it too). check_target_face: False skips the face search (the
    target is still probed). timeout: limit on reading the target, seconds.
    """
    root = Path(root)
    path = Path(params_path)
    try:
        params = load_params(path if path.is_absolute() else root / path)
    except StageFailed as exc:
        return [str(exc)]
    problems = _source_problems(params, root)
    problems += _convert_problems(params, root)
    problems += _target_problems(params, root, check_target_face, timeout)
    return problems


def _source_problems(params: Params, root: Path) -> list[str]:
    problems = []
    for name, identity in params.identities.items():
        for i, source in enumerate(identity.sources):
            key = f"identities.{name}.sources[{i}]"
            if source.start is not None and source.end is not None and source.end <= source.start:
                problems.append(f"{key}.end: {source.end:g} is not after start {source.start:g}")
            uri = source.uri
            if is_url(uri) and not uri.lower().startswith("file://"):
                scheme = urlsplit(uri).scheme.lower()
                if scheme not in ("http", "https"):
                    problems.append(f"{key}.uri: unsupported URL scheme {scheme!r} (use http, https, file or a path)")
                continue  # not fetched here: download checks the host and the content
            try:
                local_path(uri, root)
            except Rejected as exc:
                what = "file not found" if exc.reason == "not_found" else exc.reason
                problems.append(f"{key}.uri: {what}: {uri}")
    return problems


def _convert_problems(params: Params, root: Path) -> list[str]:
    problems = []
    have = ", ".join(params.identities)
    for key in ("swap_to", "replace"):
        name = getattr(params.convert, key)
        if name not in params.identities:
            problems.append(f"convert.{key}: {name!r} is not an identity in params.yaml (have: {have})")
    # train needs every identity's record (it trains every decoder); convert the target's too
    checks: list[tuple[str, list[str], bool]] = [(f"identities.{name}.consent", [name], False)
                                                 for name in params.identities]  # fmt: skip
    checks.append(("target.consent", [], True))
    for key, identities, target in checks:
        try:
            require_consent(params, identities, target=target, root=root)
        except StageFailed as exc:
            line = str(exc)
            problems.append(line if line.startswith(key) else f"{key}: {line}")
    return problems


def _target_problems(params: Params, root: Path, check_face: bool, timeout: float) -> list[str]:
    uri = params.target.uri
    if is_url(uri):
        return [f"target.uri: must be a local file (convert reads it directly), not a URL: {uri}"]
    path = Path(uri).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        return [f"target.uri: file not found: {uri}"]
    try:
        problem = _within(timeout, lambda: _read_target(path, params, check_face))
    except TimeoutError:
        return [f"target.uri: reading {uri} took longer than {timeout:g} s"]
    except Rejected as exc:
        return [f"target.uri: {exc.reason}: {exc.message}"]
    except Exception as exc:  # an unforeseen input gets its line too, never a traceback
        return [f"target.uri: cannot be read: {type(exc).__name__}: {exc}"[:300]]
    return [problem] if problem else []


def _read_target(path: Path, params: Params, check_face: bool) -> str | None:
    """Probe the target and look for a face in TARGET_SAMPLES frames spread over it (one seek each,
    so a long target costs no more than a short one). Returns the problem line, or None."""
    from facedag.sources.media import iter_frames, probe

    info = probe(path)
    if not check_face:
        return None
    from facedag.faces.detect import FaceDetector

    frames = []
    for k in range(TARGET_SAMPLES):
        frame = next(iter_frames(path, start=info.duration * k / TARGET_SAMPLES), None)
        if frame is not None:
            frames.append(frame.image)
    cv = params.convert
    detector = FaceDetector(cv.score_threshold, cv.min_size, cv.detect_max_side, max_batch=TARGET_SAMPLES)
    if any(detector.detect_batch(frames)):
        return None
    return (f"target.uri: no face found in {len(frames)} sampled frames of {params.target.uri} "
            f"(convert.score_threshold {cv.score_threshold:g}, convert.min_size {cv.min_size})")  # fmt: skip


def _within(timeout: float, work: Callable[[], T]) -> T:
    """Run `work` on a daemon thread and wait at most `timeout` seconds for it (TimeoutError).

    A decode stuck inside FFmpeg cannot be interrupted from Python; a daemon thread at least lets
    the preflight answer and the process exit.
    """
    box: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            box.put((True, work()))
        except BaseException as exc:  # handed to the caller
            box.put((False, exc))

    threading.Thread(target=run, name="preflight-target", daemon=True).start()
    try:
        ok, value = box.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError from None
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """`python -m facedag.preflight [--root DIR] [--params FILE] [--no-face]`."""
    parser = argparse.ArgumentParser(prog="python -m facedag.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the project folder (default: the current one)")
    parser.add_argument("--params", default="params.yaml", help="relative to --root")
    parser.add_argument("--no-face", action="store_true", help="do not look for a face in the target")
    args = parser.parse_args(argv)
    problems = preflight(args.params, root=args.root, check_target_face=not args.no_face)
    for line in problems:
        print(f"preflight: {line}", file=sys.stderr)
    if not problems:
        print("preflight: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
