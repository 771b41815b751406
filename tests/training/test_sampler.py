"""The training samplers: the plain one's resume, and the yaw-bin one (train.uniform_yaw): bins
drawn evenly whatever their sizes, every face of a bin before repeats, empty bins skipped, NaN
yaw in the middle bin, its whole state round-tripped, and a change of kind on resume reseeded."""

from __future__ import annotations

import math

import numpy as np
import torch

from facedag.training.sampler import Sampler, YawBinSampler, make_sampler, restore_sampler, yaw_bin

# 90 frontal faces, 6 turned left, 4 turned right: a mostly frontal set, as real footage is
YAW = torch.tensor([0.0] * 90 + [-50.0] * 6 + [55.0] * 4)
INDICES = torch.arange(100, 200)  # the indices handed out are these, not positions


def test_bins_are_drawn_evenly_and_each_bin_without_replacement() -> None:
    s = YawBinSampler(INDICES, YAW, 7, seed=3)
    assert s.counts == [6, 0, 0, 90, 0, 0, 4]  # dedupe's axis: +-60 in 7 bins; empty ones skipped
    drawn = s.next(3000) - 100
    per_bin = [int((YAW[drawn] == v).sum()) for v in (-50.0, 0.0, 55.0)]
    assert all(abs(c - 1000) < 100 for c in per_bin), per_bin  # 1/3 each, not 90 % frontal
    right = [int(i) for i in drawn if YAW[i] == 55.0]
    assert all(sorted(right[k:k + 4]) == [96, 97, 98, 99] for k in range(0, 400, 4))  # an epoch per bin
    assert sorted(right[:4]) != right[:4] or sorted(right[4:8]) != right[4:8]  # ... shuffled
    front = s.next(1)
    assert 100 <= int(front) < 200


def test_nan_yaw_goes_to_the_middle_bin_and_one_bin_is_plain_shuffling() -> None:
    s = YawBinSampler(torch.arange(5), torch.tensor([math.nan] * 5), 5, seed=0)
    assert s.counts == [0, 0, 5, 0, 0]
    assert sorted(s.next(5).tolist()) == [0, 1, 2, 3, 4]


def test_state_round_trip_resumes_the_same_draws() -> None:
    a = YawBinSampler(INDICES, YAW, 7, seed=11)
    a.next(37)
    state = a.state_dict()
    expected = a.next(50)
    b = YawBinSampler(INDICES, YAW, 7, seed=999)  # another seed: everything comes from the state
    b.load_state_dict({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()})
    assert torch.equal(b.next(50), expected)

    plain = Sampler(INDICES, 5)
    plain.next(30)
    p_state = plain.state_dict()
    p_expected = plain.next(90)
    fresh = Sampler(INDICES, 6)
    fresh.load_state_dict(p_state)
    assert torch.equal(fresh.next(90), p_expected)


def test_make_sampler_and_a_change_of_kind_on_resume() -> None:
    assert isinstance(make_sampler(INDICES, YAW, True, 7, 1), YawBinSampler)
    assert type(make_sampler(INDICES, YAW, False, 7, 1)) is Sampler
    assert type(make_sampler(INDICES, None, True, 7, 1)) is Sampler  # no yaw known: plain
    logs: list[str] = []
    yaw_s = YawBinSampler(INDICES, YAW, 7, seed=1)
    restore_sampler(yaw_s, Sampler(INDICES, 2).state_dict(), 40, 1, logs.append, "src")
    assert logs and "another kind" in logs[0] and "step 40" in logs[0]
    assert torch.equal(yaw_s.gen.get_state(), torch.Generator().manual_seed(41).get_state())
    logs.clear()
    other_bins = YawBinSampler(INDICES, YAW, 5, seed=1)  # other bins: also not this sampler's state
    restore_sampler(other_bins, YawBinSampler(INDICES, YAW, 7, seed=1).state_dict(), 3, 1, logs.append, "src")
    assert logs
    logs.clear()
    same = YawBinSampler(INDICES, YAW, 7, seed=1)
    restore_sampler(same, YawBinSampler(INDICES, YAW, 7, seed=8).state_dict(), 3, 1, logs.append, "src")
    assert not logs


def test_yaw_bins_are_dedupes() -> None:
    """The sampler's bins are dedupe's yaw axis (written out in the sampler, so that train does
    not depend on the curation module): the same bin for every yaw."""
    from facedag.curation.coverage import YAW, with_bins

    yaw = np.array([-90.0, -60.0, -43.0, -17.2, -1.0, 0.0, 8.6, 8.58, 30.0, 59.9, 60.0, 120.0, np.nan])
    for bins in (1, 3, 5, 7, 12):
        assert np.array_equal(yaw_bin(yaw, bins), with_bins(YAW, bins).index(yaw)), bins
