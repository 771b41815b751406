"""The adversarial loss (train.gan_weight): the PatchGAN's shapes and widths, the losses going
the right way on a few real steps (the discriminator learns to tell real from fake, the
generator's term pulls a fake toward real through a frozen discriminator), the face-only
masking, nothing before gan_start, nothing built when off, and the whole state round-tripped
(the next step after a reload equals the next step without one)."""

from __future__ import annotations

import pytest
import torch

from facedag.params import Train
from facedag.training.adversarial import (
    Adversary,
    Discriminators,
    build_adversary,
    d_loss_lsgan,
    discriminator_levels,
    face_only,
)
from facedag.training.checkpoint import cpu_copy

CPU = torch.device("cpu")
S = 32


def adversary(start: int = 0, seed: int = 0) -> Adversary:
    return Adversary(["src", "dst"], 8, S, weight=0.5, start=start, lr=2e-3, seed=seed, device=CPU, amp_dtype=None)


def faces(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake): real is smooth stripes with detail, fake is their blur (the autoencoder's look)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 6.28 * 4, S)
    base = 0.5 + 0.4 * torch.sin(x[None, :] + x[:, None])
    real = (base + 0.1 * torch.rand(n, 3, S, S, generator=g)).clamp(0, 1)
    fake = torch.nn.functional.avg_pool2d(real, 5, 1, 2)
    return real, fake


def test_patch_map_shapes_and_width_follow_the_model() -> None:
    assert [discriminator_levels(s) for s in (32, 64, 128, 256, 512)] == [2, 2, 3, 4, 4]
    for size, patches in ((32, 6), (64, 14), (128, 14), (256, 14)):
        out = Discriminators(["a", "b"], 8, size)([torch.rand(2, 3, size, size), torch.rand(3, 3, size, size)])
        assert [o.shape for o in out] == [(2, 1, patches, patches), (3, 1, patches, patches)]
    narrow, wide = Discriminators(["a"], 8, 64), Discriminators(["a"], 16, 64)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())
    both = Discriminators(["a", "b"], 8, 64)
    assert not torch.equal(both.nets["a"].net[0].weight, both.nets["b"].net[0].weight)  # one per identity


def test_face_only_zeroes_what_the_loss_ignores() -> None:
    x = torch.rand(2, 3, 8, 8)
    w = torch.zeros(1, 1, 8, 8)
    w[..., 2:6, 2:6] = 3.0
    y = face_only(x, w)
    assert torch.equal(y[..., 2:6, 2:6], x[..., 2:6, 2:6])
    y[..., 2:6, 2:6] = 0
    assert not y.any()


def test_the_discriminator_learns_and_the_generator_term_pulls_toward_real() -> None:
    torch.manual_seed(0)
    adv = adversary()
    real, fake = faces(1)
    w = torch.ones(1, 1, S, S)
    first = adv.step([fake, fake], [real, real], [w, w], step=0)
    for i in range(1, 30):
        last = adv.step([fake, fake], [real, real], [w, w], step=i)
    assert float(last["disc/src"]) < 0.5 * float(first["disc/src"])  # it tells them apart
    d = adv.nets.nets["src"]
    with torch.no_grad():
        assert float(d(real).mean()) > float(d(fake).mean()) + 0.3

    # the generator's term: a fake image that only this term trains moves toward what D calls real
    img = fake.clone().requires_grad_(True)
    opt = torch.optim.Adam([img], lr=1e-2)
    before_d = [p.clone() for p in d.parameters()]
    adv.opt.zero_grad(set_to_none=True)
    start = float(adv.generator_term("src", img, w, step=5).detach())
    for _ in range(20):
        opt.zero_grad()
        adv.generator_term("src", img, w, step=5).backward()
        opt.step()
    assert float(adv.generator_term("src", img, w, step=5).detach()) < start
    assert all(torch.equal(a, b) for a, b in zip(before_d, d.parameters(), strict=True))  # D untouched ...
    assert all(p.grad is None for p in d.parameters())  # ... and ungraded
    assert all(p.requires_grad for p in d.parameters())  # unfrozen after


def test_nothing_before_gan_start() -> None:
    adv = adversary(start=10)
    real, fake = faces(2)
    w = torch.ones(1, 1, S, S)
    before = {k: v.clone() for k, v in adv.nets.state_dict().items()}
    assert adv.step([fake, fake], [real, real], [w, w], step=9) == {}
    y = fake.clone().requires_grad_(True)
    assert float(adv.generator_term("src", y, w, step=9)) == 0.0
    assert all(torch.equal(v, adv.nets.state_dict()[k]) for k, v in before.items())
    assert adv.step([fake, fake], [real, real], [w, w], step=10)  # gan_start itself is on


def test_off_builds_nothing_and_on_follows_the_params() -> None:
    t = Train()
    assert t.gan_weight == 0 and t.gan_start == 0 and t.gan_lr is None
    assert build_adversary(t, ["src", "dst"], 8, S, 0, CPU, None) is None
    on = t.model_copy(update={"gan_weight": 0.1, "gan_start": 7, "lr": 3e-4})
    adv = build_adversary(on, ["src", "dst"], 8, S, 0, CPU, None)
    assert adv is not None and adv.start == 7 and adv.weight == 0.1
    assert adv.opt.param_groups[0]["lr"] == 3e-4 and adv.opt.param_groups[0]["betas"] == (0.5, 0.999)
    own = build_adversary(on.model_copy(update={"gan_lr": 1e-5}), ["src", "dst"], 8, S, 0, CPU, None)
    assert own is not None and own.opt.param_groups[0]["lr"] == 1e-5
    with pytest.raises(ValueError):
        Train.model_validate({"gan_weight": -1})


def test_its_init_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = adversary(seed=1)
    assert torch.equal(torch.rand(3), expected)
    b = adversary(seed=1)
    assert all(torch.equal(v, b.nets.state_dict()[k]) for k, v in a.nets.state_dict().items())  # seeded: the same


def test_state_round_trip_continues_to_the_bit() -> None:
    real, fake = faces(3)
    w = torch.ones(1, 1, S, S)
    a = adversary(seed=1)
    for i in range(3):
        a.step([fake, fake], [real, real], [w, w], step=i)
    state = cpu_copy(a.state_dict())  # as the checkpoint writer copies it (the optimiser's holds live tensors)
    assert set(state) == {"nets", "optimizer", "scaler"} and state["optimizer"]["state"]
    b = adversary(seed=2)  # other initial weights: all of them come from the state
    logs: list[str] = []
    b.load_state_dict(state, logs.append)
    assert not logs
    a.step([fake, fake], [real, real], [w, w], step=3)
    b.step([fake, fake], [real, real], [w, w], step=3)
    sa, sb = a.nets.state_dict(), b.nets.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())

    c = adversary(seed=2)
    fresh = {k: v.clone() for k, v in c.nets.state_dict().items()}
    c.load_state_dict(None, logs.append)  # a checkpoint written with the GAN off
    assert logs == ["the checkpoint has no discriminator state (written with train.gan_weight 0): "
                    "starting fresh discriminators"]
    assert all(torch.equal(v, c.nets.state_dict()[k]) for k, v in fresh.items())


def test_lsgan_targets() -> None:
    assert float(d_loss_lsgan(torch.ones(4), torch.zeros(4))) == 0.0
    assert float(d_loss_lsgan(torch.zeros(4), torch.ones(4))) == 1.0
