"""Invisible watermark: a DWT-DCT-SVD mark in the manner of the ``invisible-watermark`` package, vectorised.

The scheme: take the U channel of OpenCV's YUV, its two-level Haar approximation band (LL2: one coefficient
per 4x4 pixels), cut LL2 into 4x4 blocks (16x16 pixels), and quantise the largest singular value ``s0`` of
each block's DCT so that ``s0 mod SCALE`` lies at 1/4 of the step for a 0 bit and at 3/4 for a 1 bit. Block
``(r, c)`` of the grid carries payload bit ``(23 r + c) mod 61`` (:func:`bit_index`). A reader takes the vote of
every bit over its blocks. The package loops over blocks in Python; this module does the same arithmetic on
all blocks at once:

* The DCT is orthonormal, so the singular values of ``DCT(B)`` are those of ``B`` and its singular vectors
  are the DCT of ``B``'s: changing ``s0`` of ``DCT(B)`` by ``d`` and transforming back is ``B + d u v^T`` with
  ``(u, s0, v)`` the top singular triplet of ``B`` itself. No DCT is computed.
* LL2 blocks of U are positive matrices (U >= 17 for any RGB), so their top singular value is simple and well
  separated; a few power iterations on ``B^T B`` find it to float32 precision.
* Changing only LL2 by ``D`` and inverting both Haar steps adds ``D / 4`` to each pixel of the 4x4 group; a
  change ``dU`` of U with Y and V held is ``dG = -0.395 dU``, ``dB = 2.032 dU`` in RGB (OpenCV's YUV), so the
  mark is added to the RGB frame directly instead of round-tripping the whole frame through 8-bit YUV.

Where it differs from the package's ``dwtDctSvd`` (whose format it no longer shares): two Haar levels, not
one, so a block is 16x16 pixels, not 8x8 (a coarser pattern keeps far more of itself through H.264, JPEG and
a change of scale, which blur and re-quantise fine chroma detail first); step 96 on that band (the same change
of at most 3 levels of U per pixel as the package's step 48 one level up); bit ``(23 r + c) mod 61`` instead of
the raster order ``(r * cols + c) mod 61``, so the bit a block carries does not depend on the frame's width and
a crop only rotates the payload (which a reader can search for, :mod:`changeling.provenance.search`); the
embedder moves ``s0`` to the *nearest* point of its bit's lattice; and the reader weighs each block's vote by
how far ``s0`` sits from the decision boundary (soft votes) instead of counting hard ones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.errors import UserError
from changeling.types import Frame

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAYLOAD_SEED = "changeling synthetic media 86"
N_BITS = 61
# The first 61 bits of sha256(PAYLOAD_SEED): the first seed ("... 0", "... 1", ...) whose 61 bits hold 30 or 31
# ones and whose cyclic autocorrelation is at most 13/61, so that frames whose votes come out all 0, all 1 or
# periodic (flat or striped content) agree with it, and with every rotation of it, on about half the bits, like
# random frames. 61 is prime, so neither a row nor a column of blocks repeats a bit within 61 blocks: a
# saturated or dark stripe of the picture costs every bit a little instead of a few bits all of their blocks.
PAYLOAD_BITS: NDArray[np.uint8] = np.unpackbits(
    np.frombuffer(hashlib.sha256(PAYLOAD_SEED.encode()).digest()[:8], dtype=np.uint8))[:N_BITS]

LEVELS = 2  # Haar levels: one LL2 coefficient per CELL x CELL pixels
CELL = 1 << LEVELS
BLOCK = 4  # LL2 block side in coefficients (the package's default)
BLOCK_PX = BLOCK * CELL  # 16: a block's side in pixels
SCALE = 96.0  # quantisation step of s0: at most 3 levels of U per pixel, as the package's 48 one level up
INDEX_STEP = 23  # block (r, c) carries bit (23 r + c) mod 61: the step whose same-bit blocks lie farthest apart
MIN_SIDE = 128  # a 128x128 frame holds 64 blocks; fewer than 61 cannot carry the payload once
# A reading is the payload when at least 54 of its 61 bits agree. On a frame without the mark each bit is a coin
# flip, and P(Binomial(61, 1/2) >= 54) = 2.2e-10 for one reading. ``verify`` tries up to 184 readings of a
# frame (the frame as it is, and three candidate geometries with each of the payload's 61 rotations:
# :mod:`changeling.provenance.search`) and as many of a video's pooled votes: with 16 sampled frames 17 x 184
# readings, a false positive on a video with probability < 7e-7 (docs/decisions.md has the arithmetic).
THRESHOLD_BITS = 54
THRESHOLD = THRESHOLD_BITS / N_BITS

# OpenCV's RGB -> YUV: U = 0.492 (B - Y) + 128 with Y = 0.299 R + 0.587 G + 0.114 B.
_U_FROM_RGB = np.array([[-0.492 * 0.299, -0.492 * 0.587, 0.492 * (1 - 0.114)]], dtype=np.float32)
_RGB_PER_U = np.array([0.0, -0.395, 2.032], dtype=np.float32)  # change of R, G, B per unit of U (Y, V held)
_POWER_ITERATIONS = 3


@dataclass(frozen=True)
class WatermarkReading:
    """What a reader found in one frame (or in a video's pooled votes)."""

    bits: NDArray[np.uint8]  # (n_bits,) bits read, in payload order
    votes: NDArray[np.float32]  # (n_bits,) mean soft vote of each bit's blocks, in [-1, 1]; > 0 reads 1
    agreement: float  # share of bits equal to the payload, in [0, 1]
    blocks: int  # blocks read

    @property
    def found(self) -> bool:
        return self.agreement >= THRESHOLD


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {got}")


def grid(height: int, width: int) -> tuple[int, int]:
    """Blocks down and across an image of this size: whole 16x16-pixel blocks from the top-left corner."""
    return height // BLOCK_PX, width // BLOCK_PX


def has_room(height: int, width: int, n_bits: int = N_BITS) -> bool:
    """Whether a picture of this size holds the payload once (61 blocks: 128x128 pixels, or 64x256...)."""
    rows, cols = grid(height, width)
    return rows * cols >= n_bits


def bit_index(rows: int, cols: int, n_bits: int = N_BITS, step: int = INDEX_STEP) -> NDArray[np.int64]:
    """(rows * cols,) the bit each block carries, in raster order: ``(step r + c) mod n_bits``."""
    r = np.arange(rows, dtype=np.int64)[:, None]
    c = np.arange(cols, dtype=np.int64)[None, :]
    return ((r * step + c) % n_bits).ravel()


def u_plane(frame: Frame) -> NDArray[np.float32]:
    """(H, W) float32: the U channel of OpenCV's YUV (not rounded)."""
    h, w = frame.shape[:2]
    return cv2.transform(np.ascontiguousarray(frame).astype(np.float32), _U_FROM_RGB).reshape(h, w) + 128.0


def _u_ll(frame: Frame, rows: int, cols: int) -> NDArray[np.float32]:
    """(rows * 4, cols * 4) float32: the two-level Haar LL band of U over the pixels the blocks cover."""
    h, w = rows * BLOCK_PX, cols * BLOCK_PX
    u = u_plane(frame[:h, :w])
    # orthonormal Haar LL = (a + b + c + d) / 2 per level: twice the mean of each 2x2 group, so LL2 is 4 x the
    # mean of each 4x4 group
    return cv2.resize(u, (w // CELL, h // CELL), interpolation=cv2.INTER_AREA) * float(CELL)


def _blocks(ll: NDArray[np.float32], rows: int, cols: int) -> NDArray[np.float32]:
    """(4, 4, rows * cols): the LL2 blocks in raster order, one matrix per last index (structure of arrays)."""
    return np.ascontiguousarray(ll.reshape(rows, BLOCK, cols, BLOCK).transpose(1, 3, 0, 2).reshape(BLOCK, BLOCK, -1))


def _top_singular(b: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Top singular triplet of each positive 4x4 matrix ``b[:, :, n]``: u (4, N), s0 (N,), v (4, N)."""
    m = np.einsum("ian,ibn->abn", b, b)  # B^T B, (4, 4, N)
    v = np.full((BLOCK, b.shape[2]), 0.5, dtype=np.float32)
    for _ in range(_POWER_ITERATIONS):
        v = np.einsum("abn,bn->an", m, v)
        v /= np.linalg.norm(v, axis=0, keepdims=True)
    w = np.einsum("abn,bn->an", b, v)
    s0 = np.linalg.norm(w, axis=0)
    return w / np.maximum(s0, 1e-12), s0, v


def _target(s0: NDArray[np.float32], bits: NDArray[np.uint8], scale: float) -> NDArray[np.float32]:
    """Nearest value to s0 whose position in its quantisation cell is 1/4 (bit 0) or 3/4 (bit 1)."""
    offset = (0.25 + 0.5 * bits.astype(np.float32)) * scale
    return np.round((s0 - offset) / scale) * scale + offset


class FrameTooSmall(UserError, ValueError):
    """A frame with fewer blocks than payload bits cannot carry the watermark. A ``ValueError`` for the library
    and a :class:`UserError` for the command line: changeling renders nothing it cannot mark, so a video this
    small cannot be converted."""


def _too_small(width: int, height: int, blocks: int, n_bits: int) -> FrameTooSmall:
    return FrameTooSmall(f"a {width}x{height} frame holds {blocks} blocks of 16x16 pixels, fewer than the {n_bits} "
                         f"payload bits of the provenance watermark; it needs at least {MIN_SIDE}x{MIN_SIDE} pixels")


def embed_bits(frame: Frame, bits: NDArray[np.uint8], scale: float = SCALE) -> Frame:
    """Embed ``bits`` (n,) 0/1 into an (H, W, 3) uint8 RGB frame; returns a new frame (same shape and dtype)."""
    _check_frame(frame)
    rows, cols = grid(*frame.shape[:2])
    if rows * cols < len(bits):
        raise _too_small(frame.shape[1], frame.shape[0], rows * cols, len(bits))
    ll = _u_ll(frame, rows, cols)
    b = _blocks(ll, rows, cols)
    u, s0, v = _top_singular(b)
    per_block = np.asarray(bits, dtype=np.uint8)[bit_index(rows, cols, len(bits))]
    delta = _target(s0, per_block, scale) - s0  # (N,)
    d_ll = (u[:, None, :] * v[None, :, :]) * delta  # (4, 4, N)
    d_ll = d_ll.reshape(BLOCK, BLOCK, rows, cols).transpose(2, 0, 3, 1).reshape(rows * BLOCK, cols * BLOCK)
    # Each pixel of a 4x4 group moves by dLL2 / 4 in U; U -> RGB with Y and V held. Rounding the change before
    # adding it to integer pixels equals rounding the sum, so the full-size work is in int16.
    d_g = np.rint(d_ll * (_RGB_PER_U[1] / CELL)).astype(np.int16)
    d_b = np.rint(d_ll * (_RGB_PER_U[2] / CELL)).astype(np.int16)
    d_rgb = cv2.merge([np.zeros_like(d_g), d_g, d_b])  # (rows*4, cols*4, 3)
    h, w = rows * BLOCK_PX, cols * BLOCK_PX
    d_full = cv2.resize(d_rgb, (w, h), interpolation=cv2.INTER_NEAREST)
    out = frame.copy()
    out[:h, :w] = cv2.add(frame[:h, :w], d_full, dtype=cv2.CV_8U)  # saturates to 0..255
    return out


def block_votes(frame: Frame, scale: float = SCALE) -> NDArray[np.float64]:
    """(rows, cols) soft vote of each block of the grid from the top-left corner, in [-1, 1]: +1 where ``s0``
    sits at 3/4 of its step (a 1 bit), -1 at 1/4 (a 0 bit), 0 on the decision boundaries. Blocks that lossy
    coding pushed near a boundary weigh little; the package's hard vote is the sign of this."""
    rows, cols = grid(*frame.shape[:2])
    if rows * cols == 0:
        return np.zeros((rows, cols))
    b = _blocks(_u_ll(frame, rows, cols), rows, cols)
    # The embedder's power iteration: on these positive blocks it agrees with the exact singular value (which
    # the package's reader computes) to float32 precision, at a fifth of the cost of LAPACK's SVD.
    s0 = _top_singular(b)[1].astype(np.float64)
    return (-np.sin(2.0 * np.pi * s0 / scale)).reshape(rows, cols)


def votes_per_bit(votes: NDArray[np.float64], index: NDArray[np.int64], n_bits: int = N_BITS) -> NDArray[np.float64]:
    """(n_bits,) mean vote of each bit's blocks: ``votes`` and ``index`` (N,) give each block's vote and bit."""
    count = np.bincount(index, minlength=n_bits)
    return np.bincount(index, weights=votes.ravel(), minlength=n_bits) / np.maximum(count, 1)


def reading(votes: NDArray[np.float64], blocks: int, payload: NDArray[np.uint8] = PAYLOAD_BITS) -> WatermarkReading:
    """A :class:`WatermarkReading` from per-bit votes (n_bits,) in payload order."""
    bits = (votes > 0).astype(np.uint8)
    agreement = float(np.mean(bits == payload)) if blocks and len(payload) == len(votes) else 0.0
    return WatermarkReading(bits=bits, votes=votes.astype(np.float32), agreement=agreement, blocks=blocks)


def read_watermark(frame: Frame, n_bits: int = N_BITS, scale: float = SCALE,
                   payload: NDArray[np.uint8] = PAYLOAD_BITS) -> WatermarkReading:
    """Read the bits of an (H, W, 3) uint8 RGB frame as the embedder left it (no crop, scale or mirror since)
    and compare them with ``payload``. Frames too small to hold the payload read as nothing found (agreement
    0); :func:`changeling.provenance.search.find_watermark` also tries edited geometries."""
    _check_frame(frame)
    rows, cols = grid(*frame.shape[:2])
    if rows * cols < n_bits:
        return reading(np.zeros(n_bits), 0, payload)
    votes = votes_per_bit(block_votes(frame, scale), bit_index(rows, cols, n_bits), n_bits)
    return reading(votes, rows * cols, payload)


def embed_watermark(frame: Frame) -> Frame:
    """Mark an (H, W, 3) uint8 RGB frame as changeling output; returns a new (H, W, 3) uint8 frame.

    Invisible (U moves by at most 3 levels, in 16x16-pixel blocks; R and luma by rounding only); frames with
    fewer than 61 such blocks (under 128x128 pixels) cannot hold the payload and raise :class:`FrameTooSmall`.
    Reliable reading after lossy re-encoding needs about 256x256.
    """
    return embed_bits(frame, PAYLOAD_BITS)


def detect_watermark(frame: Frame) -> tuple[bool, float]:
    """Whether an (H, W, 3) uint8 RGB frame, as the embedder left it, carries changeling's mark, and the bit
    agreement in [0, 1]. (``verify`` also finds the mark after crops, scaling and mirroring.)"""
    r = read_watermark(frame)
    return r.found, r.agreement


def embed_watermark_torch(frames: torch.Tensor) -> torch.Tensor:
    """:func:`embed_watermark` for a batch on any device: (N, H, W, 3) uint8 RGB tensor in, same out.

    The same arithmetic in float32 (power iteration, nearest lattice point, rounded int changes), so a GPU
    pipeline can mark frames where they are; equal to the NumPy version up to float rounding (rare 1-level
    differences).
    """
    import torch

    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected an (N, H, W, 3) uint8 tensor, got {tuple(frames.shape)} {frames.dtype}")
    n, height, width = frames.shape[:3]
    rows, cols = grid(height, width)
    if rows * cols < N_BITS:
        raise _too_small(width, height, rows * cols, N_BITS)
    h, w = rows * BLOCK_PX, cols * BLOCK_PX
    dev = frames.device
    coef = torch.from_numpy(_U_FROM_RGB[0]).to(dev)
    u_img = frames[:, :h, :w].to(torch.float32) @ coef + 128.0  # (N, h, w)
    ll = torch.nn.functional.avg_pool2d(u_img[:, None], CELL)[:, 0] * float(CELL)  # (N, h/4, w/4) Haar LL2
    b = ll.reshape(n, rows, BLOCK, cols, BLOCK).permute(0, 1, 3, 2, 4).reshape(-1, BLOCK, BLOCK)  # (M, 4, 4)
    m = b.transpose(1, 2) @ b
    v = torch.full((b.shape[0], BLOCK, 1), 0.5, device=dev)
    for _ in range(_POWER_ITERATIONS):
        v = m @ v
        v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    wv = b @ v
    s0 = torch.linalg.vector_norm(wv, dim=1, keepdim=True)  # (M, 1, 1)
    u = wv / s0.clamp_min(1e-12)
    bits = torch.from_numpy(PAYLOAD_BITS[bit_index(rows, cols)]).to(dev, torch.float32).repeat(n)
    offset = ((0.25 + 0.5 * bits) * SCALE)[:, None, None]
    delta = torch.round((s0 - offset) / SCALE) * SCALE + offset - s0
    d_ll = (delta * (u @ v.transpose(1, 2))).reshape(n, rows, cols, BLOCK, BLOCK)
    d_ll = d_ll.permute(0, 1, 3, 2, 4).reshape(n, rows * BLOCK, cols * BLOCK)
    d_g = torch.round(d_ll * float(_RGB_PER_U[1] / CELL))
    d_b = torch.round(d_ll * float(_RGB_PER_U[2] / CELL))
    d = torch.stack([torch.zeros_like(d_g), d_g, d_b], dim=-1)  # (N, h/4, w/4, 3)
    d = d.repeat_interleave(CELL, dim=1).repeat_interleave(CELL, dim=2)
    out = frames.clone()
    out[:, :h, :w] = (frames[:, :h, :w].to(torch.int16) + d.to(torch.int16)).clamp_(0, 255).to(torch.uint8)
    return out
