"""Dedupe: pHash, planted near-duplicates, blur, balancing across bins, and the held-out shots."""

from __future__ import annotations

import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from skimage import data

from facedag.curation.coverage import pose_light_grid
from facedag.curation.curate import THUMB, balance, blurry_mask, curate, hamming, holdout_mask, phash, signature
from facedag.curation.target_profile import cell_weights
from facedag.faces.features import face_features
from tests.curation.test_target_profile import planted as planted_target

SIZE = 64


def face_crop(image: np.ndarray, center: tuple[float, float], height: float, *, dx: float = 0, dy: float = 0,
              angle: float = 0, scale: float = 1.0, turn: float = 0.0) -> np.ndarray:
    """A SIZE x SIZE face-centred crop, optionally shifted (output px), rotated, scaled, or
    perspective-turned (`turn` > 0 squeezes the image-left side, as a head turning away)."""
    s = SIZE / (height * 1.6) * scale
    m = cv2.getRotationMatrix2D(center, angle, s)
    m[:, 2] += (SIZE / 2 - center[0] + dx, SIZE / 2 - center[1] + dy)
    out = cv2.warpAffine(image, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)
    if turn:
        src = np.float32([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]])
        dst = np.float32([[0, SIZE * turn], [SIZE, 0], [SIZE, SIZE], [0, SIZE * (1 - turn)]])
        out = cv2.warpPerspective(out, cv2.getPerspectiveTransform(src, dst), (SIZE, SIZE),
                                  borderMode=cv2.BORDER_REPLICATE)
    return out


def astronaut(**kw) -> np.ndarray:
    return face_crop(data.astronaut(), (224.0, 116.0), 120.0, **kw)


def hopper(**kw) -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return face_crop(img, (265.0, 216.0), 221.0, **kw)


def planted() -> tuple[list[str], list[np.ndarray], pd.DataFrame, dict[str, str]]:
    """Named faces with features (measured from the image; pose given), and the expected
    outcome: which kept face each planted duplicate must be merged into ("" = must stay)."""
    rng = np.random.default_rng(0)
    base = astronaut()
    jpeg = cv2.imdecode(cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_UNCHANGED)
    faces = {
        # name: (image, yaw, pitch, expected: the face it duplicates or "")
        "base": (base, 0.0, 0.0, ""),
        "copy": (base.copy(), 0.0, 0.0, "base"),
        "shift1": (astronaut(dx=1), 0.5, 0.0, "base"),
        "shift2": (astronaut(dx=2, dy=1), 1.0, -0.5, "base"),
        "noise": (np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8), 0.0, 0.0, "base"),
        "jpeg": (jpeg, 0.0, 0.0, "base"),
        "turned": (astronaut(turn=0.12), 20.0, 0.0, ""),  # another pose: a turned head
        "looks_up": (base.copy(), 0.0, 18.0, ""),  # same pixels, pose 18 degrees apart: kept
        "mirrored": (base[:, ::-1].copy(), 0.0, 0.0, ""),
        "brighter": (np.clip(base * 1.3, 0, 255).astype(np.uint8), 0.0, 0.0, ""),  # another lighting
        "hopper": (hopper(), 0.0, 0.0, ""),
        "hopper_noise": (np.clip(hopper() + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8), 0.0, 0.0,
                         "hopper"),
    }
    names = list(faces)
    images = [faces[n][0] for n in names]
    rows = []
    for n in names:
        img, yaw, pitch, _ = faces[n]
        rows.append({"yaw": yaw, "pitch": pitch, "roll": 0.0, **face_features(img)})
    table = pd.DataFrame(rows)
    # the originals are the sharpest of their groups, so they are the ones kept
    table.loc[names.index("base"), "sharpness"] = 1e6
    table.loc[names.index("hopper"), "sharpness"] = 1e6
    return names, images, table, {n: faces[n][3] for n in names}


def test_phash_is_stable_under_noise_and_far_for_other_faces():
    base = astronaut()
    assert phash(base) == phash(base.copy())
    assert hamming(phash(base), phash(cv2.GaussianBlur(base, (0, 0), 1.0))) <= 2
    assert hamming(phash(base), phash(hopper())) > 20
    assert hamming(phash(base), phash(base[:, ::-1].copy())) > 20
    assert phash(base) & 1 == 0  # the DC bit carries nothing
    hashes = np.array([phash(base), phash(hopper())], dtype=np.uint64)
    assert hamming(hashes, hashes[0]).tolist()[0] == 0


def test_planted_duplicates_are_found_and_different_faces_and_poses_are_not():
    names, images, table, expected = planted()
    sigs = [signature(im) for im in images]
    result = curate(table, np.array([h for h, _ in sigs], dtype=np.uint64),
                    np.stack([t for _, t in sigs]).reshape(len(names), THUMB * THUMB),
                    min_sharpness=10, phash_distance=10, feature_distance=0.1, max_faces=100)
    got = {n: (names[result.duplicate_of[i]] if result.status[i] == "near_duplicate" else "")
           for i, n in enumerate(names)}
    assert got == expected
    assert set(result.status) == {"kept", "near_duplicate"}
    dups = result.status == "near_duplicate"
    assert (result.dup_hamming[dups] <= 10).all() and (result.dup_distance[dups] <= 0.1).all()


def test_the_sharper_of_a_pair_is_kept():
    base = astronaut()
    table = pd.DataFrame({"yaw": [0.0, 0.0], "pitch": [0.0, 0.0], "luminance": [0.5, 0.5], "sharpness": [50.0, 90.0]})
    sig = signature(base)
    result = curate(table, np.array([sig[0]] * 2, dtype=np.uint64), np.stack([sig[1]] * 2),
                    min_sharpness=10, phash_distance=6, feature_distance=0.08, max_faces=10)
    assert result.status.tolist() == ["near_duplicate", "kept"] and result.duplicate_of[0] == 1


def test_blur_filter_absolute_and_relative():
    s = np.array([5.0, 20.0, 100.0, 120.0, np.nan])
    assert blurry_mask(s, 10).tolist() == [True, False, False, False, True]
    assert blurry_mask(s, 10, min_sharpness_rel=0.5).tolist() == [True, True, False, False, True]  # median 60


def test_balance_takes_the_sharpest_first_and_round_robins_bins():
    cells = np.array([0, 0, 0, 0, 1, 1, 2])
    sharp = np.array([1.0, 9.0, 5.0, 7.0, 3.0, 8.0, 2.0])
    order = balance(cells, sharp, budget=100)
    # round 1: the best of each bin (9 from bin 0, 8 from bin 1, 2 from bin 2), sharpest first;
    # round 2: 7 (bin 0), 3 (bin 1); then bin 0 alone: 5, 1
    assert order.tolist() == [1, 5, 6, 3, 4, 2, 0]
    assert balance(cells, sharp, budget=4).tolist() == [1, 5, 6, 3]
    # a budget of one face per bin keeps every bin
    assert set(cells[balance(cells, sharp, budget=3)]) == {0, 1, 2}
    assert balance(cells, sharp, budget=0).size == 0


def test_curate_balances_toward_max_faces():
    rng = np.random.default_rng(1)
    n = 400
    table = pd.DataFrame({
        "yaw": np.r_[rng.normal(0, 4, n - 20), rng.uniform(-60, 60, 20)],  # mostly frontal, a few turns
        "pitch": rng.normal(0, 5, n),
        "luminance": rng.uniform(0.3, 0.7, n),
        "asymmetry": rng.normal(0, 0.05, n),
        "sharpness": rng.uniform(20, 200, n),
    })
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)  # all distinct
    thumbs = rng.uniform(0, 1, (n, THUMB * THUMB))
    result = curate(table, hashes, thumbs, min_sharpness=30, phash_distance=0, feature_distance=0.0, max_faces=60)
    kept = result.selected
    assert len(kept) == 60 and (result.status[kept] == "kept").all()
    assert result.count("blurry") == int((table["sharpness"] < 30).sum())
    assert result.count("over_budget") == n - 60 - result.count("blurry")
    # every bin with a sharp enough face is represented
    ok = np.flatnonzero(result.status != "blurry")
    assert set(result.cells[kept]) == set(result.cells[ok])


@pytest.mark.parametrize("n", [0, 1])
def test_curate_on_tiny_inputs(n):
    table = pd.DataFrame({"yaw": [0.0] * n, "sharpness": [50.0] * n})
    result = curate(table, np.zeros(n, np.uint64), np.zeros((n, THUMB * THUMB)), min_sharpness=1,
                    phash_distance=4, feature_distance=0.1, max_faces=5)
    assert result.selected.tolist() == list(range(n))


def test_holdout_mask_holds_out_whole_shots_by_seed():
    rng = np.random.default_rng(3)
    groups = [f"shot{g}" for g in rng.integers(0, 20, 600)]
    held = holdout_mask(groups, 0.2, seed=7)
    shots = np.array(groups)
    assert not set(shots[held]) & set(shots[~held])  # whole shots on one side
    assert 0 < held.sum() <= 0.2 * len(groups) and set(shots[~held])
    assert (holdout_mask(groups, 0.2, seed=7) == held).all()  # the seed decides, every time
    order = rng.permutation(len(groups))  # and not the row order
    assert (holdout_mask([groups[i] for i in order], 0.2, seed=7) == held[order]).all()
    assert any(set(shots[holdout_mask(groups, 0.2, seed=s)]) != set(shots[held]) for s in range(8, 12))


def test_holdout_mask_keeps_the_last_shot_of_a_target_region_in_training():
    """Shot "p" alone has faces at the target's profile pose (region ("yaw", 6)): whatever the
    seed, it stays in training; unprotected, some seeds hold it out."""
    groups = ["p"] * 3 + [f"s{i}" for i in range(6) for _ in range(3)]
    needs = [{("yaw", 6)} if g == "p" else {("yaw", 3)} for g in groups]
    shots = np.array(groups)
    seeds = range(40)
    assert any("p" in set(shots[holdout_mask(groups, 0.2, seed=s)]) for s in seeds)
    for s in seeds:
        held = holdout_mask(groups, 0.2, seed=s, needs=needs)
        assert held.any() and "p" not in set(shots[held])
        assert not held.all()
    # two shots that each alone cover a target region: the fallback still holds one out
    both = holdout_mask(["a", "a", "b"], 0.1, seed=0, needs=[{1}, {1}, {2}])
    assert both.tolist() == [False, False, True]
    # a region covered by two shots: one of them may go, never both
    pair = ["a", "b", "c", "d"]
    for s in seeds:
        held = holdout_mask(pair, 0.5, seed=s, needs=[{9}, {9}, set(), set()])
        assert not (held[0] and held[1])


def test_holdout_mask_edge_cases():
    # no shot fits the fraction: the smallest is held out anyway, never all of them
    assert holdout_mask(["a"] * 5 + ["b"] * 3 + ["c"] * 4, 0.1, seed=0).tolist() == [False] * 5 + [True] * 3 + [
        False] * 4
    assert holdout_mask(["a", "b"], 0.99, seed=0).sum() == 1
    assert not holdout_mask(["a"] * 10, 0.5, seed=0).any()  # one shot: nothing honest to hold out
    assert not holdout_mask(["a", "b", "c"], 0.0, seed=0).any()  # fraction 0: off
    assert holdout_mask([], 0.2, seed=0).shape == (0,)
    with pytest.raises(ValueError):
        holdout_mask(["a", "b"], 1.0, seed=0)


def test_near_copies_of_held_out_faces_never_stay_in_training():
    names, images, table, _ = planted()
    sigs = [signature(im) for im in images]
    hashes = np.array([h for h, _ in sigs], dtype=np.uint64)
    thumbs = np.stack([t for _, t in sigs]).reshape(len(names), THUMB * THUMB)
    held = np.isin(names, ["base", "hopper", "hopper_noise", "turned"])
    result = curate(table, hashes, thumbs, min_sharpness=10, phash_distance=10, feature_distance=0.1, max_faces=100,
                    held_out=held, holdout_max_faces=100)
    got = dict(zip(names, result.status, strict=True))
    # base's copies were in training: all out, as near-copies of the held-out base
    for n in ("copy", "shift1", "shift2", "noise", "jpeg"):
        assert got[n] == "near_holdout" and names[result.duplicate_of[names.index(n)]] == "base"
    # the held-out side is deduplicated on its own; training keeps what is far from every held-out face
    assert got["hopper_noise"] == "near_duplicate" and {got[n] for n in ("base", "hopper", "turned")} == {"holdout"}
    assert {n for n, st in got.items() if st == "kept"} == {"looks_up", "mirrored", "brighter"}
    assert sorted(result.holdout_selected.tolist()) == sorted(names.index(n) for n in ("base", "hopper", "turned"))
    assert not held[result.selected].any() and held[result.holdout_selected].all()
    # and the cap thins the held-out faces too
    capped = curate(table, hashes, thumbs, min_sharpness=10, phash_distance=10, feature_distance=0.1, max_faces=100,
                    held_out=held, holdout_max_faces=2)
    assert capped.holdout_selected.size == 2 and capped.count("over_budget") == 1


def test_weighted_balance_gives_heavier_bins_more_turns():
    cells = np.array([0, 0, 0, 0, 1, 1, 2])
    sharp = np.array([1.0, 9.0, 5.0, 7.0, 3.0, 8.0, 2.0])
    # bin 0 weighs 2: its faces come at rounds 0, 0.5, 1, 1.5; and first in a tied round
    assert balance(cells, sharp, 100, np.array([2.0, 1.0, 1.0])).tolist() == [1, 5, 6, 3, 2, 4, 0]
    assert balance(cells, sharp, 100, np.ones(3)).tolist() == balance(cells, sharp, 100).tolist()
    # a budget of one: the heavier bin's best face, though a lighter bin's is sharper
    assert balance(cells, sharp, 1, np.array([1.0, 3.0, 1.0])).tolist() == [5]
    assert balance(cells, sharp, 1, np.array([1.0, 1.0, 3.0])).tolist() == [6]


def test_curate_weighted_toward_a_target_at_yaw_above_30():
    rng = np.random.default_rng(2)
    n = 600
    table = pd.DataFrame({
        "yaw": rng.uniform(-60, 60, n), "pitch": rng.normal(0, 6, n), "luminance": rng.uniform(0.4, 0.6, n),
        "asymmetry": rng.normal(0, 0.03, n), "sharpness": rng.uniform(20, 200, n),
    })
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    thumbs = rng.uniform(0, 1, (n, THUMB * THUMB))
    held = np.zeros(n, dtype=bool)
    held[:60] = True
    target = planted_target([(40, {"yaw": 35.0, "pitch": 0.0}), (10, {"yaw": 0.0, "pitch": 0.0})])
    kwargs = dict(min_sharpness=1, phash_distance=0, feature_distance=0.0, max_faces=60, held_out=held,
                  holdout_max_faces=20)
    plain = curate(table, hashes, thumbs, **kwargs)
    weighted = curate(table, hashes, thumbs, **kwargs, cell_weights=cell_weights(target, pose_light_grid(), 2.0))

    def at_target(rows: np.ndarray) -> int:
        """Faces in the target's main bin: yaw 25.7..42.9 (yaw > 30 and around), pitch -8..8."""
        yaw, pitch = table["yaw"].to_numpy()[rows], table["pitch"].to_numpy()[rows]
        return int(((yaw >= 25.7143) & (yaw < 42.8571) & (np.abs(pitch) < 8)).sum())

    assert len(plain.selected) == len(weighted.selected) == 60
    # the target's bin weighs about 4 times a bin of the target's lighting only: 9 faces instead of 3
    before, after = at_target(plain.selected), at_target(weighted.selected)
    assert after >= 2 * before and after >= before + 5
    # every bin the plain balance covered is still covered: weighting moves budget, it drops no condition
    assert set(plain.cells[plain.selected]) <= set(weighted.cells[weighted.selected])
    # the held-out side is not weighted
    assert weighted.holdout_selected.tolist() == plain.holdout_selected.tolist()
    with pytest.raises(ValueError, match="one weight per bin"):
        curate(table, hashes, thumbs, **kwargs, cell_weights=np.ones(3))

