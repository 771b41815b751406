"""params.yaml, validated.

One pydantic model per section, with `extra="forbid"` so that a typo in a key is one
clear line naming the key before any work starts, instead of a silently ignored knob.
Stages read only their own section plus `base` (DESIGN.md), which is also what their
`params:` entries in dvc.yaml declare, so DVC's cache decisions match what the code reads.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from facedag.records import StageFailed
from facedag.registry import check_plugin

# speed vs size of x264 encodes
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"]


def plugin(package: str, what: str) -> object:
    """A params value that names a file of plugin folder `package` (facedag.registry): adding a
    file there is all it takes to make its name a valid value."""
    return Annotated[str, AfterValidator(lambda name: check_plugin(package, name, what))]


Landmarker = plugin("facedag.faces.landmarkers", "landmarker")
Layout = plugin("facedag.training.layouts", "model layout")
MaskKind = plugin("facedag.swap.masks", "mask kind")
ColourMode = plugin("facedag.swap.colour", "colour mode")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Base(Section):
    seed: int = 1234
    face_size: int = Field(128, ge=32, le=512, description="side of the aligned face in pixels")

    @model_validator(mode="before")
    @classmethod
    def _device_moved(cls, data: object) -> object:
        if isinstance(data, dict) and "device" in data:
            raise ValueError("base.device moved to the top-level `device` key (read by train, evaluate_model and "
                             "convert only, so changing it no longer reruns the data stages): move it there")
        return data


class Consent(Section):
    """Who agreed to what, on which basis. train and convert refuse to run without one
    (facedag.provenance.consent); the data stages do not need it, so footage can be gathered first."""

    subject: str = Field(min_length=1)
    basis: Literal["consent", "licence", "self"]
    evidence: str = Field(
        min_length=1, description="where the proof is: a path (relative to the project root) or an http(s) URL"
    )
    evidence_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the evidence file (`sha256sum FILE`), 64 lowercase hex digits"
    )
    scope: str = Field(min_length=1)
    expires: date | None = Field(None, description="ISO date after which the record no longer covers new work")


class Source(Section):
    """One source of footage: a file, a URL, or (with facedag.sources.playlist) a playlist or
    channel URL with `max_items`, or a local folder; `start`/`end` cut each video it gives."""

    uri: str
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)
    licence: str | None = None
    max_items: int | None = Field(None, ge=1, description="a playlist/channel URL or folder: take at most this many")
    title: str | None = Field(None, description="a playlist/folder: only videos whose title matches (regex)")
    after: date | None = Field(None, description="a playlist: only videos uploaded on or after this date")
    before: date | None = Field(None, description="a playlist: only videos uploaded on or before this date")
    refresh: bool = Field(False, description="a playlist: list it again instead of taking the recorded videos")

    @model_validator(mode="after")
    def _title_compiles(self) -> Source:
        if self.title is not None:
            try:
                re.compile(self.title)
            except re.error as exc:
                raise ValueError(f"title {self.title!r} is not a regular expression: {exc}") from None
        return self


class ReferenceClip(Section):
    """One frame of a clip that shows the person (the largest face in it)."""

    uri: str
    time: float = Field(0.0, ge=0, description="seconds into the clip")


def _check_reference(value: object) -> object:
    if isinstance(value, str) and value.startswith("group:") and not value[6:].isdigit():
        raise ValueError(f"{value!r}: write group:N with N a group number from identity.json (1 = most faces)")
    if isinstance(value, list) and any(isinstance(v, str) and v.startswith("group:") for v in value):
        raise ValueError("group:N stands alone, not in a list of images")
    return value


# Who the person is (facedag.faces.reference): an image path, a list of images and clip frames,
# or `group:N` of the footage's own identity groups (identity.json, 1 = the group with most faces).
Reference = Annotated[str | ReferenceClip | list[str | ReferenceClip], AfterValidator(_check_reference)]


class Identity(Section):
    consent: Consent | None = None
    sources: list[Source] = Field(min_length=1)
    reference: Reference | None = Field(
        None, description="who this identity is: extract keeps only the tracks that match (others: other_identity)"
    )


class Target(Section):
    uri: str
    consent: Consent | None = None
    licence: str | None = None
    reference: Reference | None = Field(
        None, description="who convert replaces in the target: only the tracks that match are swapped"
    )


class Download(Section):
    """The download@ID stage: where sources may come from, caps, and the normal form of a clip."""

    allow_private: bool = False
    extractors: list[str] = Field(default_factory=lambda: ["youtube", "vimeo"])
    max_bytes: int = Field(4_000_000_000, gt=0)
    max_height: int = Field(
        1080, ge=144, description="tallest video stream asked of a video site (best video + best audio up to it)"
    )
    timeout_s: float = Field(900, gt=0)
    max_side: int = Field(1920, ge=64, description="cap on the long side of a clip")
    max_fps: float = Field(60, gt=0)
    crf: int = Field(16, ge=0, le=51)
    preset: X264Preset = Field(
        "fast", description="x264 preset of normalised clips (speed vs size)"
    )
    min_seconds: float = Field(0.2, ge=0, description="shorter clips (after the cut) are rejected too_short")


class Trim(Section):
    max_seconds: float = Field(300, gt=0, description="seconds of shots kept per identity")
    sample_fps: float = Field(2.0, gt=0, description="frames per second sampled for faces")
    scene_threshold: float = Field(27.0, gt=0, description="PySceneDetect ContentDetector threshold")
    min_shot_seconds: float = Field(0.5, ge=0, description="shorter shots are dropped")
    max_shot_seconds: float = Field(20.0, gt=0, description="longer shots are split into equal segments")
    repeat_weight: float = Field(0.05, ge=0, description="gain per sampled face, beside 1 per new coverage cell")
    score_threshold: float = Field(0.8, gt=0, lt=1, description="face detector score for a sample to count")
    min_face_size: float = Field(40, ge=8, description="smallest face (px) for a sample to count")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the cut clips")
    preset: X264Preset = Field(
        "veryfast", description="x264 preset of the cut clips: encoding the kept shots is much of trim's time on "
        "long 1080p footage; ultrafast encodes about 2x faster, for about 3x the size at the same crf",
    )
    reference_only: bool = Field(
        True, description="scan only the frames other frames refer to (H.264/HEVC: skip B-frames, ~2x faster); "
        "cuts then fall within a frame or two, and the frames between are left out of both shots",
    )
    target_weight: float = Field(
        1.0, ge=0, description="extra weight of the target's poses and lighting in shot selection (convert.swap_to "
        "only; 0 = off)",
    )
    target_gap_faces: int = Field(
        2, ge=1, description="a region with >= 5 % of the target's frames is a gap with fewer kept samples than this"
    )


class Extract(Section):
    fps: float = Field(0, ge=0, description="frames decoded per second; 0 = every frame (native rate)")
    score_threshold: float = Field(0.8, gt=0, lt=1, description="RetinaFace confidence to keep a face")
    min_size: int = Field(40, ge=8, description="smallest face kept: sqrt(box width x height) in frame px")
    policy: Literal["identity", "largest", "center", "all"] = Field(
        "identity", description="the identity's face: by who it is (the reference, else the largest identity group), "
        "largest or nearest the centre (followed by tracking), or all"
    )
    iou_threshold: float = Field(0.3, gt=0, lt=1, description="box overlap that continues a track")
    track_max_gap: float = Field(
        1.0, ge=0, description="seconds a track may go unseen before it ends (the followed face is waited for)"
    )
    identity_threshold: float = Field(
        0.363, gt=-1, lt=1, description="SFace cosine of the same person (OpenCV's 0.363): reference match and grouping"
    )
    identity_interval: float = Field(1.0, ge=0, description="seconds between the faces of a track that are embedded")
    identity_per_track: int = Field(5, ge=1, le=100, description="faces embedded per track at most")
    batch: int = Field(8, ge=1, le=64, description="frames per detector batch")
    detect_max_side: int = Field(
        480, ge=64, description="long side frames are downscaled to for detection (a min_size face stays >= 30 px)"
    )


class Profile(Section):
    """The profile@ID stage: the pose and lighting of the face convert will replace in the target,
    so that trim and dedupe of convert.swap_to weight their selection toward it (facedag.curation.target_profile)."""

    fps: float = Field(4.0, gt=0, description="target frames sampled per second")
    max_samples: int = Field(
        2000, ge=1, description="at most this many sampled frames: a long target is sampled more sparsely"
    )


class Align(Section):
    landmarker: Landmarker = Field(  # type: ignore[valid-type]
        "mediapipe", description="where each face's landmarks come from (a file of facedag/faces/landmarkers)"
    )
    image_format: Literal["jpg", "png"] = Field("jpg", description="encoding of the aligned face in aligned.parquet")
    jpeg_quality: int = Field(95, ge=50, le=100)


class Dedupe(Section):
    min_sharpness: float = Field(10.0, ge=0, description="variance of the Laplacian below which a face is blurry")
    min_sharpness_rel: float = Field(0.0, ge=0, description="also blurry below this times the median (0 = off)")
    phash_distance: int = Field(10, ge=0, le=64, description="pHash Hamming distance of near-duplicates")
    feature_distance: float = Field(0.1, ge=0, description="pose/expression/lighting/luma distance of near-duplicates")
    max_faces: int = Field(2000, ge=1)
    yaw_bins: int = Field(7, ge=1)
    pitch_bins: int = Field(5, ge=1)
    light_bins: int = Field(3, ge=1, description="luminance bins")
    light_dir_bins: int = Field(3, ge=1, description="lighting direction (left/right asymmetry) bins")
    holdout: float = Field(
        0.15, ge=0, lt=1,
        description="fraction of faces held out to score training: whole shots (trim's scenes), chosen by base.seed",
    )
    holdout_max_faces: int = Field(200, ge=1, description="held-out faces kept per identity, balanced like max_faces")
    target_weight: float = Field(
        1.0, ge=0, description="extra weight of the target's poses and lighting in the balance (convert.swap_to "
        "only; 0 = off)",
    )
    target_gap_faces: int = Field(
        10, ge=1, description="a region with >= 5 % of the target's frames is a gap with fewer training faces than this"
    )
    identity_outlier: float = Field(
        0.2, ge=-1, lt=1, description="a face whose SFace cosine to its identity's mean is below this is dropped "
        "(identity_outlier; -1 = off)"
    )


class Train(Section):
    """The train stage: one shared encoder, one decoder per identity (facedag.training.model, facedag.training.loop).

    The defaults are the demo: a small model (widths 16, bottleneck 128) that learns a visible,
    blurry likeness on 2 CPU cores in a few minutes at base.face_size 64..128. Real runs use a GPU,
    base.face_size 128..256, encoder_width/decoder_width 64, bottleneck 512, batch_size 16..32,
    max_steps 100000+ (days), max_minutes as the per-run budget of a scheduled deployment that
    resumes from the last checkpoint each time, and checkpoint_every/preview_every 1000.
    """

    layout: Layout = Field("df", description="model layout (a file of facedag/training/layouts)")  # type: ignore[valid-type]
    max_steps: int = Field(800, ge=1, description="total optimiser steps; raising it continues the same run")
    max_minutes: float = Field(6.0, gt=0, description="wall-clock budget of one run; it then checkpoints and stops")
    session_minutes: float = Field(
        60.0, gt=0, description="budget of one scheduled train-session run (facedag serve); the next one resumes"
    )
    preset: Literal["demo", "small", "128", "256"] = Field(
        "demo", description="model size (facedag.training.sizes): widths, bottleneck and default batch; "
        "encoder_width/decoder_width/bottleneck/batch_size set here override it (facedag.training.sizes.resolve)"
    )
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] | None = Field(
        None, description="faces per identity per step (all processes together); auto: the largest "
        "that fits the GPU found (the preset's default on the CPU); unset: the preset's default"
    )
    lr: float = Field(5e-4, gt=0, lt=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="AdamW decoupled weight decay")
    encoder_width: int | None = Field(
        None, ge=4, le=512, description="channels of the first encoder conv (x2 per level); unset: the preset's"
    )
    decoder_width: int | None = Field(
        None, ge=4, le=512, description="channels of the last decoder level (x2 per level up); unset: the preset's"
    )
    bottleneck: int | None = Field(None, ge=8, le=4096, description="shared latent size; unset: the preset's")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (also on SIGTERM/SIGINT)")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept in models/checkpoints")
    preview_every: int = Field(100, ge=1, description="steps between preview grids in models/previews")
    eval_every: int = Field(50, ge=1, description="steps between held-out SSIM evaluations (and log lines)")
    checkpoint_minutes: float = Field(
        0.0, ge=0, description="also checkpoint after this many minutes since the last one (0 = steps only)"
    )
    eval_minutes: float = Field(0.0, ge=0, description="also evaluate after this many minutes (0 = steps only)")
    preview_minutes: float = Field(0.0, ge=0, description="also write a preview after this many minutes (0 = off)")
    patience: int = Field(
        0, ge=0, description="evaluations without a held-out gain of more than min_delta before stopping; 0 = never"
    )
    min_delta: float = Field(0.0, ge=0, description="held-out score (mean SSIM) gain that counts as an improvement")
    ema: float = Field(
        0.999, ge=0, lt=1, description="decay of the weights' moving average that is scored, saved and converted "
        "with (0 = the raw weights)"
    )
    ssim_weight: float = Field(0.85, ge=0, description="weight of masked DSSIM ((1 - SSIM) / 2) in the loss")
    l1_weight: float = Field(0.15, ge=0, description="weight of masked L1 in the loss")
    eyes_mouth_weight: float = Field(3.0, ge=1, description="loss weight on eyes and mouth (face = 1, outside = 0)")
    warp: float = Field(0.04, ge=0, le=0.2, description="random warp amplitude, fraction of the face side")
    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    colour_shift: float = Field(0.05, ge=0, le=0.5, description="max per-channel gain change (+-)")
    light_shift: float = Field(0.08, ge=0, le=0.5, description="max brightness offset and left/right light gradient")
    occluder_prob: float = Field(
        0.5, ge=0, le=1, description="share of training faces given a synthetic occluder (a hand or a bar, "
        "facedag.training.occluders), which the learned mask learns to leave out; 0 = none"
    )
    mask_weight: float = Field(
        1.0, ge=0, description="weight of the learned mask's loss (BCE against the face region minus occluders); "
        "0 = the mask head is not trained"
    )
    gan_weight: float = Field(
        0.0, ge=0, description="weight of the adversarial (PatchGAN, least-squares) term per identity; 0 = off "
        "(nothing built) (facedag.training.adversarial)"
    )
    gan_start: int = Field(
        0, ge=0, description="steps before the adversarial term and the discriminators' training start"
    )
    gan_lr: float | None = Field(None, gt=0, lt=1, description="discriminators' Adam learning rate; unset: lr")
    uniform_yaw: bool = Field(
        False, description="draw each batch evenly across yaw bins, so few profile faces are not drowned "
        "(facedag.training.sampler.YawBinSampler)"
    )
    yaw_bins: int = Field(7, ge=1, le=60, description="yaw bins of uniform_yaw over +-60 degrees (dedupe's axis)")
    deterministic: bool = Field(False, description="bit-exact CPU runs (tests): deterministic kernels, 1 thread")


class Convert(Section):
    """The convert stage: find the `replace` face in the target, paint it with `swap_to`'s decoder."""

    swap_to: str = Field("src", min_length=1, description="identity whose decoder paints the face")
    model: Literal["best", "last"] = Field(
        "best", description="weights: best held-out score (models/best.safetensors) or the last (model.safetensors)"
    )
    replace: str = Field("dst", min_length=1, description="identity in the target (names and records only)")
    score_threshold: float = Field(0.8, gt=0, lt=1, description="RetinaFace confidence to swap a face")
    min_size: int = Field(40, ge=8, description="smallest face swapped: sqrt(box width x height) in frame px")
    policy: Literal["identity", "largest", "center", "all"] = Field(
        "identity", description="which face(s) of the target: by who it is (target.reference, else the target's "
        "largest identity group), largest, nearest the centre, or all"
    )
    identity_threshold: float = Field(
        0.363, gt=-1, lt=1, description="SFace cosine of the same person: which target tracks are the replaced face"
    )
    iou_threshold: float = Field(0.3, gt=0, lt=1, description="box overlap that continues a track")
    track_max_gap: float = Field(1.0, ge=0, description="seconds a track may go unseen before it ends")
    detect_max_side: int = Field(480, ge=64, description="long side frames are downscaled to for detection")
    batch: int = Field(16, ge=1, le=256, description="faces per model call (and frames per detector batch, <= 64)")
    mask_erode: float = Field(0.0, ge=0, le=0.3, description="mask erosion, fraction of the aligned face side")
    mask_feather: float = Field(0.06, ge=0, le=0.3, description="mask feather width, fraction of the face side")
    mask: MaskKind = Field(
        "mesh", description="blend mask kind (a file of facedag/swap/masks): mesh, extended, hull, or learned (the "
        "model's mask within the mesh region: what covers the face stays in front)")  # type: ignore[valid-type]
    colour: ColourMode = Field(  # type: ignore[valid-type]
        "avg", description="colour matching to the target face, a file of facedag/swap/colour (avg: best flicker, "
        "seam and colour gap in the sweep)"
    )
    smooth_min_cutoff: float = Field(0.5, gt=0, description="One Euro min cutoff (Hz): lower = steadier, more lag")
    smooth_beta: float = Field(10.0, ge=0, description="One Euro speed coefficient (per face width/s): less lag")
    codec: Literal["ffv1", "x264rgb"] = Field("ffv1", description="lossless intermediate: FFV1 or x264rgb -qp 0")


class Evaluate(Section):
    """The evaluate_model and evaluate_video stages (facedag.quality.evaluate_model, facedag.quality.evaluate_video)."""

    model: Literal["best", "last"] = Field(
        "best", description="weights scored on held-out faces: best (models/best.safetensors) or last (model.*)"
    )
    batch: int = Field(8, ge=1, le=64, description="frames per detector batch when scoring the converted video")


class C2pa(Section):
    """Signing output.mp4 with a C2PA manifest (facedag.provenance.c2pa_sign). Off until cert and key are set.

    Paths, not secrets: the key file stays out of git (a secrets store, or `dvc add`-ed
    elsewhere); only its location is a param. C2PA refuses self-signed certificates: the cert
    file holds the signing certificate followed by its CA chain.
    """

    cert: str | None = Field(None, description="PEM: the signing certificate, then its CA chain")
    key: str | None = Field(None, description="PEM: the private key of the signing certificate")
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    tsa_url: str | None = Field(None, description="RFC 3161 time-stamp authority URL (needs network)")
    # DVC hashes params, not the files they name: the credential's sha256 pins make it a dep of
    # render (params.yaml is), so a new key re-signs, and render refuses files that do not match
    cert_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the cert file")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the key file")

    @model_validator(mode="after")
    def _both_or_neither(self) -> C2pa:
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise ValueError(f"set both cert and key to sign (or neither): {missing} is missing")
        return self


class Render(Section):
    """The render stage: H.264 with the target's audio, a visible label, an invisible watermark in
    every frame, a provenance record, and a C2PA manifest when a signing key is given."""

    crf: int = Field(18, ge=0, le=51, description="x264 quality (lower = better)")
    preset: X264Preset = "medium"
    label: bool = Field(True, description="visible label on the video; false is recorded in output.json")
    label_text: str = Field("AI-generated", min_length=1, max_length=500)
    label_position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-right"
    label_size: float = Field(0.045, gt=0, le=0.5, description="label text height, fraction of the frame height")
    c2pa: C2pa = C2pa()


class Export(Section):
    """The export stage (facedag.swap.export): ground truth for detector research and patches for
    compositing, from convert's lossless frames and table, marked with render's mark id. Off by
    default: then it writes only a record saying so (data/export/index.json), so the DAG stays whole."""

    enabled: bool = Field(False, description="write the export (false: only an off-record in data/export/index.json)")
    patches: bool = Field(True, description="also the swapped face per frame as an RGBA patch plus its transforms")
    every: int = Field(1, ge=1, le=10000, description="frame stride: export frames 0, every, 2*every, ...")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="the video's folder name in the export (default: the target file's stem)",
    )


class Params(BaseModel):
    """The whole params.yaml. Sections of stages not built yet are accepted as-is."""

    model_config = ConfigDict(extra="forbid")

    base: Base = Base()
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="where train, evaluate_model and convert run: auto | cpu | cuda | cuda:<n> (facedag.device)",
    )
    identities: dict[str, Identity] = Field(min_length=1)
    target: Target
    download: Download = Download()
    profile: Profile = Profile()
    trim: Trim = Trim()
    extract: Extract = Extract()
    align: Align = Align()
    dedupe: Dedupe = Dedupe()
    train: Train = Train()
    convert: Convert = Convert()
    render: Render = Render()
    evaluate: Evaluate = Evaluate()
    export: Export = Export()

    @model_validator(mode="after")
    def _references_need_identity_policy(self) -> Params:
        """A reference is only read under policy identity: anything else would silently ignore it."""
        for name, ident in self.identities.items():
            if ident.reference is not None and self.extract.policy != "identity":
                raise ValueError(f"identities.{name}.reference is set, so extract.policy must be identity "
                                 f"(it is {self.extract.policy})")  # fmt: skip
        if self.target.reference is not None and self.convert.policy != "identity":
            raise ValueError(f"target.reference is set, so convert.policy must be identity "
                             f"(it is {self.convert.policy})")  # fmt: skip
        return self


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise StageFailed with one line naming the bad key."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise StageFailed(f"{path} not found: run from the project root") from None
    except yaml.YAMLError as exc:
        raise StageFailed(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise StageFailed(f"{path}: {key + ': ' if key else ''}{msg}{more}") from None
