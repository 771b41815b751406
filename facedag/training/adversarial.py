"""The optional adversarial loss (`train.gan_weight` > 0): a PatchGAN discriminator per identity.

Why: the masked SSIM + L1 loss is minimised by the mean of the faces an input could be, which
is a blur; a discriminator that tells the identity's real faces from its decoder's outputs,
patch by patch, pushes the decoder toward detail (pores, hair, teeth edges) once the face is
learned: DeepFaceLab's "GAN power". It is off by default (`gan_weight` 0: nothing here is
built, nothing is computed and checkpoints carry `"gan": None`).

The discriminator (pix2pix's PatchGAN): strided 4x4 convolutions with LeakyReLU(0.2) and
instance norm (none on the first), then two 4x4 stride-1 convolutions down to a 1-channel map
of per-patch scores. Its width is half the model's decoder width (at least 8: DeepFaceLab's
default discriminator is 16 wide at any model size); at the demo's (16 -> 8 channels, 128 px)
that is 44 k parameters per identity against the generator's 3.75 M, and the step costs about
15 % more on 2 CPU cores (benchmarks/bench_gan.py; the decoder's full width cost 43 %). Its
depth follows the face size, so that a patch's receptive field is about half the face at every size (2 strided
levels at <= 64 px: 34 px; 3 at 128: 70 px; 4 at 256: 142 px). Instance norm, not batch
norm: it keeps no running statistics (nothing to keep in sync across ranks or resume) and
treats each face alone, so real and fake faces can share one forward.

Loss: least squares (LSGAN). The discriminator regresses real patches to 1 and generated ones
to 0; the generator's term is mean((D(G(x)) - 1)^2). Unlike the original log loss its gradient
does not vanish when the discriminator is confident (the usual case early on, when the
reconstruction is still a blur), and unlike hinge it keeps pulling generated patches toward
"real" instead of stopping at a margin; pix2pix and CycleGAN train with it for that stability.

Masking: both the real targets and the outputs are multiplied by the face region of the
loss weights (weights > 0) before the discriminator sees them. The reconstruction loss leaves
everything outside the face unconstrained (weight 0), so without the mask the discriminator
would learn to spot the decoder's arbitrary background and push the generator around there,
where convert never pastes.

Schedule: before `train.gan_start` steps neither the term nor the discriminator's training
runs (the reconstruction learns the face first, as in DeepFaceLab); from then on every step
adds `gan_weight` x the generator term to each identity's loss (in fp32, like the rest) and
then takes one discriminator step (Adam, betas 0.5/0.999 as in pix2pix, `train.gan_lr`, unset:
train.lr) on the step's real targets against its detached outputs.

Reproducibility: the discriminators' initial weights come from a generator seeded from
base.seed (the global generators, which the checkpoint carries, are not touched, so turning
the GAN on changes nothing else); their weights, optimiser and (fp16) grad scaler go into every
checkpoint and come back on resume. A checkpoint without them (written with the GAN off) starts
fresh discriminators, said in the log. The GAN settings are not part of the model config:
changing them continues the same generator.

Under torchrun the per-identity discriminators are one module wrapped in DistributedDataParallel
like the generator, so their gradients are averaged over the ranks and their weights stay equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facedag.device import optimiser_step

GAN_SEED_OFFSET = 104_729  # the discriminators' init generator: base.seed + this
ADAM_BETAS = (0.5, 0.999)  # pix2pix's: a short momentum memory suits the moving target of a GAN


def discriminator_levels(face_size: int) -> int:
    """Strided levels so that a patch sees about half the face (see the module docstring)."""
    return max(2, min(4, int(math.log2(face_size)) - 4))


class PatchDiscriminator(nn.Module):
    """(N, 3, S, S) RGB in [0, 1] -> (N, 1, h, w) per-patch realness scores (LSGAN: real ~ 1)."""

    def __init__(self, width: int, levels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for i in range(1, levels + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < levels else 1  # the last widening conv keeps the size, as pix2pix's does
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.InstanceNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


class Discriminators(nn.Module):
    """One PatchDiscriminator per identity; `forward(xs)` scores each identity's batch with its
    own, in one module call (what DDP wraps)."""

    def __init__(self, identities: list[str], width: int, face_size: int) -> None:
        super().__init__()
        self.identities = list(identities)
        levels = discriminator_levels(face_size)
        self.nets = nn.ModuleDict({name: PatchDiscriminator(width, levels) for name in identities})

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.nets[name](x) for name, x in zip(self.identities, xs, strict=True)]


def d_loss_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss (fp32): real patches to 1, generated ones to 0."""
    return 0.5 * ((real.float() - 1.0).square().mean() + fake.float().square().mean())


def g_loss_lsgan(fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator term (fp32): generated patches toward 1."""
    return (fake.float() - 1.0).square().mean()


def face_only(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x with everything outside the face (loss weight 0) set to 0 (see Masking in the module docstring)."""
    return x * (weights > 0).to(x.dtype)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """The module's parameters take no gradient inside (the generator's term: only the
    generator learns from it)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Adversary:
    """The discriminators of a training run, their optimiser, and the two things the step asks
    of them: the generator's term and the discriminators' own step (see the module docstring).
    Built only when train.gan_weight > 0 (`build_adversary`)."""

    def __init__(self, identities: list[str], decoder_width: int, face_size: int, weight: float, start: int,
                 lr: float, seed: int, device: torch.device, amp_dtype: torch.dtype | None) -> None:
        self.weight, self.start, self.lr = float(weight), int(start), float(lr)
        self.device, self.amp_dtype = device, amp_dtype
        # half the decoder's width (module docstring); its own init draws: the global generators go on as without it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + GAN_SEED_OFFSET)
            self.nets = Discriminators(identities, max(8, decoder_width // 2), face_size)
        self.nets.to(device)
        self.forward: nn.Module = self.nets  # wrapped in DDP by distribute() under torchrun
        self.opt = torch.optim.Adam(self.nets.parameters(), lr=self.lr, betas=ADAM_BETAS,
                                    fused=device.type == "cuda" or None)
        # fp16 autocast (a GPU without bf16): its own scaler, as the generator has one
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def params_count(self) -> int:
        return sum(p.numel() for p in self.nets.parameters())

    def active(self, step: int) -> bool:
        """Whether the step numbered `step` (0-based: the steps taken before it) is past gan_start."""
        return step >= self.start

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def generator_term(self, identity: str, output: torch.Tensor, weights: torch.Tensor, step: int) -> torch.Tensor:
        """gan_weight x the LSGAN generator term of one identity's outputs (fp32 scalar, with a
        graph into the generator only), or 0 before gan_start."""
        if not self.active(step):
            return torch.zeros((), device=output.device)
        net = self.nets.nets[identity]
        with frozen(net), self._autocast():  # the plain module: no DDP hooks, no discriminator gradient
            score = net(face_only(output, weights))
        return self.weight * g_loss_lsgan(score)

    def step(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], weights: list[torch.Tensor],
             step: int) -> dict[str, torch.Tensor]:
        """One discriminator step on every identity's real targets against its detached outputs
        (nothing before gan_start); returns each identity's discriminator loss as "disc/<identity>"
        (on the device), for the curves. Real and fake go through in one forward (instance norm keeps
        them apart), so that a DDP-wrapped module sees one forward per backward."""
        if not self.active(step):
            return {}
        self.opt.zero_grad(set_to_none=True)
        xs = [torch.cat([face_only(tgt, w), face_only(y.detach().to(tgt.dtype), w)])
              for y, tgt, w in zip(outputs, targets, weights, strict=True)]
        with self._autocast():
            scores = self.forward(xs)
        total = torch.zeros((), device=self.device)
        out = {}
        for name, s, tgt in zip(self.nets.identities, scores, targets, strict=True):
            n = len(tgt)
            loss = d_loss_lsgan(s[:n], s[n:])
            total = total + loss
            out[f"disc/{name}"] = loss.detach()
        optimiser_step(total, self.opt, self.scaler)
        return out

    def distribute(self, world: int, device: torch.device) -> None:
        """Under torchrun: the discriminators in DDP, their gradients averaged over the ranks
        (after resume: DDP checks every rank starts from rank 0's weights)."""
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.nets, device_ids=ids, gradient_as_bucket_view=True)

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict[str, Any] | None, log: Callable[[str], None]) -> None:
        """Restore a checkpoint's discriminators, or keep the fresh ones (and say so) when it has none."""
        if not state:
            log("the checkpoint has no discriminator state (written with train.gan_weight 0): "
                "starting fresh discriminators")
            return
        self.nets.load_state_dict(state["nets"])
        self.opt.load_state_dict(state["optimizer"])
        for g in self.opt.param_groups:  # gan_lr may change between runs; the moments carry on
            g["lr"] = self.lr
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def build_adversary(train: Any, identities: list[str], decoder_width: int, face_size: int, seed: int,
                    device: torch.device, amp_dtype: torch.dtype | None) -> Adversary | None:
    """The run's Adversary from the train section, or None when train.gan_weight is 0 (off)."""
    if train.gan_weight <= 0:
        return None
    lr = train.gan_lr if train.gan_lr is not None else train.lr
    return Adversary(identities, decoder_width, face_size, train.gan_weight, train.gan_start, lr, seed, device,
                     amp_dtype)
