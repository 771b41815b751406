"""Invisible, keyed, error-corrected luma watermark tying a rendered video to its `output.json`.

A spread-spectrum mark on a coarse grid of the Y plane whose sign flips from frame to frame:

- Payload (`PAYLOAD_BYTES` = 8, 64 bits): a random 6-byte id (`new_mark_id()`, 12 hex
  characters, recorded in output.json) then its CRC-16/CCITT-FALSE (2 bytes, big-endian). The
  CRC tells a real id from what the decoder makes of noise.
- Error correction: the 64 bits and 6 zero tail bits go through the K=7 rate-1/3 convolutional
  code of LTE (generators 133, 171, 165 octal): `CODE_BITS` = 210 code bits, decoded by a
  soft-decision Viterbi decoder (numpy). Soft decisions use how sure every bit is: worth about
  2 dB over hard decisions into a block code.
- Spreading: the frame is a `GRID` of 36 x 48 cells relative to its size, so a rescaled copy
  maps back to the same cells. A keyed permutation gives a quarter of the cells to a pilot (a
  known +1) and the rest, in turn, to the 210 code bits (6 or 7 cells each, scattered, so the
  visible label box in a corner costs a few cells of many bits, which the code corrects). Every
  cell has a keyed +-1 chip. The cell image (chip x bit sign) is upscaled bilinearly to the
  frame: smooth and low-frequency, so H.264 and rescaling keep it.
- Temporal keying: frame `i` carries the pattern times `s[i mod PERIOD]`, a keyed +-1 sequence
  that changes sign at `SIGN_CHANGES` = 16 keyed frames of every 64. The detector takes the
  difference of consecutive frames, which cancels the picture (static or slowly moving) and holds
  twice the mark wherever the sign changed, and sums the differences weighted by the change.
  The mark costs the encoder bits, the more the more often it flips (x264 codes each flip in an
  inter frame): at CRF 18 the 10 s of the samples grow by 15-29 % with 16 changes, 37-39 % with
  32 (a random sign per frame), 13-25 % with 8. With 16, every attack of issue 6 still decodes
  from 2 s without a code bit wrong, and from 1 s.
- Sync: a cut file starts at an unknown index, so the detector sums with all `PERIOD` cyclic
  shifts of `s` at once and keeps the shift where the pilot is strongest (`offset`).
- Orientation: a mirrored, upside-down or rotated copy (a re-upload, a player's rotation
  flag applied) moves the cells but keeps their signs, so the detector also reads the frame on
  the turned grid (48 x 36) and scores the 8 flips and quarter turns of both grids, keeping
  the strongest (`orientation`). Crops and letterboxes move the grid off its cells: not read.
- Perceptual masking: the amplitude is `strength` (1 luma level) on flat areas and grows with
  local activity, where texture hides it, up to `MAX_GAIN` x strength; a frame whose change would
  exceed MAX_MSE (PSNR `MIN_PSNR_DB`) is scaled down as a whole. The gain map comes from a 96x72
  copy of the frame, so it costs little.
- Detection score: the pilot correlation as a z-score, sum(chip x residue) / sqrt(sum(residue^2))
  over the pilot cells. The chips are keyed coin flips independent of any content, so without
  the mark (or with another key's mark) the score is a sum of random signs: mean 0, variance 1
  and P(score > t) <= exp(-t^2 / 2) (Hoeffding) whatever the picture. `THRESHOLD` = 6 makes a
  false score less likely than 1e-5 over the PERIOD shifts x 8 orientations, and the CRC must
  match as well (another 2^-16). The score cannot exceed sqrt(pilot cells) = 20.8; a marked 640x480 clip
  reaches 15-19 in 2 s, also after CRF 28 and rescaling.

Key derivation uses SHAKE-256 only (not numpy's generators), so a key gives the same mark on
every numpy version: a file marked today verifies with a later facedag. Changing GRID, PERIOD,
SIGN_CHANGES, the code or the layout rules breaks that: bump METHOD and DEFAULT_KEY's version
then (tests/provenance/test_watermark.py pins the layout's digest to catch it).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import math
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ID_BYTES = 6
CRC_BYTES = 2
PAYLOAD_BYTES = ID_BYTES + CRC_BYTES
PAYLOAD_BITS = 8 * PAYLOAD_BYTES
DEFAULT_KEY = b"facedag-watermark-v1"
# What output.json records as the method: names this scheme and its version (bump with any change
# that makes old marks unreadable: GRID, PERIOD, SIGN_CHANGES, the code, the layout rules)
METHOD = "facedag-luma-ss-v1"

GRID = (36, 48)  # cells (rows, cols), whatever the frame size
PERIOD = 64  # length of the keyed frame sign sequence: the detector searches all its shifts
SIGN_CHANGES = 16  # sign changes per PERIOD: more read faster, fewer cost x264 fewer bits (see module doc)
PILOT_FRACTION = 0.25
DEFAULT_STRENGTH = 1.0  # mark amplitude (luma levels) on flat areas
MAX_GAIN = 3.0  # amplitude on busy areas, as a multiple of strength
THRESHOLD = 6.0  # pilot z-score from which a video counts as marked (with a valid CRC)
CLIP = 1.5  # frame differences are clipped at this many times their median magnitude
MIN_PSNR_DB = 42.5  # the gain map is scaled down where a frame would fall below this
MAX_MSE = 255.0**2 / 10 ** (MIN_PSNR_DB / 10)

_K = 7  # constraint length of the convolutional code
_GENERATORS = (0o133, 0o171, 0o165)
_TAIL = _K - 1
CODE_BITS = (PAYLOAD_BITS + _TAIL) * len(_GENERATORS)


# --- payload and error correction -------------------------------------------------------------


def new_mark_id() -> str:
    """A fresh random id (2 * ID_BYTES hex characters) for one rendered video."""
    return secrets.token_hex(ID_BYTES)


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


def payload_bits(mark_id: str) -> np.ndarray:
    """The 64 payload bits (uint8 0/1, MSB first) of `mark_id`: the id then its CRC-16."""
    try:
        raw = bytes.fromhex(mark_id)
    except ValueError:
        raise ValueError(f"mark id must be hex: {mark_id!r}") from None
    if len(raw) != ID_BYTES:
        raise ValueError(f"mark id must be {ID_BYTES} bytes ({2 * ID_BYTES} hex characters): {mark_id!r}")
    data = raw + _crc16(raw).to_bytes(CRC_BYTES, "big")
    return np.unpackbits(np.frombuffer(data, np.uint8))


def parse_payload(bits: np.ndarray) -> str | None:
    """The mark id carried by 64 decoded `bits`, or None when the CRC does not match."""
    data = np.packbits(np.asarray(bits, np.uint8)).tobytes()
    raw, crc = data[:ID_BYTES], int.from_bytes(data[ID_BYTES:], "big")
    return raw.hex() if _crc16(raw) == crc else None


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    for shift in (4, 2, 1):
        x ^= x >> shift
    return x & 1


# Output bits of every register value r = (input << 6) | state, state = the 6 previous inputs.
_REGS = np.arange(1 << _K, dtype=np.int64)
_OUTPUTS = np.stack([_parity(_REGS & g) for g in _GENERATORS], axis=1).astype(np.int8)  # (128, 3)
_OUT_SIGNS = (2 * _OUTPUTS - 1).astype(np.float64)


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Convolutionally encode `bits` (0/1) plus a zero tail: len(bits) + 6 steps, 3 code bits each."""
    state = 0
    out = np.empty((len(bits) + _TAIL, len(_GENERATORS)), np.uint8)
    for t, u in enumerate(np.concatenate([np.asarray(bits, np.int64), np.zeros(_TAIL, np.int64)])):
        reg = (int(u) << (_K - 1)) | state
        out[t] = _OUTPUTS[reg]
        state = reg >> 1
    return out.reshape(-1)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi decoding of `conv_encode`'s output.

    `soft` holds one real value per code bit, positive for 1 and negative for 0, its magnitude
    the confidence (a correlation, any scale). Returns the most likely input bits (tail removed).
    """
    n_out = len(_GENERATORS)
    steps = len(soft) // n_out
    branch = soft.reshape(steps, n_out).astype(np.float64) @ _OUT_SIGNS.T  # (steps, 128)
    n_states = 1 << (_K - 1)
    nxt = np.arange(n_states)
    reg0, reg1 = 2 * nxt, 2 * nxt + 1  # the two registers that lead to each next state
    metric = np.full(n_states, -np.inf)
    metric[0] = 0.0
    decisions = np.empty((steps, n_states), np.uint8)
    for t in range(steps):
        cand0 = metric[reg0 & (n_states - 1)] + branch[t, reg0]
        cand1 = metric[reg1 & (n_states - 1)] + branch[t, reg1]
        take1 = cand1 > cand0
        decisions[t] = take1
        metric = np.where(take1, cand1, cand0)
    state = 0  # the zero tail ends the trellis in state 0
    bits = np.empty(steps, np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state >> (_K - 2)
        reg = 2 * state + int(decisions[t, state])
        state = reg & (n_states - 1)
    return bits[: steps - _TAIL]


# --- keyed layout ----------------------------------------------------------------------------


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def _keyed_bytes(key: bytes, label: str, n: int) -> bytes:
    """`n` pseudo-random bytes for one use (`label`) of `key`; the length prefix keeps key and label apart."""
    return hashlib.shake_256(b"facedag-watermark" + len(key).to_bytes(4, "big") + key + label.encode()).digest(n)


def _keyed_signs(key: bytes, label: str, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(_keyed_bytes(key, label, (n + 7) // 8), np.uint8))[:n]
    return (2 * bits.astype(np.int8) - 1).astype(np.int8)


def _keyed_permutation(key: bytes, label: str, n: int) -> np.ndarray:
    ranks = np.frombuffer(_keyed_bytes(key, label, 8 * n), dtype=">u8")
    return np.argsort(ranks, kind="stable")


@dataclass(frozen=True)
class _Layout:
    """Everything the key decides: chips, which cell carries what, the frame signs."""

    chips: np.ndarray  # (cells,) +-1 int8
    pilot: np.ndarray  # (cells,) bool
    bit_of_cell: np.ndarray  # (cells,) int: the code bit a data cell carries, -1 for pilot cells
    signs: np.ndarray  # (PERIOD,) +-1 int8, SIGN_CHANGES changes per cycle

    @classmethod
    @functools.lru_cache(maxsize=8)
    def from_key(cls, key: bytes) -> _Layout:
        """The layout of `key` (cached: read-only arrays shared by every Embedder of the key)."""
        cells = GRID[0] * GRID[1]
        order = _keyed_permutation(key, "cells", cells)
        n_pilot = round(PILOT_FRACTION * cells)
        pilot = np.zeros(cells, bool)
        pilot[order[:n_pilot]] = True
        bit_of_cell = np.full(cells, -1, np.int64)
        bit_of_cell[order[n_pilot:]] = np.arange(cells - n_pilot) % CODE_BITS
        flips = np.ones(PERIOD, np.int8)
        flips[_keyed_permutation(key, "frames", PERIOD)[:SIGN_CHANGES]] = -1
        signs = np.cumprod(flips).astype(np.int8)  # SIGN_CHANGES (even) changes per cycle, at keyed frames
        arrays = (_keyed_signs(key, "chips", cells), pilot, bit_of_cell, signs)
        for array in arrays:
            array.setflags(write=False)
        return cls(*arrays)

    def cell_signs(self, code: np.ndarray) -> np.ndarray:
        """The +-1 value of every cell for codeword `code`: chip x (pilot: +1, data: 2*bit-1)."""
        value = np.ones(self.chips.shape, np.int8)
        data = ~self.pilot
        value[data] = 2 * code[self.bit_of_cell[data]].astype(np.int8) - 1
        return (self.chips * value).reshape(GRID)


# --- embedding -------------------------------------------------------------------------------


def _halve(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`img` halved (area average) while it is at least 4x `size` (w, h) both ways."""
    while img.shape[1] >= 4 * size[0] and img.shape[0] >= 4 * size[1]:
        h, w = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return img


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`img` averaged down to `size` (w, h). OpenCV's area resize is ~10x faster for an exact
    halving than for an arbitrary ratio (0.1 vs 1 ms at 640x480), so halve while the frame is 4x
    too big, then resize the rest of the way."""
    return cv2.resize(_halve(img, size), size, interpolation=cv2.INTER_AREA)


_MASK_SIZE = (2 * GRID[1], 2 * GRID[0])  # (w, h) of the small copy the gain map is computed on
_ACTIVITY_FULL = 6.0  # local mean abs deviation (luma levels) at which the gain reaches MAX_GAIN
_ROUNDING_MSE = 0.3  # what rounding the change to whole levels adds to a frame's MSE, at most (measured: < 0.2)


class Embedder:
    """Marks the Y planes of one video's frames with `mark_id` under `key`.

    The pattern is computed once. Per frame: a gain map from a 96x72 copy of the frame
    (perceptual masking, capped so the frame keeps PSNR >= MIN_PSNR_DB), one multiply and one
    saturating add in OpenCV, in place: about 1 ms per 640x480 frame.
    """

    def __init__(self, mark_id: str, width: int, height: int, key: bytes | str = DEFAULT_KEY,
                 strength: float = DEFAULT_STRENGTH) -> None:  # fmt: skip
        if width < GRID[1] or height < GRID[0]:
            raise ValueError(f"frame {width}x{height} is smaller than the watermark grid {GRID[1]}x{GRID[0]}")
        if not strength > 0:
            raise ValueError(f"strength must be positive: {strength}")
        self.mark_id = mark_id
        self.width, self.height = width, height
        self.strength = float(strength)
        layout = _Layout.from_key(_key_bytes(key))
        cells = layout.cell_signs(conv_encode(payload_bits(mark_id))).astype(np.float32)
        pattern = cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(strength)
        self._pattern = pattern
        # mean squared pattern over each cell of the gain map: predicts a frame's MSE from its gain map
        self._pattern_power = cv2.resize(pattern * pattern, _MASK_SIZE, interpolation=cv2.INTER_AREA)
        self._signs = layout.signs

    def gain(self, y: np.ndarray) -> np.ndarray:
        """Full-size gain map of `y`: 1 on flat areas, up to MAX_GAIN where local activity hides the mark.

        Scaled down as a whole when the frame's expected MSE would exceed MAX_MSE.
        """
        small = _shrink(y, _MASK_SIZE).astype(np.float32)
        activity = cv2.blur(np.abs(small - cv2.blur(small, (3, 3))), (3, 3))
        g = np.clip(1.0 + (MAX_GAIN - 1.0) / _ACTIVITY_FULL * activity, 1.0, MAX_GAIN)
        mse = float(np.mean(g * g * self._pattern_power))
        if mse + _ROUNDING_MSE > MAX_MSE:
            g *= np.float32(math.sqrt((MAX_MSE - _ROUNDING_MSE) / mse))
        return cv2.resize(g, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def mark_y(self, y: np.ndarray, index: int) -> np.ndarray:
        """Mark frame `index` (0-based, display order) in place: `y` is its HxW uint8 Y plane. Returns `y`."""
        if y.shape != (self.height, self.width) or y.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width} uint8 Y plane, got {y.shape} {y.dtype}")
        delta = cv2.multiply(self._pattern, self.gain(y), scale=float(self._signs[index % PERIOD]))
        cv2.add(y, delta, dst=y, dtype=cv2.CV_8U)  # rounds and saturates to 0..255
        return y


# --- detection -------------------------------------------------------------------------------


@dataclass
class Detection:
    """What `detect_frames`/`detect_file` found.

    `found`: the pilot score reached `threshold` and the decoded payload's CRC matched.
    `mark_id`: the decoded id (only when found). `bit_errors`: code bits (of CODE_BITS) whose
    hard decision disagrees with the re-encoded id, i.e. what the error correction fixed (only when
    found). `score`: the pilot z-score at the best frame offset (about N(0, 1) without a mark).
    `frames`: frames read. `offset`: the sign sequence index (mod PERIOD) of the first frame read,
    as found by the sync search (only when found). `orientation`: how the video is turned from
    the marked one, one of ORIENTATIONS (only when found).
    """

    found: bool
    mark_id: str | None
    bit_errors: int | None
    score: float
    threshold: float
    frames: int
    offset: int | None
    orientation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cells(y: np.ndarray, turned: bool = False) -> np.ndarray:
    """The mean of `y` over every grid cell, as a float vector (any frame size); `turned`: on
    the grid turned a quarter (GRID[1] rows x GRID[0] columns), as a rotated copy has it."""
    size = (GRID[0], GRID[1]) if turned else (GRID[1], GRID[0])
    return _shrink(np.asarray(y, np.float32), size).ravel()


# How a copy may be turned from the marked video, and how to bring the cells it shows (on GRID,
# or on the turned grid for a quarter turn: (P, rows, cols) arrays) back to the marked layout.
# "rotated 90 cw" is a copy turned a quarter clockwise (numpy's rot90(frame, -1)).
ORIENTATIONS: dict[str, tuple[bool, Any]] = {
    "as marked": (False, lambda g: g),
    "mirrored": (False, lambda g: g[:, :, ::-1]),
    "upside down": (False, lambda g: g[:, ::-1, :]),
    "rotated 180": (False, lambda g: g[:, ::-1, ::-1]),
    "rotated 90 cw": (True, lambda g: np.rot90(g, 1, axes=(1, 2))),
    "rotated 90 ccw": (True, lambda g: np.rot90(g, -1, axes=(1, 2))),
    "transposed": (True, lambda g: g.transpose(0, 2, 1)),
    "anti-transposed": (True, lambda g: g[:, ::-1, ::-1].transpose(0, 2, 1)),
}


class _Accumulator:
    """Sums frame differences weighted by every cyclic shift of the keyed sign sequence.

    The difference of consecutive frames cancels the picture (static or slowly moving) and holds
    twice the mark where the sign changed. Each difference is divided by its median magnitude and
    clipped at CLIP x that: every frame weighs the same and a scene cut or fast motion in a few
    cells cannot swamp the sum. `sums[o]` assumes the first frame read had index o (mod PERIOD).
    """

    def __init__(self, key: bytes | str) -> None:
        self.layout = _Layout.from_key(_key_bytes(key))
        signs = self.layout.signs.astype(np.float64)
        shifted = np.stack([np.roll(signs, -o) for o in range(PERIOD)], axis=1)  # [t, o] = s[(t + o) % P]
        # weight of the difference (frame t - frame t+1): (s_t - s_t+1) / 2, zero where the sign held
        self._weights = (shifted - np.roll(shifted, -1, axis=0)) / 2
        # [turned grid?] -> sums over the frame differences, one row per cyclic shift
        self.sums = {turned: np.zeros((PERIOD, GRID[0] * GRID[1]), np.float64) for turned in (False, True)}
        self._prev: dict[bool, np.ndarray] = {}
        self.frames = 0

    def add(self, y: np.ndarray) -> None:
        """Add the next Y plane (any size, uint8 or float)."""
        # the halvings both grids take, done once (each _shrink then goes on from here, so the
        # cells are exactly those of the whole frame)
        side = max(GRID)
        base = _halve(np.asarray(y, np.float32), (side, side))
        for turned, sums in self.sums.items():
            cells = _cells(base, turned)
            if turned in self._prev:
                diff = self._prev[turned] - cells
                scale = float(np.median(np.abs(diff))) + 1e-3
                np.clip(diff / scale, -CLIP, CLIP, out=diff)
                sums += np.outer(self._weights[(self.frames - 1) % PERIOD], diff)
            self._prev[turned] = cells
        self.frames += 1

    def _scores(self, sums: np.ndarray) -> np.ndarray:
        """The pilot z-score of every cyclic shift, for sums in the marked layout."""
        pilot = self.layout.pilot
        energy = np.sqrt(np.square(sums[:, pilot]).sum(axis=1))
        return (sums * self.layout.chips)[:, pilot].sum(axis=1) / np.maximum(energy, 1e-12)

    def result(self) -> Detection:
        layout = self.layout
        best: tuple[float, int, str, np.ndarray] | None = None
        for name, (turned, back) in ORIENTATIONS.items():
            shape = (PERIOD, GRID[1], GRID[0]) if turned else (PERIOD, *GRID)
            sums = np.ascontiguousarray(back(self.sums[turned].reshape(shape))).reshape(PERIOD, -1)
            scores = self._scores(sums)
            offset = int(np.argmax(scores))
            if best is None or scores[offset] > best[0]:
                best = (float(scores[offset]), offset, name, sums)
        assert best is not None
        score, offset, orientation, sums = round(best[0], 3), best[1], best[2], best[3]
        if score < THRESHOLD:
            return Detection(False, None, None, score, THRESHOLD, self.frames, None)
        despread = sums[offset] * layout.chips
        data = ~layout.pilot
        soft = np.bincount(layout.bit_of_cell[data], weights=despread[data], minlength=CODE_BITS)
        bits = viterbi_decode(soft)
        mark_id = parse_payload(bits)
        if mark_id is None:
            return Detection(False, None, None, score, THRESHOLD, self.frames, None)
        errors = int(np.count_nonzero((soft > 0) != conv_encode(bits).astype(bool)))
        return Detection(True, mark_id, errors, score, THRESHOLD, self.frames, offset, orientation)


def detect_frames(y_frames: Iterable[np.ndarray], key: bytes | str = DEFAULT_KEY) -> Detection:
    """Look for a mark under `key` in consecutive Y planes (any size, display order)."""
    acc = _Accumulator(key)
    for y in y_frames:
        acc.add(y)
    return acc.result()


_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
               "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray"}  # fmt: skip


def _luma(frame: Any) -> np.ndarray:
    """The Y plane of a PyAV frame as HxW uint8, without a colour conversion for 8-bit YUV."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    return frame.to_ndarray(format="gray")


def detect_file(path: str | os.PathLike[str], key: bytes | str = DEFAULT_KEY, max_seconds: float = 10.0,
                timeout: float = 120.0) -> Detection:  # fmt: skip
    """Look for a mark in the first `max_seconds` of the video at `path`.

    Decodes with PyAV as a stream (memory does not grow with the clip). Raises ValueError when
    the file cannot be opened or no video frame decodes, and TimeoutError when decoding takes
    longer than `timeout` seconds (a partial read could miss a mark, so it is not reported as
    "not found"). A decoding error after some frames ends the read; what was read is used.
    """
    import av

    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive: {max_seconds}")
    src = Path(path)
    if not src.is_file():
        raise ValueError(f"no such file: {src}")
    deadline = time.monotonic() + timeout
    acc = _Accumulator(key)
    try:
        container = av.open(os.fspath(src), mode="r", metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read {src} as a video: {exc}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{src} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else acc.frames / float(stream.average_rate or 30)
                start = t if start is None else start
                if t - start >= max_seconds:
                    break
                acc.add(_luma(frame))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"watermark detection on {src} ran past {timeout:g} s ({acc.frames} frames)")
        except (av.FFmpegError, EOFError) as exc:
            if acc.frames == 0:
                raise ValueError(f"no video frame of {src} decodes: {exc}") from None
    if acc.frames == 0:
        raise ValueError(f"no video frame of {src} decodes")
    return acc.result()
