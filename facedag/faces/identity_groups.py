"""Which tracks are the same person: a few SFace embeddings per track, grouped by identity,
and the choice of the tracks to keep (a reference, `group:N`, or the largest group).

A track (facedag.faces.detect.IoUTracker) is one face followed through a shot. Embedding
every frame would cost about 20 ms a face for no gain: consecutive frames of a track are the
same person. `TrackSampler` embeds the first face of each track and then one face every
`interval` seconds, at most `per_track` faces, and keeps one thumbnail per track for the
contact sheets. A track's identity is the normalised mean of its embeddings.

`group_tracks` clusters tracks by average-linkage agglomeration on cosine similarity: the two
groups with the highest mean pairwise cosine merge while that mean is at least `threshold`.
Average linkage, not single: one blurry profile face that happens to sit near two people
must not chain them into one group. Groups are numbered 1, 2, ... by their number of faces
(then by their first track), so `group:1` is the person seen most; the numbers hold for the
same footage and parameters, which is what `identities.<ID>.reference: group:N` relies on.

`choose_tracks` picks the kept tracks: with reference embeddings (images or a clip frame of
the person, facedag.faces.reference), every track whose identity is within `threshold`
cosine of the reference's mean; with `group:N`, that group; with neither, the largest group.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facedag.faces.identity import Embedder, align_112, cosine, mean_embedding
from facedag.tables import decode_image, encode_image


@dataclass
class _Track:
    faces: int = 0
    size_sum: float = 0.0
    last_sample: float | None = None
    pending: list[np.ndarray] = field(default_factory=list)  # aligned 112 px faces waiting to be embedded
    embeddings: list[list[float]] = field(default_factory=list)
    thumb: bytes | None = None


class TrackSampler:
    """Collects a few aligned faces per track as a clip streams; `finish` embeds them in batches.

    `add(track, time, image, landmarks, size)` is called for every kept face; it only aligns a
    112 px face (cheap) when the track is due a sample. `finish(embedder)` returns a
    JSON-able {track: {"faces", "size", "embeddings", "thumb"}} (thumb: base64 JPEG).
    """

    def __init__(self, interval: float = 1.0, per_track: int = 5) -> None:
        self.interval = float(interval)
        self.per_track = max(1, int(per_track))
        self._tracks: dict[int, _Track] = {}

    def add(self, track: int, time: float, image: np.ndarray, landmarks: np.ndarray, size: float) -> None:
        t = self._tracks.setdefault(track, _Track())
        t.faces += 1
        t.size_sum += float(size)
        due = t.last_sample is None or time - t.last_sample >= self.interval
        if not due or len(t.pending) >= self.per_track:
            return
        try:
            face = align_112(image, landmarks)
        except ValueError:  # degenerate landmarks: try the next face of the track
            return
        t.last_sample = time
        t.pending.append(face)
        if t.thumb is None:
            t.thumb = encode_image(face, "jpg", 85)

    def finish(self, embedder: Embedder) -> dict[str, dict[str, Any]]:
        order = [(tid, k) for tid, t in self._tracks.items() for k in range(len(t.pending))]
        faces = [self._tracks[tid].pending[k] for tid, k in order]
        vectors = embedder.embed(faces) if faces else np.empty((0, 128), np.float32)
        for (tid, _), v in zip(order, vectors, strict=True):
            self._tracks[tid].embeddings.append([round(float(x), 6) for x in v])
        out: dict[str, dict[str, Any]] = {}
        for tid, t in sorted(self._tracks.items()):
            out[str(tid)] = {
                "faces": t.faces,
                "size": round(t.size_sum / max(t.faces, 1), 1),
                "embeddings": t.embeddings,
                "thumb": base64.b64encode(t.thumb).decode("ascii") if t.thumb else None,
            }
            t.pending.clear()
        return out


def thumb_image(track: dict[str, Any]) -> np.ndarray | None:
    """The RGB thumbnail of a track record from TrackSampler.finish (None when it has none)."""
    data = track.get("thumb")
    return decode_image(base64.b64decode(data)) if data else None


def track_identity(track: dict[str, Any]) -> np.ndarray | None:
    """A track's identity (normalised mean embedding), or None when none of its faces was embedded."""
    emb = track.get("embeddings") or []
    return mean_embedding(np.asarray(emb, np.float32)) if emb else None


def group_tracks(identities: Sequence[np.ndarray], weights: Sequence[int], threshold: float) -> list[int]:
    """Group number (1 = most faces) of each track, by average-linkage clustering (module doc).

    Keeps the sum of pairwise cosines between every two clusters, so a merge updates one row
    and column: O(n^2) per merge, vectorised (hundreds of tracks take milliseconds).
    """
    n = len(identities)
    if n == 0:
        return []
    x = np.stack([np.asarray(v, np.float64) for v in identities])
    sums = x @ x.T  # sum of cosines between clusters a and b (singletons to start)
    sizes = np.ones(n)
    alive = np.ones(n, bool)
    members: list[list[int]] = [[i] for i in range(n)]
    while alive.sum() > 1:
        avg = sums / np.outer(sizes, sizes)
        avg[~alive, :] = -np.inf
        avg[:, ~alive] = -np.inf
        np.fill_diagonal(avg, -np.inf)
        a, b = np.unravel_index(int(np.argmax(avg)), avg.shape)
        if avg[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        sums[a, :] += sums[b, :]
        sums[:, a] += sums[:, b]
        sizes[a] += sizes[b]
        alive[b] = False
        members[a] = sorted(members[a] + members[b])
    clusters = [members[i] for i in np.flatnonzero(alive)]
    clusters.sort(key=lambda c: (-sum(weights[i] for i in c), c[0]))
    labels = [0] * n
    for g, group in enumerate(clusters, start=1):
        for i in group:
            labels[i] = g
    return labels


@dataclass
class IdentityChoice:
    """Which tracks are kept, and the whole picture for identity.json and the report."""

    kept: set[int]
    similarity: dict[int, float | None]  # per track: cosine to the reference / the kept group's centre
    report: dict[str, Any]
    centre: np.ndarray | None  # the person's mean embedding (reference or kept group); None: nobody embedded


def choose_tracks(tracks: dict[int, dict[str, Any]], threshold: float, reference: np.ndarray | None = None,
                  group: int | None = None, reference_label: str | None = None) -> IdentityChoice:  # fmt: skip
    """Pick the tracks of the person (module doc). `tracks`: {track id: TrackSampler record}.

    Tracks without any embedding (every sampled face had degenerate landmarks) join no group
    and are kept only in the largest-group mode when no track has an embedding at all.
    Raises ValueError for `group` N when there is no group N.
    """
    ids = sorted(tracks)
    ident = {t: track_identity(tracks[t]) for t in ids}
    embedded = [t for t in ids if ident[t] is not None]
    labels = group_tracks([ident[t] for t in embedded], [tracks[t]["faces"] for t in embedded], threshold)
    label_of = dict(zip(embedded, labels, strict=True))
    n_groups = max(labels, default=0)
    centres = {g: mean_embedding(np.stack([ident[t] for t in embedded if label_of[t] == g]))
               for g in range(1, n_groups + 1)}  # fmt: skip
    if reference is not None:
        mode, centre = "reference", mean_embedding(reference)
    elif group is not None:
        if group not in centres:
            raise ValueError(f"reference group:{group} does not exist: this footage has {n_groups} group(s)")
        mode, centre = f"group:{group}", centres[group]
    else:
        mode, centre = "largest_group", centres.get(1)
    similarity: dict[int, float | None] = {
        t: (float(cosine(ident[t], centre)) if ident[t] is not None and centre is not None else None) for t in ids
    }
    if reference is not None:
        kept = {t for t in embedded if similarity[t] is not None and similarity[t] >= threshold}
    elif centre is not None:
        target = group if group is not None else 1
        kept = {t for t in embedded if label_of[t] == target}
    else:
        kept = set(ids)  # nothing could be embedded: nothing to tell people apart by
    kept_groups = sorted({label_of[t] for t in kept if t in label_of})
    groups = []
    for g in range(1, n_groups + 1):
        members = [t for t in embedded if label_of[t] == g]
        groups.append({
            "group": g,
            "tracks": members,
            "faces": sum(tracks[t]["faces"] for t in members),
            "size": round(float(np.mean([tracks[t]["size"] for t in members])), 1),
            "kept": g in kept_groups,
            "similarity": round(float(cosine(centres[g], centre)), 4) if centre is not None else None,
        })  # fmt: skip
    report = {
        "mode": mode,
        "reference": reference_label,
        "threshold": threshold,
        "groups": groups,
        "tracks": {str(t): {"group": label_of.get(t), "faces": tracks[t]["faces"], "kept": t in kept,
                            "similarity": None if similarity[t] is None else round(similarity[t], 4)}
                   for t in ids},
        "kept_tracks": sorted(kept),
        "faces_kept": sum(tracks[t]["faces"] for t in kept),
        "faces_total": sum(tracks[t]["faces"] for t in ids),
    }
    return IdentityChoice(kept, similarity, report, centre)


def group_sheet(report: dict[str, Any], tracks: dict[int, dict[str, Any]], per_group: int = 8,
                side: int = 80) -> np.ndarray:  # fmt: skip
    """A contact sheet of the identity groups: one row per group (its number, faces and whether it
    was kept on the left), up to `per_group` track thumbnails, biggest tracks first. RGB uint8."""
    import cv2

    label_w, gap = 150, 4
    if not report["groups"]:  # grouping was off or found nobody: say so instead of an empty image
        sheet = np.full((side, label_w + per_group * (side + gap)), 255, np.uint8)
        cv2.putText(sheet, f"no identity groups ({report.get('mode')})", (6, side // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, 90, 1)  # fmt: skip
        return np.repeat(sheet[:, :, None], 3, axis=2)
    rows = report["groups"]
    sheet = np.full((len(rows) * (side + gap) + gap, label_w + per_group * (side + gap) + gap, 3), 255, np.uint8)
    for r, g in enumerate(rows):
        y = gap + r * (side + gap)
        colour = (20, 120, 20) if g["kept"] else (90, 90, 90)
        cv2.putText(sheet, f"group {g['group']}", (6, y + 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
        cv2.putText(sheet, f"{g['faces']} faces", (6, y + 46), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
        cv2.putText(sheet, "kept" if g["kept"] else "not kept", (6, y + 66), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
        members = sorted(g["tracks"], key=lambda t: -tracks[t]["faces"])[:per_group]
        for c, t in enumerate(members):
            img = thumb_image(tracks[t])
            if img is None:
                continue
            x = label_w + gap + c * (side + gap)
            sheet[y : y + side, x : x + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    return sheet
