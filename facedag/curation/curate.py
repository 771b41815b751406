"""Dataset curation: set shots aside for evaluation, drop blurry faces and near-duplicates, then
balance pose x lighting bins.

The steps, in order (`curate` runs them all; the held-out shots are chosen first, by `holdout_mask`):

0. Held-out shots: `holdout_mask` sets whole shots aside (a fraction of the identity's faces,
   chosen by the seed), so that the model is scored on frames it has never seen a near-copy
   of: neighbouring frames of one shot are near-identical, so a face-level split would
   measure memorisation. Shots are chosen before anything else, and a training face that is a
   near-duplicate (the rule of step 2) of ANY face of a held-out shot is dropped
   (`near_holdout`): a shot that cuts back to the same camera set-up must not leak either.
   Steps 1-3 then run on each side separately: the held-out faces are cleaned and thinned
   the same way (toward `holdout_max_faces`), but a training face and a held-out face are
   never merged.
1. Blur: a face is `blurry` when its sharpness (variance of the Laplacian of the aligned
   face, from the align stage) is below `min_sharpness`, or below `min_sharpness_rel` times
   the identity's median sharpness. The relative rule adapts to footage that is soft
   throughout (a webcam), where an absolute threshold would drop all or nothing; it is off
   (0) by default.
2. Near-duplicates: two faces are duplicates when BOTH
     - their perceptual hashes (64-bit DCT pHash of the aligned face, `phash`) differ in at
       most `phash_distance` bits, and
     - their feature distance (`feature_distance` below) is at most `feature_distance`.
   The hash alone merges different poses of a smooth, low-contrast face; the features alone
   merge different frames of the same pose with a different expression or background. Faces
   are visited sharpest first and a face is dropped when it duplicates one already kept, so
   of every duplicate pair the sharper one stays (and chains A~B~C never drop all three).
3. Balance: the survivors go into yaw x pitch x luminance x lighting-direction bins
   (facedag.curation.coverage.pose_light_grid). Each bin is sorted sharpest first; faces are then
   taken round robin across bins (each round the best remaining face of every non-empty
   bin, the sharpest of them first) until `max_faces`. Rare conditions are thus all kept
   and common ones are thinned, which is the point of the dataset. DFL's "final" sort does
   the same over yaw, then pitch inside each yaw bin, with a fixed per-yaw-bin quota; see
   benchmarks/bench_dedupe.py for the comparison. With a target profile (the identity that
   convert paints into the target; facedag.curation.target_profile), the training side's round robin
   is weighted toward the bins of the target's poses and lighting (`balance`'s weights): the
   budget the target will need goes there first, and every other bin still keeps its best face.

Feature distance: the root of the sum of squares of
  - pose: (yaw, pitch) / 90 degrees (the default 0.1 is 9 degrees of yaw alone). Not roll:
    alignment removes it, so two faces that differ only in roll look alike to the model.
  - expression: mouth_open, eyes_open (0..1 proxies)
  - lighting: luminance (0..1), asymmetry / 2 (it moves with a pixel of landmark jitter)
  - appearance: the RMS difference of an 8 x 8 luma thumbnail of the aligned face, 0..1
    grey (8 x 8 so that 1-2 px of alignment jitter barely moves it, while a turn of the
    head, a different face or a lighting change does)
Missing columns are left out (both faces count as equal on them).

Calibration (64 px aligned astronaut, tests/curation/test_curate.py): a 1 px shift gives a pHash
distance of 6 and a thumbnail RMS of 0.03, 2 px give 8 and 0.07, noise and JPEG 0 and
0.005; an 8 degree roll 16 bits, a perspective head turn 22, a mirrored face 32, another
person 34; 30 % brighter light keeps the hash (0 bits) but moves the thumbnail by 0.15.
Hence the defaults phash_distance 10 and feature_distance 0.1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from facedag.curation.coverage import Grid, pose_light_grid

THUMB = 8  # side of the luma thumbnail in the feature vector
# (column, scale): scalar features and how they are normalised in the feature distance
FEATURE_SCALES: tuple[tuple[str, float], ...] = (
    ("yaw", 90.0),
    ("pitch", 90.0),
    ("mouth_open", 1.0),
    ("eyes_open", 1.0),
    ("luminance", 1.0),
    ("asymmetry", 2.0),
)


# -- image measures ------------------------------------------------------------------------

def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey of an RGB (or grey) image."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash.

    Grey, resized to 32 x 32 (area), 2-D DCT, the 8 x 8 lowest frequencies; each bit says
    whether that coefficient is above the median of the 63 non-DC ones. Bit k is
    coefficient (k // 8, k % 8), bit 0 the DC term (always 0, it is excluded from the median
    but compared the same way, so it carries no information).
    """
    g = cv2.resize(to_gray(image), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    d = cv2.dct(g)[:8, :8].reshape(-1)
    med = np.median(d[1:])
    bits = (d > med).astype(np.uint64)
    bits[0] = 0
    return int((bits << np.arange(64, dtype=np.uint64)).sum())


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """The luma thumbnail of the feature vector: side x side, float32 in 0..1, flattened."""
    g = cv2.resize(to_gray(image), (side, side), interpolation=cv2.INTER_AREA)
    return (g.astype(np.float32) / 255.0).reshape(-1)


def hash_to_hex(h: int) -> str:
    return f"{int(h):016x}"


def hex_to_hash(s: str) -> int:
    return int(s, 16)


# -- the steps -------------------------------------------------------------------------------

def blurry_mask(sharp: np.ndarray, min_sharpness: float, min_sharpness_rel: float = 0.0) -> np.ndarray:
    """True for faces below the absolute threshold or below rel x median sharpness."""
    s = np.asarray(sharp, dtype=np.float64)
    limit = float(min_sharpness)
    if min_sharpness_rel > 0 and s.size:
        limit = max(limit, float(min_sharpness_rel) * float(np.nanmedian(s)))
    return ~(s >= limit)  # NaN sharpness is blurry too


def scalar_features(table: pd.DataFrame) -> np.ndarray:
    """(n, k) normalised scalar features (see the module docstring); NaN becomes 0."""
    cols = [np.asarray(table[c], dtype=np.float64) / s for c, s in FEATURE_SCALES if c in table]
    if not cols:
        return np.zeros((len(table), 0))
    return np.nan_to_num(np.stack(cols, axis=1), nan=0.0)


def find_duplicates(
    hashes: np.ndarray,
    features: np.ndarray,
    thumbs: np.ndarray,
    order: Sequence[int],
    phash_distance: int,
    feature_distance: float,
) -> dict[int, tuple[int, int, float]]:
    """Greedy near-duplicate removal.

    Returns {dropped index: (index of the kept face it duplicates, Hamming distance,
    feature distance)}.

    Faces are visited in `order` (sharpest first); each is compared with every face kept so
    far: a duplicate needs Hamming <= phash_distance and feature distance <= feature_distance.
    """
    n = len(order)
    hashes = np.asarray(hashes, dtype=np.uint64)
    kept_idx = np.empty(n, dtype=np.int64)
    kept_hash = np.empty(n, dtype=np.uint64)
    k = 0
    dropped: dict[int, tuple[int, int, float]] = {}
    for i in order:
        match = _closest(int(i), kept_idx[:k], kept_hash[:k], hashes, features, thumbs, phash_distance,
                         feature_distance)
        if match is not None:
            dropped[int(i)] = match
            continue
        kept_idx[k] = i
        kept_hash[k] = hashes[i]
        k += 1
    return dropped


def near_copies(
    hashes: np.ndarray,
    features: np.ndarray,
    thumbs: np.ndarray,
    targets: Sequence[int],
    reference: Sequence[int],
    phash_distance: int,
    feature_distance: float,
) -> dict[int, tuple[int, int, float]]:
    """The `targets` that duplicate (the rule of find_duplicates) any face of `reference`.

    Returns {target index: (closest reference index, Hamming distance, feature distance)}.
    Unlike find_duplicates, the reference set is fixed: this is how training faces that
    nearly copy a held-out face are found, whichever is sharper.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    ref_idx = np.asarray(reference, dtype=np.int64)
    ref_hash = hashes[ref_idx]
    found: dict[int, tuple[int, int, float]] = {}
    for i in targets:
        match = _closest(int(i), ref_idx, ref_hash, hashes, features, thumbs, phash_distance, feature_distance)
        if match is not None:
            found[int(i)] = match
    return found


def _closest(i: int, cand_idx: np.ndarray, cand_hash: np.ndarray, hashes: np.ndarray, features: np.ndarray,
             thumbs: np.ndarray, phash_distance: int, feature_distance: float) -> tuple[int, int, float] | None:
    """(candidate index, Hamming, feature distance) of the candidate face i duplicates, or None."""
    if not cand_idx.size:
        return None
    ham = hamming(cand_hash, hashes[i])
    close = np.flatnonzero(ham <= phash_distance)
    if not close.size:
        return None
    cand = cand_idx[close]
    d = feature_dist(features[cand], thumbs[cand], features[i], thumbs[i])
    j = int(np.argmin(d))
    if d[j] > feature_distance:
        return None
    return int(cand[j]), int(ham[close[j]]), float(d[j])


def holdout_mask(groups: Sequence[str], fraction: float, seed: int,
                 needs: Sequence[Collection[Hashable]] | None = None) -> np.ndarray:
    """True for the faces of the held-out shots: whole shots, about `fraction` of the faces.

    `groups` names each face's shot. Shots are visited in an order drawn from `seed` (over the
    sorted names, so the choice does not depend on row order) and a shot is held out when the
    held-out faces stay within fraction x faces. When no shot fits (few, long shots) the
    smallest shot is held out anyway, so there is an honest evaluation set whenever there are
    two shots or more; with one shot, or fraction 0, nothing is held out. Never all shots.

    `needs` (per face, the target regions it covers: facedag.curation.target_profile.target_regions)
    protects coverage: a shot is not held out while it is the last training shot with faces in
    a region the target shows, since training without them is what leaves a pose unswappable.
    The fallback takes the smallest unprotected shot; only when every shot is protected does
    it take the smallest one regardless, keeping the evaluation set.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    names, inverse, sizes = np.unique(np.asarray([str(g) for g in groups], dtype=str), return_inverse=True,
                                      return_counts=True)
    inverse = inverse.reshape(-1)
    covers: list[set[Hashable]] = [set() for _ in range(names.size)]
    for g, face_needs in zip(inverse.tolist(), needs, strict=True) if needs is not None else ():
        covers[g].update(face_needs)
    shots_covering = Counter(k for c in covers for k in c)  # per region: training shots with faces there
    held = np.zeros(names.size, dtype=bool)

    def protected(g: int) -> bool:
        return any(shots_covering[k] <= 1 for k in covers[g])

    def hold(g: int) -> None:
        held[g] = True
        shots_covering.subtract(covers[g])

    if fraction > 0 and names.size >= 2:
        order = np.random.default_rng(seed).permutation(names.size).tolist()
        budget, taken = fraction * len(groups), 0
        for g in order:
            if taken + sizes[g] <= budget and not protected(g):
                hold(g)
                taken += int(sizes[g])
        if not held.any():  # the first smallest in seeded order, unprotected where one is
            hold(min([g for g in order if not protected(g)] or order, key=lambda g: sizes[g]))
    return held[inverse]


def feature_dist(fa: np.ndarray, ta: np.ndarray, fb: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """Feature distance of rows (fa, ta) to one face (fb, tb): sqrt(|dscalar|^2 + rms(dthumb)^2)."""
    ds = np.atleast_2d(fa) - fb
    dt = np.atleast_2d(ta) - tb
    rms2 = (dt.astype(np.float64) ** 2).mean(axis=1) if dt.shape[1] else 0.0
    return np.sqrt((ds**2).sum(axis=1) + rms2)


def balance(cells: np.ndarray, sharp: np.ndarray, budget: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Indices chosen round robin across bins, sharpest first within a bin, at most `budget`.

    Each round takes the sharpest remaining face of every non-empty bin (the round itself
    ordered sharpest first, so a budget that ends mid-round keeps the better faces).
    `weights` (one per cell id, >= 1; facedag.curation.target_profile.cell_weights) make it a weighted
    round robin: a bin of weight w gives its k-th face at round k / w, so it gets about w
    faces for every one of a weight-1 bin, and in a tie the heavier bin goes first. Every
    non-empty bin still gives its sharpest face in the first round, so weighting moves the
    budget toward the target's conditions without dropping the others. None = all weights 1.
    Returns indices in selection order.
    """
    cells = np.asarray(cells, dtype=np.int64)
    sharp = np.asarray(sharp, dtype=np.float64)
    if budget <= 0 or cells.size == 0:
        return np.zeros(0, dtype=np.int64)
    # sort by (cell, -sharpness, index): contiguous runs per cell, sharpest first
    order = np.lexsort((np.arange(cells.size), -np.nan_to_num(sharp, nan=-np.inf), cells))
    c = cells[order]
    start = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
    run_id = np.repeat(np.arange(start.size), np.diff(np.r_[start, c.size]))
    pos = np.arange(c.size) - start[run_id]  # rank within its bin (0 = sharpest)
    w = np.ones(c.size) if weights is None else np.asarray(weights, dtype=np.float64)[c]
    # round robin = by (weighted) rank within bin, heavier bins first, then sharpest first inside a round
    final = np.lexsort((order, -np.nan_to_num(sharp[order], nan=-np.inf), -w, pos / w))
    return order[final][:budget]


@dataclass
class CurateResult:
    """Per input row: `status` (kept, holdout, blurry, near_duplicate, near_holdout, over_budget),
    `duplicate_of` (row of the kept or held-out face it duplicates, -1 otherwise) with the pair's
    `dup_hamming` and `dup_distance`, and `cells` (balancing bin); `selected`: the kept training
    rows in selection order; `holdout_selected`: the kept held-out rows in selection order."""

    status: np.ndarray
    duplicate_of: np.ndarray
    dup_hamming: np.ndarray
    dup_distance: np.ndarray
    cells: np.ndarray
    selected: np.ndarray
    holdout_selected: np.ndarray
    grid: Grid

    def count(self, status: str) -> int:
        return int((self.status == status).sum())


def signature(image: np.ndarray) -> tuple[int, np.ndarray]:
    """(pHash, luma thumbnail) of one aligned face: what dedupe keeps of it in memory."""
    return phash(image), thumbnail(image)


def curate(
    table: pd.DataFrame,
    hashes: np.ndarray,
    thumbs: np.ndarray,
    *,
    min_sharpness: float,
    phash_distance: int,
    feature_distance: float,
    max_faces: int,
    yaw_bins: int = 7,
    pitch_bins: int = 5,
    light_bins: int = 3,
    light_dir_bins: int = 3,
    min_sharpness_rel: float = 0.0,
    held_out: np.ndarray | None = None,
    holdout_max_faces: int | None = None,
    cell_weights: np.ndarray | None = None,
) -> CurateResult:
    """Run blur, near-copies of held-out faces, dedupe and balance over the rows of `table`.

    `table` holds one row per face with `sharpness` and the feature columns it has (see
    FEATURE_SCALES); `hashes` (uint64) and `thumbs` ((n, THUMB*THUMB) float) are the faces'
    `signature`s, same order. `held_out` (bool per row, from holdout_mask) marks the faces of
    the held-out shots, thinned toward `holdout_max_faces` (None: only blur and duplicates);
    the others toward `max_faces`. `cell_weights` (one per cell of the balancing grid,
    facedag.curation.target_profile.cell_weights) weight the training side's round robin toward the
    target's conditions (`balance`); duplicates are still resolved by sharpness alone (visiting
    heavy bins first drops the only face of a lighter target bin when a pair straddles their
    edge: on the demo it cost 13 points of target coverage). The held-out side stays evenly
    balanced, so that its score keeps measuring the same thing whatever the target.
    """
    n = len(table)
    hashes = np.asarray(hashes, dtype=np.uint64)
    thumbs = np.asarray(thumbs, dtype=np.float32).reshape(n, THUMB * THUMB)
    if len(hashes) != n:
        raise ValueError("one hash and one thumbnail per row")
    held = np.zeros(n, dtype=bool) if held_out is None else np.asarray(held_out, dtype=bool)
    if held.shape != (n,):
        raise ValueError("one held_out flag per row")
    sharp = np.asarray(table["sharpness"], dtype=np.float64)
    status = np.full(n, "kept", dtype=object)
    dup_of = np.full(n, -1, dtype=np.int64)
    dup_ham = np.full(n, -1, dtype=np.int64)
    dup_dist = np.full(n, np.nan)
    grid = pose_light_grid(yaw_bins, pitch_bins, light_bins, light_dir_bins)
    if cell_weights is not None and np.shape(cell_weights) != (grid.size,):
        raise ValueError(f"cell_weights needs one weight per bin ({grid.size}), got shape {np.shape(cell_weights)}")
    cells = grid.cells(table)
    feats = scalar_features(table)

    def mark(found: dict[int, tuple[int, int, float]], why: str) -> None:
        for i, (j, ham, dist) in found.items():
            status[i] = why
            dup_of[i], dup_ham[i], dup_dist[i] = j, ham, dist

    blurry = blurry_mask(sharp, min_sharpness, min_sharpness_rel)
    status[blurry] = "blurry"
    # every face of a held-out shot, blurry or not, keeps its near-copies out of training
    mark(near_copies(hashes, feats, thumbs, np.flatnonzero(~blurry & ~held), np.flatnonzero(held),
                     phash_distance, feature_distance), "near_holdout")
    chosen: list[np.ndarray] = []
    sides = ((~held, max_faces, cell_weights), (held, n if holdout_max_faces is None else holdout_max_faces, None))
    for side, budget, weights in sides:
        ok = np.flatnonzero(side & (status == "kept"))
        order = ok[np.lexsort((ok, -sharp[ok]))]
        mark(find_duplicates(hashes, feats, thumbs, order, phash_distance, feature_distance), "near_duplicate")
        survivors = np.flatnonzero(side & (status == "kept"))
        picked = survivors[balance(cells[survivors], sharp[survivors], budget, weights)]
        status[np.setdiff1d(survivors, picked)] = "over_budget"
        chosen.append(picked)
    status[chosen[1]] = "holdout"
    return CurateResult(status=status, duplicate_of=dup_of, dup_hamming=dup_ham, dup_distance=dup_dist,
                        cells=cells, selected=chosen[0], holdout_selected=chosen[1], grid=grid)
