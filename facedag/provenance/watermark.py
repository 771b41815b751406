"""Invisible, keyed, error-corrected luma watermark tying a rendered video to its `output.json`.

A spread-spectrum mark on a coarse, tiled grid of the Y plane whose sign flips from frame to frame:

- Payload (`PAYLOAD_BYTES` = 8, 64 bits): a random 6-byte id (`new_mark_id()`, 12 hex
  characters, recorded in output.json) then its CRC-16/CCITT-FALSE (2 bytes, big-endian). The
  CRC tells a real id from what the decoder makes of noise.
- Error correction: the 64 bits and 6 zero tail bits go through the K=7 rate-1/3 convolutional
  code of LTE (generators 133, 171, 165 octal): `CODE_BITS` = 210 code bits, decoded by a
  soft-decision Viterbi decoder (numpy). Soft decisions use how sure every bit is: worth about
  2 dB over hard decisions into a block code.
- Spreading, v2 (`METHOD`, what render embeds): one square tile of `TILE` x `TILE` = 576 cells
  repeats over the frame, `TILES_SHORT` = 3 tiles along its shorter side (4 x 3 tiles of 160 px
  on 640x480, 6.7 px cells), a tile corner on the frame's centre. A keyed permutation gives 30 %
  of the cells to a pilot (a known +1) and the rest, in turn, to the 210 code bits (1 or 2 cells
  each; every tile in view adds to them). Every cell has a keyed +-1 chip. The cell image
  (chip x bit sign) is upscaled bilinearly to the frame: smooth and low-frequency, so H.264 and
  rescaling keep it. Because whatever part of the frame is left holds whole periods of the same
  tile, a crop, a reframe to 9:16, a letterbox, a zoom or a border with a rescale is read after
  registration (`_TileReader`, facedag.provenance.registration): the tile period and the
  temporal sync from the comb in the power spectrum of the frame differences summed under each
  sync, then the phase and orientation by cross-correlating the folded sum with the pilots.
- Spreading, v1 (`METHOD_V1`, files marked before v2; still read, `Embedder(version=1)` still
  makes them for tests): the frame is a `GRID` of 36 x 48 cells relative to its size, a quarter
  of them pilots, 6 or 7 cells per code bit. A rescaled copy maps back to the same cells; a crop
  or a letterbox moves the grid off its cells and is not read.
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
  flag applied) moves the cells but keeps their signs, so the detector scores the 8 flips and
  quarter turns (v1: of its grid and of the turned grid, 48 x 36; v2: of the square tile) and
  keeps the strongest (`orientation`).
- Perceptual masking: the amplitude is `strength` (1 luma level) on flat areas and grows with
  local activity, where texture hides it, up to `MAX_GAIN` x strength; a frame whose change would
  exceed MAX_MSE (PSNR `MIN_PSNR_DB`) is scaled down as a whole. The gain map comes from a 96x72
  copy of the frame, so it costs little.
- Detection score: the pilot correlation as a z-score, sum(chip x residue) / sqrt(sum(residue^2))
  over the pilot cells. The chips are keyed coin flips independent of any content, so without
  the mark (or with another key's mark) the score is a sum of random signs: mean 0, variance 1
  and P(score > t) <= exp(-t^2 / 2) (Hoeffding) whatever the picture. v1: `THRESHOLD` = 6 makes
  a false score less likely than 1e-5 over the PERIOD shifts x 8 orientations; the score cannot
  exceed sqrt(432 pilot cells) = 20.8, and a marked 640x480 clip reaches 15-19 in 2 s. v2 keeps
  the best of about 1e6 hypotheses (3 syncs x 34 periods x 8 orientations x 9216 phases, far
  from independent; the 3 syncs are the best of 64 x 3 periods screened): unmarked footage
  scores 4.0-5.8 (the samples, testsrc, the demo target, and each through the edits of
  tests/provenance/test_watermark.py), so `THRESHOLD_V2` = 7 (Hoeffding: < 2.3e-5 for 1e6
  tries); the score cannot exceed sqrt(173) = 13.2, and marked samples reach 10.3-12.4 in 2 s
  after CRF 28 and any of those edits (README, Measured). Both need the CRC to match as well
  (another 2^-16).

Key derivation uses SHAKE-256 only (not numpy's generators), so a key gives the same mark on
every numpy version: a file marked today verifies with a later facedag. Changing GRID, TILE,
TILES_SHORT, PERIOD, SIGN_CHANGES, the code or the layout rules breaks that: add a METHOD version
then, and keep reading the old ones (tests/provenance/test_watermark.py pins both layouts'
digests to catch it).
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facedag.provenance import registration

ID_BYTES = 6
CRC_BYTES = 2
PAYLOAD_BYTES = ID_BYTES + CRC_BYTES
PAYLOAD_BITS = 8 * PAYLOAD_BYTES
DEFAULT_KEY = b"facedag-watermark-v1"
# What output.json records as the method: names this scheme and its version (bump with any change
# that makes old marks unreadable: GRID, TILE, TILES_SHORT, PERIOD, SIGN_CHANGES, the code, the
# layout rules). v1 (the frame-relative grid) is still read; render embeds v2 (the tiled one).
METHOD_V1 = "facedag-luma-ss-v1"
METHOD = "facedag-luma-ss-v2"

GRID = (36, 48)  # cells (rows, cols), whatever the frame size
PERIOD = 64  # length of the keyed frame sign sequence: the detector searches all its shifts
SIGN_CHANGES = 16  # sign changes per PERIOD: more read faster, fewer cost x264 fewer bits (see module doc)
PILOT_FRACTION = 0.25
TILE = 24  # v2: cells per side of the square tile that repeats over the frame
TILES_SHORT = 3  # v2: tiles along the frame's shorter side (a 640x480 frame holds 4 x 3 tiles of 160 px)
PILOT_FRACTION_V2 = 0.3  # v2: a larger share of pilots, the tile's 576 cells being fewer than GRID's
DEFAULT_STRENGTH = 1.0  # mark amplitude (luma levels) on flat areas
MAX_GAIN = 3.0  # amplitude on busy areas, as a multiple of strength
THRESHOLD = 6.0  # pilot z-score from which a video counts as marked (with a valid CRC)
THRESHOLD_V2 = 7.0  # the same for v2, which searches ~1e6 syncs, periods, orientations and phases (module doc)
CLIP = 1.5  # frame differences are clipped at this many times their median magnitude
MIN_PSNR_DB = 42.5  # the gain map is scaled down where a frame would fall below this
MAX_MSE = 255.0**2 / 10 ** (MIN_PSNR_DB / 10)

_K = 7  # constraint length of the convolutional code
_GENERATORS = (0o133, 0o171, 0o165)
_TAIL = _K - 1
CODE_BITS = (PAYLOAD_BITS + _TAIL) * len(_GENERATORS)
_V2 = "v2 "  # prefix of the v2 layout's key labels: v1 and v2 chips are independent


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
    """Everything the key decides: chips, which cell carries what, the frame signs.

    v1: the GRID of cells spread over the whole frame. v2: the TILE x TILE tile that repeats; its
    chips and cells come from labels of their own, the frame signs are v1's (same key, same
    temporal keying)."""

    chips: np.ndarray  # (cells,) +-1 int8
    pilot: np.ndarray  # (cells,) bool
    bit_of_cell: np.ndarray  # (cells,) int: the code bit a data cell carries, -1 for pilot cells
    signs: np.ndarray  # (PERIOD,) +-1 int8, SIGN_CHANGES changes per cycle
    shape: tuple[int, int]  # (rows, cols) of the cells

    @classmethod
    @functools.lru_cache(maxsize=8)
    def from_key(cls, key: bytes, version: int = 1) -> _Layout:
        """The layout of `key` (cached: read-only arrays shared by every Embedder of the key)."""
        shape, fraction, label = (GRID, PILOT_FRACTION, "") if version == 1 else ((TILE, TILE), PILOT_FRACTION_V2, _V2)
        cells = shape[0] * shape[1]
        order = _keyed_permutation(key, f"{label}cells", cells)
        n_pilot = round(fraction * cells)
        pilot = np.zeros(cells, bool)
        pilot[order[:n_pilot]] = True
        bit_of_cell = np.full(cells, -1, np.int64)
        bit_of_cell[order[n_pilot:]] = np.arange(cells - n_pilot) % CODE_BITS
        flips = np.ones(PERIOD, np.int8)
        flips[_keyed_permutation(key, "frames", PERIOD)[:SIGN_CHANGES]] = -1
        signs = np.cumprod(flips).astype(np.int8)  # SIGN_CHANGES (even) changes per cycle, at keyed frames
        arrays = (_keyed_signs(key, f"{label}chips", cells), pilot, bit_of_cell, signs)
        for array in arrays:
            array.setflags(write=False)
        return cls(*arrays, shape)

    def cell_signs(self, code: np.ndarray) -> np.ndarray:
        """The +-1 value of every cell for codeword `code`: chip x (pilot: +1, data: 2*bit-1)."""
        value = np.ones(self.chips.shape, np.int8)
        data = ~self.pilot
        value[data] = 2 * code[self.bit_of_cell[data]].astype(np.int8) - 1
        return (self.chips * value).reshape(self.shape)

    def pilot_z(self, cells: np.ndarray) -> float:
        """The pilot z-score of cell values in this layout: sum(chip x v) / sqrt(sum(v^2)) over pilots."""
        v = cells[self.pilot]
        return float(np.dot(self.chips[self.pilot], v) / max(math.sqrt(float(np.dot(v, v))), 1e-12))

    def decode(self, cells: np.ndarray) -> tuple[str | None, int]:
        """(mark id or None when the CRC fails, code bits the error correction fixed) from cell values."""
        despread = cells * self.chips
        data = ~self.pilot
        soft = np.bincount(self.bit_of_cell[data], weights=despread[data], minlength=CODE_BITS)
        bits = viterbi_decode(soft)
        return parse_payload(bits), int(np.count_nonzero((soft > 0) != conv_encode(bits).astype(bool)))


def tile_counts(width: int, height: int) -> tuple[float, float]:
    """How many v2 tiles span a `width` x `height` frame (x, y): TILES_SHORT along the shorter side,
    square tiles, so the longer side holds a fractional number."""
    side = min(width, height) / TILES_SHORT
    return width / side, height / side


def tiled_cells(cells: np.ndarray, width: int, height: int) -> np.ndarray:
    """The v2 pattern: `cells` (TILE x TILE) repeated over the frame and upscaled bilinearly to
    `width` x `height`, a tile corner on the frame's centre (so a centre crop keeps the phase)."""
    nx, ny = tile_counts(width, height)
    reps_x, reps_y = math.ceil(nx / 2) + 1, math.ceil(ny / 2) + 1  # whole tiles on each side of the centre
    grid = np.tile(cells, (2 * reps_y, 2 * reps_x)).astype(np.float32)
    scale_x, scale_y = width / (nx * TILE), height / (ny * TILE)  # frame px per cell
    # the grid's centre (a tile corner) goes to the frame's centre; an affine warp samples it bilinearly
    m = np.array([[1 / scale_x, 0, reps_x * TILE - width / (2 * scale_x)],
                  [0, 1 / scale_y, reps_y * TILE - height / (2 * scale_y)]], np.float64)  # fmt: skip
    # warpAffine maps dst (x, y) to src = m @ (x, y, 1); cell centres sit at half-integers of the grid
    m[:, 2] += 0.5 * (m[:, 0] + m[:, 1]) - 0.5
    return cv2.warpAffine(grid, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_WRAP)  # fmt: skip


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
    """Marks the Y planes of one video's frames with `mark_id` under `key` (v2, the tiled mark,
    unless `version` is 1).

    The pattern is computed once. Per frame: a gain map from a 96x72 copy of the frame
    (perceptual masking, capped so the frame keeps PSNR >= MIN_PSNR_DB), one multiply and one
    saturating add in OpenCV, in place: about 1 ms per 640x480 frame.
    """

    def __init__(self, mark_id: str, width: int, height: int, key: bytes | str = DEFAULT_KEY,
                 strength: float = DEFAULT_STRENGTH, version: int = 2) -> None:  # fmt: skip
        if width < GRID[1] or height < GRID[0]:
            raise ValueError(f"frame {width}x{height} is smaller than the watermark grid {GRID[1]}x{GRID[0]}")
        if not strength > 0:
            raise ValueError(f"strength must be positive: {strength}")
        if version not in (1, 2):
            raise ValueError(f"watermark version must be 1 or 2: {version}")
        self.mark_id = mark_id
        self.width, self.height = width, height
        self.strength = float(strength)
        self.method = METHOD if version == 2 else METHOD_V1
        layout = _Layout.from_key(_key_bytes(key), version)
        cells = layout.cell_signs(conv_encode(payload_bits(mark_id))).astype(np.float32)
        if version == 1:  # the frame-relative grid: kept so that v1 files can be made (and read) in tests
            pattern = cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            pattern = tiled_cells(cells, width, height)
        pattern *= np.float32(strength)
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
    the marked one, one of ORIENTATIONS (only when found). `method`: METHOD or METHOD_V1, the
    scheme the mark was read with (only when found). `registration` (v2 only, when found): where
    the tile grid was found in the copy, see `_TileReader.result`.
    """

    found: bool
    mark_id: str | None
    bit_errors: int | None
    score: float
    threshold: float
    frames: int
    offset: int | None
    orientation: str | None = None
    method: str | None = None
    registration: dict[str, Any] | None = None

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


def _difference_weights(signs: np.ndarray) -> np.ndarray:
    """[t, o]: the weight of the difference (frame t - frame t+1) when the first frame read had
    index o: (s_t+o - s_t+o+1) / 2, zero where the sign held (indices modulo PERIOD)."""
    s = signs.astype(np.float64)
    shifted = np.stack([np.roll(s, -o) for o in range(PERIOD)], axis=1)  # [t, o] = s[(t + o) % P]
    return (shifted - np.roll(shifted, -1, axis=0)) / 2


def _median(values: np.ndarray) -> float:
    """np.median of a 1-d float array (which it reorders), without np.median's overhead (half of
    v1's time per frame)."""
    k = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, k)[k])
    values.partition((k - 1, k))
    return float((values[k - 1] + values[k]) / 2)


class _Accumulator:
    """Sums frame differences weighted by every cyclic shift of the keyed sign sequence.

    The difference of consecutive frames cancels the picture (static or slowly moving) and holds
    twice the mark where the sign changed. Each difference is divided by its median magnitude and
    clipped at CLIP x that: every frame weighs the same and a scene cut or fast motion in a few
    cells cannot swamp the sum. `sums[o]` assumes the first frame read had index o (mod PERIOD).
    """

    def __init__(self, key: bytes | str) -> None:
        self.layout = _Layout.from_key(_key_bytes(key))
        self._weights = _difference_weights(self.layout.signs)
        # [turned grid?] -> the frame differences summed by their index modulo PERIOD: every cyclic
        # shift's sum is a fixed mix of these (`_weights`), taken once in `result`
        self.by_phase = {turned: np.zeros((PERIOD, GRID[0] * GRID[1]), np.float64) for turned in (False, True)}
        self._prev: dict[bool, np.ndarray] = {}
        self.frames = 0

    def add(self, y: np.ndarray) -> None:
        """Add the next Y plane (any size, uint8 or float; or the frame already halved some times)."""
        # the halvings both grids take, done once (each _shrink then goes on from here, so the
        # cells are exactly those of the whole frame)
        side = max(GRID)
        base = _halve(np.asarray(y, np.float32), (side, side))
        for turned, by_phase in self.by_phase.items():
            cells = _cells(base, turned)
            if turned in self._prev:
                diff = self._prev[turned] - cells
                scale = _median(np.abs(diff)) + 1e-3
                np.clip(diff / scale, -CLIP, CLIP, out=diff)
                by_phase[(self.frames - 1) % PERIOD] += diff
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
        totals = {turned: self._weights.T @ by_phase for turned, by_phase in self.by_phase.items()}
        for name, (turned, back) in ORIENTATIONS.items():
            shape = (PERIOD, GRID[1], GRID[0]) if turned else (PERIOD, *GRID)
            sums = np.ascontiguousarray(back(totals[turned].reshape(shape))).reshape(PERIOD, -1)
            scores = self._scores(sums)
            offset = int(np.argmax(scores))
            if best is None or scores[offset] > best[0]:
                best = (float(scores[offset]), offset, name, sums)
        assert best is not None
        score, offset, orientation, sums = round(best[0], 3), best[1], best[2], best[3]
        if score < THRESHOLD:
            return Detection(False, None, None, score, THRESHOLD, self.frames, None)
        mark_id, errors = layout.decode(sums[offset])
        if mark_id is None:
            return Detection(False, None, None, score, THRESHOLD, self.frames, None)
        return Detection(True, mark_id, errors, score, THRESHOLD, self.frames, offset, orientation, METHOD_V1)


_WORK_SHORT = 480  # v2 reads frames halved while their shorter side is at least this many px
_V2_LOCAL = 9  # v2 divides each frame difference by its mean magnitude over this many px square (_TileReader)
_V2_FLOOR = 0.1  # plus this share of the whole difference's mean magnitude (still areas keep a finite weight)
_V2_CLIP = 2.0  # and clips the result at this
_V2_MAX_DIFFS = 320  # frame differences v2 sums (about 10 s at 30 fps)
_HARMONICS = 12  # harmonics of the tile period the comb looks for
_SYNC_REFINED = 8  # the best screened (sync, period) pairs, screened again with the period refined
_SYNC_CANDIDATES = 3  # the best screened syncs, registered in full and decoded
_WORKERS = min(4, os.cpu_count() or 1)  # threads that screen the syncs (_TileReader.result)
_FINE_BINS = 4  # fold samples per cell: the phase is found to a quarter cell
_PERIOD_LIMITS = (0.1, 0.7)  # tile periods searched, as fractions of each axis of the frame
# nor below this many (working) px per cell: not the codec's 8 and 16 px blocks, nor a third of the
# tile (whose comb won over the tile's own at 2.0 on a 9:16 reframe, 2.2 tiles across at 6.7 px cells)
_MIN_CELL_PX = 2.5
_REFINE_STEPS = (0.01, 0.005)  # period corrections tried: +-2 steps of 1 %, then +-1 of 0.5 % around the best
# fold-bin shifts decoded in turn when the CRC fails at the pilots' best phase (_TileReader._read)
_PHASES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _whitened(folded: np.ndarray) -> np.ndarray:
    """A fold (bins x bins, float32) less the mean of its 4 neighbouring cells (_FINE_BINS bins
    away, circular): see _TileReader."""
    f = _FINE_BINS
    padded = cv2.copyMakeBorder(folded, f, f, f, f, cv2.BORDER_WRAP)
    around = padded[: -2 * f, f:-f] + padded[2 * f :, f:-f] + padded[f:-f, : -2 * f] + padded[f:-f, 2 * f :]
    return folded - np.float32(0.25) * around


def _work_image(y: np.ndarray) -> np.ndarray:
    """`y` as float32, halved while its shorter side is at least _WORK_SHORT (what v2 reads; v1
    goes on halving from here, so its cells stay those of the whole frame)."""
    img = np.asarray(y, np.float32)
    while min(img.shape) >= _WORK_SHORT:
        h, w = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return img


class _TileReader:
    """Reads the v2 (tiled) mark: sums the frame differences, then registers and decodes.

    Each difference (frame t - frame t+1, on the working image) is divided by its local mean
    magnitude (over _V2_LOCAL px, plus _V2_FLOOR x the frame's), clipped at _V2_CLIP and added to
    the sum of the differences with the same index modulo PERIOD: every area weighs by how little
    the picture moves there, the mark being the same everywhere. v1 reads 13 px cell means and gets
    by with one scale per frame; v2 reads pixels, and moving edges make heavy-tailed differences.
    Scores after CRF 28 veryfast on the demo target (a pan over a photo, 16 levels of change per
    frame) at 1x and 0.75x, and on moving white noise (tests/provenance/test_watermark.py): one
    scale per frame clipped at 3x: 5.3 (not found) / - / 9.1; at 0.5x: 9.2 / 10.1 / 5.7 (not found);
    local, clipped at 2: 9.7 / 10.5 / 9.0.

    `result` then:
    1. mixes those PERIOD sums into the sum under each cyclic shift of the keyed sign sequence, and
       looks for the tile's comb in each sum's power spectrum (facedag.provenance.registration):
       each comb gives a tile period (px, py). At the working size, not half of it: after 0.75x
       and CRF 28 a 480x360 copy's cells are 5 px, and at half size the right sync's comb was
       the weakest of the 64 (its period halved) on the demo render. Each sum's whitened spectrum
       is also matched against square 2-D lattices (registration.lattice_periods), a period q: on
       0.75x copies of the demo render the axis combs of the right sync missed 120 px (240, 80,
       84: 5 of 60 random mark ids were lost), the lattice found it each time;
    2. screens every shift by the best pilot correlation of its sum (at half the working size)
       folded at its period, at the two square periods its axes give, (px, px) and (py, py), at
       (q, q), and at twice px and py (the tile is square unless the copy was stretched; the comb along the axis
       with fewer tiles in view is the one that fails, or finds half the period: on one demo copy
       at 0.75x the right sync scored 6.2 at its own period and 12.5 at (px, px), the wrong syncs
       at most 7.8), then screens the _SYNC_REFINED best pairs again with the period refined by
       +-2 steps of 1 % (a comb 2 % off smears the fold by 2 cells across 4 tiles: on another,
       the right sync screened 7.0 against the wrong ones' 7.8). Content and x264's blocks make
       combs of their own, so the clearest comb does not tell the sync;
    3. for the _SYNC_CANDIDATES best syncs (in turn, until one decodes) folds the sum onto one
       tile at periods within +-2.5 % of the screened one (_REFINE_STEPS), and cross-correlates
       each fold, in each of the 8 orientations, with the pilot pattern: the best (period,
       orientation, phase) gives the cells, read and decoded as v1 does.

    Every fold is filtered first: each cell less the mean of its 4 neighbours (the picture's
    residue in the sum is smooth, the keyed cells are not). On the demo render with the right
    registration: CRF 28 8.8 -> 10.0, 0.75x + CRF 28 7.3 (CRC failed) -> 8.2 (read); a 3 x 3
    mean took 9.8 / 8.1, 5 x 5 9.5 / 7.8.
    """

    def __init__(self, key: bytes | str, weights: np.ndarray) -> None:
        self.layout = _Layout.from_key(_key_bytes(key), 2)
        self._weights = weights
        pilots = (self.layout.chips * self.layout.pilot).reshape(TILE, TILE).astype(np.float32)
        template = np.kron(pilots, np.ones((_FINE_BINS, _FINE_BINS), np.float32))  # the pilots, in fold bins
        self._template = template
        # The fold turned by orientation k, correlated with the pilots, is the fold itself correlated
        # with the pilots turned back (the same values, at permuted shifts): so one fold, one DFT and
        # 8 products instead of 8 turned copies and 9 DFTs (OpenCV's, 3-4x numpy's at this size).
        bins = _FINE_BINS * TILE
        index = np.arange(bins * bins).reshape(1, bins, bins)
        self._turned_templates = []
        for _, back in ORIENTATIONS.values():
            turned = np.empty(bins * bins, np.float32)
            turned[back(index)[0].ravel()] = template.ravel()  # back(turned) == template
            self._turned_templates.append(cv2.dft(turned.reshape(bins, bins)))
        # the differences summed by their index modulo PERIOD: every sync's sum is a fixed mix of
        # these PERIOD sums (`result`), so nothing per frame is kept (it was float16 copies of every
        # difference: 2.3x the time of decoding on a 720x1280 copy, and 4x the memory at 10 s)
        self._by_phase: np.ndarray | None = None  # (PERIOD, h, w) float32
        self._n_diffs = 0
        self._prev: np.ndarray | None = None
        self.frame_shape: tuple[int, int] | None = None

    def add(self, work: np.ndarray, frame_shape: tuple[int, int]) -> None:
        """Add the next frame's working image (from `_work_image`) of a frame of `frame_shape` (h, w)."""
        if self._prev is not None and self._prev.shape == work.shape and self._n_diffs < _V2_MAX_DIFFS:
            # in place, in OpenCV: half the time of the same with numpy's operators or new arrays
            diff = cv2.subtract(self._prev, work)
            local = cv2.absdiff(self._prev, work)
            floor = _V2_FLOOR * cv2.norm(local, cv2.NORM_L1) / diff.size + 1e-3
            cv2.blur(local, (_V2_LOCAL, _V2_LOCAL), dst=local)
            cv2.add(local, floor, dst=local)
            cv2.divide(diff, local, dst=diff)
            cv2.max(diff, -_V2_CLIP, dst=diff)
            cv2.min(diff, _V2_CLIP, dst=diff)
            if self._by_phase is None:
                self._by_phase = np.zeros((PERIOD, *diff.shape), np.float32)
            phase = self._by_phase[self._n_diffs % PERIOD]
            cv2.add(phase, diff, dst=phase)
            self._n_diffs += 1
        self._prev = work
        self.frame_shape = self.frame_shape or frame_shape

    def result(self, frames: int) -> Detection:
        none = Detection(False, None, None, 0.0, THRESHOLD_V2, frames, None)
        if self._n_diffs < 2 or self._by_phase is None or self.frame_shape is None:
            return none
        _, h, w = self._by_phase.shape
        # 1. every sync's sum: difference t weighs _weights[t mod PERIOD, o] under sync o
        sums = (self._weights.T.astype(np.float32) @ self._by_phase.reshape(PERIOD, -1)).reshape(PERIOD, h, w)
        # its spectrum's best comb along each axis: a period (px, py) per sync; and its best square
        # lattice, a period q
        white = registration.whiten(registration.power_spectra(sums))
        mx, my = registration.marginals(white)
        lo, hi = _PERIOD_LIMITS
        low = _MIN_CELL_PX * TILE
        pad = registration.PAD
        px, _ = registration.comb_periods(mx, pad * w, max(lo * w, low), hi * w, _HARMONICS)
        py, _ = registration.comb_periods(my, pad * h, max(lo * h, low), hi * h, _HARMONICS)
        pq, _ = registration.lattice_periods(white, (h, w), max(lo * min(h, w), low), hi * max(h, w), _HARMONICS)
        # 2. every sync screened by its best pilot correlation (no refinement) at its own period and
        #    at the square ones each axis gives (the tile is square unless the copy was stretched)
        h2, w2 = h // 2, w // 2
        halves = [cv2.resize(image[: 2 * h2, : 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA) for image in sums]

        def screen(o: int) -> list[tuple[float, int, tuple[float, float]]]:
            x, y, q = float(px[o]), float(py[o]), float(pq[o])
            periods = {(x, y), (x, x), (y, y), (2 * x, 2 * x), (2 * y, 2 * y), (q, q)}
            return [(self._register(halves[o], (p[0] / 2, p[1] / 2), ())[0], o, p) for p in periods]

        def refine(o: int, period: tuple[float, float]) -> tuple[float, int, tuple[float, float]]:
            value, trial = self._register(halves[o], (period[0] / 2, period[1] / 2), _REFINE_STEPS[:1])[:2]
            return value, o, (2 * trial[0], 2 * trial[1])

        # OpenCV's DFTs and resizes let go of the GIL: the syncs are screened on every core
        with ThreadPoolExecutor(_WORKERS) as pool:
            trials = [t for ts in pool.map(screen, range(PERIOD)) for t in ts]
            trials.sort(key=lambda t: -t[0])
            # the best of them again with the period refined (+-2 steps of 1 %): a comb 2 % off smears
            # the fold by 2 cells across 4 tiles, and the right sync screened lower than wrong ones
            refined = list(pool.map(lambda t: refine(t[1], t[2]), trials[:_SYNC_REFINED]))
        refined.sort(key=lambda t: -t[0])
        candidates: list[tuple[int, tuple[float, float]]] = []
        for _, o, period in refined:
            if all(o != c[0] for c in candidates):
                candidates.append((o, period))
            if len(candidates) == _SYNC_CANDIDATES:
                break
        # 3. in turn, until one decodes: registered in full and read
        best: Detection | None = None
        for offset, period in candidates:
            found = self._read(sums[offset], offset, period, frames)
            if found.found:
                return found
            best = found if best is None or found.score > best.score else best
        assert best is not None
        return best

    def _register(self, image: np.ndarray, period: tuple[float, float],
                  steps: tuple[float, ...]) -> tuple[float, tuple[float, float], int]:
        """The best (normalised pilot correlation, period, orientation index) over the orientations
        and phases of `image` folded at `period` and, for each of `steps` in turn, at +-2 (first step)
        or +-1 such relative steps around the best so far."""
        bins = _FINE_BINS * TILE
        top: tuple[float, tuple[float, float], int] | None = None
        centre = period
        for index, step in enumerate(steps or (0.0,)):
            span = (0,) if not step else (-2, -1, 0, 1, 2) if index == 0 else (-1, 0, 1)
            for mx in span:
                for my in span:
                    trial = (centre[0] * (1 + mx * step), centre[1] * (1 + my * step))
                    folded = _whitened(registration.fold(image, trial, bins))
                    spectrum = cv2.dft(folded)
                    norm = math.sqrt(float(np.dot(folded.ravel(), folded.ravel()))) + 1e-12
                    for k, turned in enumerate(self._turned_templates):
                        product = cv2.mulSpectrums(spectrum, turned, 0, conjB=True)
                        value = cv2.minMaxLoc(cv2.idft(product, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE))[1] / norm
                        if top is None or value > top[0]:
                            top = (value, trial, k)
            assert top is not None
            centre = top[1]
        assert top is not None
        return top

    def _locate(self, image: np.ndarray, period: tuple[float, float], k: int) -> tuple[np.ndarray, int, int]:
        """(tile in the marked orientation, dy, dx) of `image` folded at `period` and turned by
        orientation `k`: where its pilots correlate best."""
        back = list(ORIENTATIONS.values())[k][1]
        tile = np.ascontiguousarray(back(_whitened(registration.fold(image, period, _FINE_BINS * TILE))[None])[0])
        corr = registration.circular_xcorr(tile, self._template)
        dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
        return tile, int(dy), int(dx)

    def _read(self, acc: np.ndarray, offset: int, period: tuple[float, float], frames: int) -> Detection:
        """Step 3 for one candidate sync (`offset`, `acc` the differences summed under it) and period."""
        h, w = acc.shape
        bins = _FINE_BINS * TILE
        names = list(ORIENTATIONS)
        _, period, k = self._register(acc, period, _REFINE_STEPS)
        tile, dy, dx = self._locate(acc, period, k)
        orientation = names[k]

        def cells_at(sy: int, sx: int) -> np.ndarray:
            aligned = np.roll(tile, (-sy, -sx), axis=(0, 1))
            return aligned.reshape(TILE, _FINE_BINS, TILE, _FINE_BINS).sum(axis=(1, 3)).ravel()

        score = round(self.layout.pilot_z(cells_at(dy, dx)), 3)
        if score < THRESHOLD_V2:
            return Detection(False, None, None, score, THRESHOLD_V2, frames, None)
        # The pilots' best phase is not always the payload's: 0.75x + CRF 28 on the demo render
        # left 15-20 % of the code bits wrong, and on 2 of 60 mark ids the CRC failed there but
        # passed a quarter cell away. So the 8 phases around it are decoded too, in turn (each try
        # a 2^-16 false match at most, after a pilot score that an unmarked video does not reach).
        for sy, sx in _PHASES:
            mark_id, errors = self.layout.decode(cells_at(dy + sy, dx + sx))
            if mark_id is not None:
                dy, dx = (dy + sy) % bins, (dx + sx) % bins
                break
        else:
            return Detection(False, None, None, score, THRESHOLD_V2, frames, None)
        reg = self._registration((h, w), period, ORIENTATIONS[orientation][1], bins, dy, dx)
        return Detection(True, mark_id, errors, score, THRESHOLD_V2, frames, offset, orientation, METHOD, reg)

    def _registration(self, work_shape: tuple[int, int], period: tuple[float, float], back: Any, bins: int,
                      dy: int, dx: int) -> dict[str, Any]:  # fmt: skip
        """Where the tile grid lies in the copy (its own pixels and axes).

        `copy_px`: the copy's frame size (w, h). `tile_px`: the period along x and y. `centre_px`: a
        tile corner, the one nearest the copy's centre; the marked frame's centre sits on a tile
        corner, so for a crop, letterbox, zoom or
        border that keeps the picture centred this is where the marked frame's centre is (otherwise
        it is that modulo one tile). `marked_short_side_px`: how long the marked frame's shorter side
        is in the copy, measured along x and along y (TILES_SHORT tiles): their ratio to the marked
        frame's own size is the scale, which output.json can supply (facedag.provenance.verify).
        """
        assert self.frame_shape is not None
        fh, fw = self.frame_shape
        sx, sy = fw / work_shape[1], fh / work_shape[0]
        # which fold bins (row, col) the aligned tile's first and last bins came from
        rows, cols = np.indices((bins, bins))
        src_r = np.roll(back(rows[None])[0], (-dy, -dx), axis=(0, 1))
        src_c = np.roll(back(cols[None])[0], (-dy, -dx), axis=(0, 1))
        corner = []
        for first, last in ((src_c[0, 0], src_c[-1, -1]), (src_r[0, 0], src_r[-1, -1])):
            # the corner lies between two bins that are neighbours modulo the tile
            corner.append(int(first) if (int(first) - int(last)) % bins == 1 else int(last))
        tile_x, tile_y = period[0] * sx, period[1] * sy
        centre = []
        for bin_, tile, size in ((corner[0], tile_x, fw), (corner[1], tile_y, fh)):
            pos = bin_ * tile / bins
            centre.append(round(pos + tile * round((size / 2 - pos) / tile), 1))
        return {"copy_px": [fw, fh], "tile_px": [round(tile_x, 2), round(tile_y, 2)], "centre_px": centre,
                "marked_short_side_px": [round(TILES_SHORT * tile_x, 1), round(TILES_SHORT * tile_y, 1)]}  # fmt: skip


class _Reader:
    """Feeds every frame to both readers (v1 and v2) and keeps the stronger answer."""

    def __init__(self, key: bytes | str) -> None:
        self.v1 = _Accumulator(key)
        self.v2 = _TileReader(key, self.v1._weights)

    @property
    def frames(self) -> int:
        return self.v1.frames

    def add(self, y: np.ndarray) -> None:
        work = _work_image(y)
        self.v2.add(work, (int(y.shape[0]), int(y.shape[1])))
        self.v1.add(work)

    def result(self) -> Detection:
        v1 = self.v1.result()
        v2 = self.v2.result(self.v1.frames)
        if v2.found and (not v1.found or v2.score >= v1.score):
            return v2
        if v1.found:
            return v1
        return v2 if v2.score / v2.threshold >= v1.score / v1.threshold else v1


def detect_frames(y_frames: Iterable[np.ndarray], key: bytes | str = DEFAULT_KEY) -> Detection:
    """Look for a mark (v2 or v1) under `key` in consecutive Y planes (any size, display order)."""
    reader = _Reader(key)
    for y in y_frames:
        reader.add(y)
    return reader.result()


_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
               "yuv411p", "yuv410p", "nv12", "nv21", "nv16", "gray"}  # fmt: skip


def _luma(frame: Any) -> np.ndarray:
    """The Y plane of a PyAV frame as HxW uint8, without a colour conversion for 8-bit YUV."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    return frame.to_ndarray(format="gray")


_EARLY_SECONDS = 2.0  # detect_file looks once after this much video (what the tests read every edit from)...
_EARLY_MARGIN = 1.4  # ...and stops there when the mark it reads scores this many times its threshold


def detect_file(path: str | os.PathLike[str], key: bytes | str = DEFAULT_KEY, max_seconds: float = 10.0,
                timeout: float = 120.0, early: bool = True) -> Detection:  # fmt: skip
    """Look for a mark in the first `max_seconds` of the video at `path`.

    With `early`, the first _EARLY_SECONDS are read as `max_seconds=_EARLY_SECONDS` would read
    them, and a mark found there with a score of at least _EARLY_MARGIN x its threshold (a CRC
    that matches, and a false score that unlikely: Hoeffding, exp(-9.8^2 / 2) for v2) is the
    answer: `frames` says how many frames were read. Otherwise reading goes on to `max_seconds`
    and the whole is read again, which costs one registration more (about half the time of
    decoding 10 s of 640x480) than `early=False`. (Running that look on a thread of its own
    while reading went on was tried: the reading then took the cores the look needed, and a clear
    mark took 1.9x decoding instead of 1.15x, for nothing gained on an unmarked one.)

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
    acc = _Reader(key)
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
                if early and t - start >= _EARLY_SECONDS:
                    early = False
                    found = acc.result()
                    if found.found and found.score >= _EARLY_MARGIN * found.threshold:
                        return found
                acc.add(_luma(frame))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"watermark detection on {src} ran past {timeout:g} s ({acc.frames} frames)")
        except (av.FFmpegError, EOFError) as exc:
            if acc.frames == 0:
                raise ValueError(f"no video frame of {src} decodes: {exc}") from None
    if acc.frames == 0:
        raise ValueError(f"no video frame of {src} decodes")
    return acc.result()
