"""Finding the watermark after everyday edits: a crop, a change of scale, a horizontal mirror, and the lossy
re-encoding that comes with them.

The embedder's block ``(r, c)`` carries bit ``(23 r + c) mod 61``. A crop moves the 16-pixel block grid by an
offset and rotates the payload (by the bit of the first whole block); a change of scale changes the block's side;
a mirror reverses the columns. The reader finds that geometry in three steps, the first two blind to the
payload's bits (so that they add no hypotheses to the false-positive count, docs/decisions.md):

1. **Scale and mirror**, from the lattice of same-bit blocks. Blocks ``(dr, dc)`` apart with
   ``23 dr + dc = 0 mod 61``, such as ``(8, -1)``, ``(3, -8)`` and ``(5, 7)``, carry the same bit. A map of
   every pixel's soft vote (the box mean of U read against the lattice of the step) therefore correlates with
   itself at ``16 s (dr, dc)`` for a picture at scale ``s``, with ``dc`` negated in a mirrored one, and hardly
   anywhere else. One FFT autocorrelation per frame (pooled over a video's frames) is sampled at those
   displacements for scales from 0.45 to 2.2 in both orientations; its peaks are the candidates.
2. **Grid offset**, and the scale to half a percent. At a candidate scale the picture is resampled to
   16-pixel blocks; products of 16x16 box votes ``16 (dr, dc)`` apart, binned by the position modulo 16, are
   largest on the block grid, and that largest bin stands out most where the scale is right.
3. **Read** the blocks at that geometry as the reader reads a frame as written, and compare their votes with
   the payload in each of its 61 rotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.provenance.watermark import (
    BLOCK_PX,
    INDEX_STEP,
    N_BITS,
    PAYLOAD_BITS,
    SCALE,
    WatermarkReading,
    block_votes,
    read_watermark,
    reading,
    u_plane,
    votes_per_bit,
)
from changeling.types import Frame

SCALES = (0.45, 2.2)  # the scales searched (a 0.5x to 2x edit, with room for a crop's rounding)
CANDIDATES = 3  # geometries read per frame, besides the frame as it is
# Readings of one frame: as it is (one), and each candidate geometry in each of the payload's 61 rotations.
HYPOTHESES_PER_FRAME = 1 + CANDIDATES * N_BITS
_STEP = 0.01  # relative step of the coarse scale grid (a peak is about 10% wide)
_FINE = 0.001  # and of its refinement
_ANALYSIS_SIDE = 1024  # the lattice search looks at the middle of larger frames only
_ANALYSIS_FRAMES = 4  # and at no more than this many frames of a video (pooled)
_REFINE_FRAMES = 2  # frames whose block grid refines a candidate scale
_REFINE_SIDE = 768  # (their middle: 0.5% of scale moves a block by 4 pixels across it)
_STAGE1_BOX = 8  # box side of the pixel votes in step 1: inside a block at every scale from 0.5
_HIGHPASS_SIGMA = 12.0  # removes flat areas' constant votes, which would correlate at every displacement
_S0_PER_U = float(BLOCK_PX)  # s0 of a flat block of U = u is 16 u (LL2 = 4 u, a 4x4 block of it has s0 16 u)


@dataclass(frozen=True)
class Geometry:
    """Where the embedder's block grid lies in a picture: a block's side is ``16 * scale`` pixels, the first
    whole block of the grid resampled to 16-pixel blocks starts at ``(dy, dx)``, and ``mirrored`` pictures
    have their columns reversed."""

    scale: float = 1.0
    mirrored: bool = False
    dy: int = 0
    dx: int = 0

    @property
    def identity(self) -> bool:
        return self == Geometry()

    def describe(self) -> str:
        if self.identity:
            return "as written"
        parts = [f"scaled {self.scale:.2f}x" if abs(self.scale - 1) > 0.005 else "",
                 "mirrored" if self.mirrored else "",
                 "cropped" if (self.dy, self.dx) != (0, 0) else ""]
        return ", ".join(p for p in parts if p) or "shifted"


@dataclass(frozen=True)
class Finding:
    """The best reading of a picture (or of a video's pooled votes) over the geometries tried."""

    reading: WatermarkReading
    geometry: Geometry
    rotation: int  # the payload's rotation: block bit i read as payload bit (i + rotation) mod 61


# -- the lattice of same-bit blocks ---------------------------------------------------------------------------


@cache
def lattice_vectors(step: int = INDEX_STEP, n_bits: int = N_BITS) -> NDArray[np.float64]:
    """(3, 2) the three shortest block displacements (dr, dc), dr > 0, whose blocks carry the same bit."""
    found = [(float(np.hypot(dr, dc)), dr, dc) for dr in range(1, n_bits) for dc in range(-n_bits, n_bits + 1)
             if (dr * step + dc) % n_bits == 0]
    return np.array([(dr, dc) for _, dr, dc in sorted(found)[:3]], dtype=np.float64)


def _pixel_votes(u: NDArray[np.float32], box: int, anchor: tuple[int, int] = (-1, -1)) -> NDArray[np.float32]:
    """The soft vote of a flat block with the box mean of ``u`` (H, W) around each pixel, in [-1, 1]."""
    mean = cv2.blur(u, (box, box), anchor=anchor, borderType=cv2.BORDER_REFLECT)
    return np.asarray(-np.sin(mean * np.float32(2 * np.pi * _S0_PER_U / SCALE)), dtype=np.float32)


def _middle(frame: Frame, side: int) -> Frame:
    h, w = frame.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return frame[y:y + side, x:x + side]


def _autocorrelation(frames: Sequence[Frame]) -> NDArray[np.float64]:
    """(H2, W2) the pooled autocorrelation of the frames' high-passed pixel votes, normalised per displacement
    by the number of overlapping pixels and by the value at zero (so 1 there; a displacement is read with the
    FFT's wrap-around, at index ``d mod size``)."""
    # zero padding: no wrap-around up to the longest displacement sampled (or the picture's side, beyond which
    # nothing overlaps)
    longest = int(np.ceil(BLOCK_PX * SCALES[1] * np.abs(lattice_vectors()).max())) + 2
    power: NDArray[np.float64] | None = None
    h = w = 0
    for frame in frames:
        part = _middle(frame, _ANALYSIS_SIDE)
        h, w = part.shape[:2]
        votes = _pixel_votes(u_plane(part), _STAGE1_BOX)
        votes -= cv2.GaussianBlur(votes, (0, 0), _HIGHPASS_SIGMA)
        size = (cv2.getOptimalDFTSize(h + min(longest, h)), cv2.getOptimalDFTSize(w + min(longest, w)))
        spectrum = np.fft.rfft2(votes, s=size)
        p = spectrum.real ** 2 + spectrum.imag ** 2
        power = p if power is None else power + p
    assert power is not None
    corr = np.fft.irfft2(power, s=size)
    # overlapping pixels at each displacement (same wrap-around layout): (h - |dy|) (w - |dx|)
    dy = np.minimum(np.arange(size[0]), size[0] - np.arange(size[0]))
    dx = np.minimum(np.arange(size[1]), size[1] - np.arange(size[1]))
    overlap = np.maximum(h - dy, 0)[:, None] * np.maximum(w - dx, 0)[None, :]
    # where under a quarter of the picture overlaps, the mean of few products is noise: no evidence there
    corr = np.where(overlap >= h * w / 4, corr / np.maximum(overlap, 1), 0.0)
    return corr / max(float(corr[0, 0]), 1e-12)


def _sample(corr: NDArray[np.float64], dy: NDArray[np.float64], dx: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bilinear samples of a wrap-around array at displacements (any shape)."""
    hh, ww = corr.shape
    y0, x0 = np.floor(dy), np.floor(dx)
    fy, fx = dy - y0, dx - x0
    y0, x0 = y0.astype(np.int64) % hh, x0.astype(np.int64) % ww
    y1, x1 = (y0 + 1) % hh, (x0 + 1) % ww
    return ((1 - fy) * ((1 - fx) * corr[y0, x0] + fx * corr[y0, x1])
            + fy * ((1 - fx) * corr[y1, x0] + fx * corr[y1, x1]))


def _lattice_score(corr: NDArray[np.float64], scales: NDArray[np.float64], mirrored: bool) -> NDArray[np.float64]:
    """(S,) mean autocorrelation at the same-bit displacements of each scale."""
    v = lattice_vectors() * (1.0, -1.0 if mirrored else 1.0)
    d = BLOCK_PX * scales[:, None, None] * v[None]  # (S, 3, 2) (dy, dx) pixels
    return _sample(corr, d[..., 0], d[..., 1]).mean(axis=1)


def scale_candidates(frames: Sequence[Frame], count: int = CANDIDATES) -> list[tuple[float, bool, float]]:
    """Up to ``count`` (scale, mirrored, score) where the same-bit lattice shows, best first.

    A lattice at scale ``s`` also shows at ``2 s``, ``3 s`` and ``4 s`` (twice a same-bit displacement is one),
    so a peak whose half, third or quarter is about as strong is replaced by it.
    """
    corr = _autocorrelation(frames)
    lo, hi = np.log(SCALES[0]), np.log(SCALES[1])
    grid = np.exp(np.arange(lo, hi + _STEP, _STEP))
    peaks: list[tuple[float, bool, float]] = []
    for mirrored in (False, True):
        along = _lattice_score(corr, grid, mirrored)
        for i in range(1, len(grid) - 1):
            if along[i] > 0 and along[i] >= along[i - 1] and along[i] >= along[i + 1]:
                peaks.append((float(grid[i]), mirrored, float(along[i])))
    peaks.sort(key=lambda p: -p[2])

    def refine(s: float, mirrored: bool) -> tuple[float, float]:
        fine = s * np.exp(np.arange(-1.5 * _STEP, 1.5 * _STEP + _FINE / 2, _FINE))
        fine = fine[(fine >= SCALES[0]) & (fine <= SCALES[1])]
        along = _lattice_score(corr, fine, mirrored)
        k = int(np.argmax(along))
        return float(fine[k]), float(along[k])

    chosen: list[tuple[float, bool, float]] = []
    for s, mirrored, score in peaks[:4 * count]:
        s, score = refine(s, mirrored)
        for k in (4, 3, 2):  # the fundamental of a harmonic (4 x 0.5 is still in the range)
            if s / k >= SCALES[0]:
                sub, sub_score = refine(s / k, mirrored)
                if sub_score >= 0.5 * score:
                    s, score = sub, sub_score
                    break
        if all(m != mirrored or abs(np.log(s / c)) > 3 * _STEP for c, m, _ in chosen):
            chosen.append((s, mirrored, score))
        if len(chosen) == count:
            break
    return chosen


# -- the grid offset and the reading --------------------------------------------------------------------------


def resample(frame: Frame, scale: float) -> Frame:
    """``frame`` resized by ``1 / scale``, so that blocks of ``16 * scale`` pixels become 16 pixels."""
    h, w = frame.shape[:2]
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    if size == (w, h):
        return frame
    interpolation = cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(frame, size, interpolation=interpolation), dtype=np.uint8)


def _phase_map(pictures: Sequence[Frame], mirrored: bool) -> NDArray[np.float64]:
    """(16, 16) mean product of 16x16 box votes one same-bit displacement apart, by the box's position modulo
    16 in resampled pictures: largest where the boxes sit on the block grid."""
    p = BLOCK_PX
    v = (lattice_vectors() * (1.0, -1.0 if mirrored else 1.0) * p).astype(np.int64)
    sums = np.zeros((p, p))
    count = 0
    for picture in pictures:
        votes = _pixel_votes(u_plane(picture), p, anchor=(0, 0))  # box from each pixel right and down
        h, w = votes.shape[0] - p + 1, votes.shape[1] - p + 1  # boxes inside the picture
        for dy, dx in v:
            x0 = max(0, -dx)
            rows, cols = (h - dy) // p * p, (min(w, w - dx) - x0) // p * p  # whole periods of positions
            if rows <= 0 or cols <= 0:
                continue
            prod = votes[:rows, x0:x0 + cols] * votes[dy:dy + rows, x0 + dx:x0 + dx + cols]
            period = prod.reshape(rows // p, p, cols // p, p).sum(axis=(0, 2), dtype=np.float64)
            sums += np.roll(period, x0 % p, axis=1)  # column j of the window is position x0 + j
            count += rows * cols // (p * p)
    return sums / max(count, 1)


def refine_scale(frames: Sequence[Frame], scale: float, mirrored: bool) -> float:
    """The scale near ``scale`` (within 2%, to 0.5%) at which the block grid is sharpest over the whole picture.

    The lattice peak of :func:`scale_candidates` is some 10% wide, and a codec's own 8 or 16 pixel grid can pull
    its top by a percent or two; across a picture 30 blocks wide that misplaces the last blocks by half a block.
    The grid's phase map is sharp only where the scale is right across the picture.
    """
    middles = [_middle(f, _REFINE_SIDE) for f in frames]

    def sharpness(s: float) -> float:
        m = _phase_map([resample(f, s) for f in middles], mirrored)
        return float(m.max() - m.mean())

    tried = {s: sharpness(s) for s in scale * np.exp([-0.015, 0.0, 0.015])}
    best = max(tried, key=tried.__getitem__)
    tried |= {s: sharpness(s) for s in best * np.exp([-0.005, 0.005])}
    return float(max(tried, key=tried.__getitem__))


def grid_offset(pictures: Sequence[Frame], mirrored: bool) -> tuple[int, int]:
    """(dy, dx) in [0, 16): where the 16-pixel block grid of resampled pictures starts."""
    k = int(np.argmax(_phase_map(pictures, mirrored)))
    return k // BLOCK_PX, k % BLOCK_PX


def local_votes(picture: Frame, geometry: Geometry) -> tuple[NDArray[np.float64], int]:
    """(61,) mean vote of the blocks of a resampled picture at ``geometry``'s offset, grouped by the bit they
    carry counted from the first block (``(23 r + c)`` or, mirrored, ``(23 r - c)`` mod 61), and the blocks."""
    votes = block_votes(np.ascontiguousarray(picture[geometry.dy:, geometry.dx:]))
    rows, cols = votes.shape
    r = np.arange(rows, dtype=np.int64)[:, None]
    c = np.arange(cols, dtype=np.int64)[None, :]
    index = ((r * INDEX_STEP + (-c if geometry.mirrored else c)) % N_BITS).ravel()
    return votes_per_bit(votes, index), rows * cols


@cache
def _rotations() -> NDArray[np.int64]:
    """(61, 61): row k lists, for each local bit i, the payload bit it is under rotation k."""
    i = np.arange(N_BITS)
    return (i[None, :] + i[:, None]) % N_BITS


def best_rotation(votes: NDArray[np.float64], blocks: int) -> tuple[WatermarkReading, int]:
    """The reading in payload order under the rotation that agrees best with the payload, and that rotation."""
    rot = _rotations()
    bits = (votes > 0).astype(np.uint8)
    agree = (bits[None, :] == PAYLOAD_BITS[rot]).sum(axis=1)
    k = int(np.argmax(agree))
    in_payload_order = np.empty_like(votes)
    in_payload_order[rot[k]] = votes
    return reading(in_payload_order, blocks), k


def _pool(parts: Sequence[tuple[NDArray[np.float64], int]]) -> tuple[NDArray[np.float64], int]:
    """Votes of several pictures together, each weighed by its blocks."""
    used = [(v, n) for v, n in parts if n > 0]
    if not used:
        return np.zeros(N_BITS), 0
    votes = np.average([v for v, _ in used], axis=0, weights=[n for _, n in used])
    return votes, sum(n for _, n in used)


@dataclass(frozen=True)
class Search:
    """Every frame's best reading and the pooled one, over the frame as it is and the candidate geometries."""

    frames: list[Finding]
    pooled: Finding
    geometries: list[Geometry]  # the candidate geometries tried (identity not counted)


def _better(a: Finding | None, b: Finding) -> Finding:
    return b if a is None or b.reading.agreement > a.reading.agreement else a


def find_watermark(frames: Sequence[Frame], *, search: bool = True) -> Search:
    """Read frames of one picture or video (same size, same edits) as written and, unless the mark reads there
    or ``search`` is False, at the candidate geometries of :func:`scale_candidates` and :func:`grid_offset`.

    The candidates are read on up to four frames (all of a picture's or a short video's); the one whose pooled
    votes agree best with the payload is read on the other frames too and pooled over all of them. A frame is
    compared with the payload at most :data:`HYPOTHESES_PER_FRAME` times (as written, and each candidate in
    each rotation), and the pooled reading is one of as many possible pools, whichever candidate was chosen;
    each result is the best of its readings.
    """
    identity = Geometry()
    as_written = [read_watermark(f) for f in frames]
    best: list[Finding] = [Finding(r, identity, 0) for r in as_written]
    pooled_votes, pooled_blocks = _pool([(r.votes.astype(np.float64), r.blocks) for r in as_written])
    pooled = Finding(reading(pooled_votes, pooled_blocks), identity, 0)
    found = pooled.reading.found or any(f.reading.found for f in best)
    geometries: list[Geometry] = []
    if found or not search or not frames:
        return Search(best, pooled, geometries)

    def read(indices: Sequence[int], geometry: Geometry) -> list[tuple[NDArray[np.float64], int]]:
        """Frames' votes at ``geometry``; each frame keeps its best reading."""
        parts = [local_votes(resample(frames[i], geometry.scale), geometry) for i in indices]
        for i, (votes, blocks) in zip(indices, parts, strict=True):
            r, k = best_rotation(votes, blocks)
            best[i] = _better(best[i], Finding(r, geometry, k))
        return parts

    def pool(parts: Sequence[tuple[NDArray[np.float64], int]], geometry: Geometry) -> Finding:
        r, k = best_rotation(*_pool(parts))
        return Finding(r, geometry, k)

    step = max(1, len(frames) // _ANALYSIS_FRAMES)
    analysed = list(range(0, len(frames), step))[:_ANALYSIS_FRAMES]
    rest = [i for i in range(len(frames)) if i not in analysed]
    sample = [frames[i] for i in analysed]
    tried: list[tuple[Finding, list[tuple[NDArray[np.float64], int]]]] = []
    for coarse, mirrored, _ in scale_candidates(sample):
        scale = refine_scale(sample[:_REFINE_FRAMES], coarse, mirrored)
        dy, dx = grid_offset([resample(f, scale) for f in sample], mirrored)
        geometry = Geometry(scale=round(scale, 4), mirrored=mirrored, dy=dy, dx=dx)
        geometries.append(geometry)
        parts = read(analysed, geometry)
        tried.append((pool(parts, geometry), parts))
    if not rest:  # every frame analysed: each candidate's pool is one of the pooled readings
        for finding, _ in tried:
            pooled = _better(pooled, finding)
    elif tried:  # the best candidate on the analysed frames is read on the others, and pooled over all
        finding, parts = max(tried, key=lambda t: t[0].reading.agreement)
        pooled = _better(pooled, pool(parts + read(rest, finding.geometry), finding.geometry))
    return Search(best, pooled, geometries)
