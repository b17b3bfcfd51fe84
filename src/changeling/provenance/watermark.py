"""Invisible watermark: the DWT-DCT-SVD scheme of the ``invisible-watermark`` package, vectorised.

The scheme (``imwatermark``'s ``dwtDctSvd`` with its default ``scales=[0, 36, 0]``, ``block=4``): take the U
channel of OpenCV's YUV, its one-level Haar approximation band (LL), cut LL into 4x4 blocks in raster order,
and quantise the largest singular value ``s0`` of each block's DCT so that ``s0 mod scale`` lies at 1/4 of
the step for a 0 bit and at 3/4 for a 1 bit; block ``k`` carries payload bit ``k mod n_bits``. A reader takes
the majority vote of every bit over its blocks. The package loops over blocks in Python (about 0.5 s per 720p
frame); this module does the same arithmetic on all blocks at once:

* The DCT is orthonormal, so the singular values of ``DCT(B)`` are those of ``B`` and its singular vectors
  are the DCT of ``B``'s: changing ``s0`` of ``DCT(B)`` by ``d`` and transforming back is ``B + d u v^T`` with
  ``(u, s0, v)`` the top singular triplet of ``B`` itself. No DCT is computed.
* LL blocks of U are positive matrices (U >= 17 for any RGB), so their top singular value is simple and well
  separated; a few power iterations on ``B^T B`` find it to float32 precision.
* Changing only LL by ``D`` and inverting the Haar step adds ``D / 2`` to each pixel of the 2x2 group; a change
  ``dU`` of U with Y and V held is ``dG = -0.395 dU``, ``dB = 2.032 dU`` in RGB (OpenCV's YUV), so the mark is
  added to the RGB frame directly instead of round-tripping the whole frame through 8-bit YUV.

Three choices differ from the package's defaults, none of them in the format: the step is 48, not 36 (36 does
not survive H.264 CRF 28: pass ``scales=[0, 48, 0]`` to the package); the embedder moves ``s0`` to the
*nearest* point of its bit's lattice (the package keeps ``s0``'s quantisation cell, moving it up to 3/4 of a
step); and this module's reader weighs each block's vote by how far ``s0`` sits from the decision boundary
(soft votes) instead of counting hard ones. The package decodes this module's marks and this module decodes
the package's (tests/test_provenance.py checks both ways).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from changeling.types import Frame

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAYLOAD_SEED = "changeling synthetic media 86"
N_BITS = 61
# The first 61 bits of sha256(PAYLOAD_SEED): the first seed ("... 0", "... 1", ...) whose 61 bits hold 30 or 31
# ones and whose cyclic autocorrelation is at most 13/61, so that frames whose votes come out all 0, all 1 or
# periodic (flat or striped content) agree with it on about half the bits, like random frames. 61 is prime, so
# a bit's blocks do not line up in one column of blocks (block k carries bit k mod 61, in raster order): a
# saturated or dark stripe of the picture costs every bit a little instead of a few bits all of their blocks.
PAYLOAD_BITS: NDArray[np.uint8] = np.unpackbits(
    np.frombuffer(hashlib.sha256(PAYLOAD_SEED.encode()).digest()[:8], dtype=np.uint8))[:N_BITS]

SCALE = 48.0  # quantisation step of s0 (the package's default, 36, does not survive H.264 CRF 28)
BLOCK = 4  # LL block side (the package's default)
MIN_SIDE = 64  # a 64x64 frame holds 64 blocks; fewer than 61 cannot carry the payload once
# A reading is the payload when at least 50 of its 61 bits agree. On a frame without the mark each bit is a coin
# flip (the payload is balanced, so flat or striped content agrees with about half), and
# P(Binomial(61, 1/2) >= 50) = 2.3e-7: a video checked with 16 frames plus their pooled votes errs with
# probability < 4e-6. Measured: 223 unmarked frames read 0.50 +- 0.06 (the binomial's 0.064), at most 0.67;
# marked frames read 1.0, and after H.264 CRF 28 at 256x256 0.93-1.0 per frame on sample clips, 0.6-0.98 on a
# fast pan (most above the threshold), 0.97-1.0 pooled over frames.
THRESHOLD = 50 / 61

# OpenCV's RGB -> YUV: U = 0.492 (B - Y) + 128 with Y = 0.299 R + 0.587 G + 0.114 B.
_U_FROM_RGB = np.array([[-0.492 * 0.299, -0.492 * 0.587, 0.492 * (1 - 0.114)]], dtype=np.float32)
_RGB_PER_U = np.array([0.0, -0.395, 2.032], dtype=np.float32)  # change of R, G, B per unit of U (Y, V held)
_POWER_ITERATIONS = 3


@dataclass(frozen=True)
class WatermarkReading:
    """What a reader found in one frame."""

    bits: NDArray[np.uint8]  # (n_bits,) majority-voted bits
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


def _grid(height: int, width: int) -> tuple[int, int]:
    """Blocks down and across: the package crops to multiples of 4 pixels, halves (Haar), cuts 4x4 blocks."""
    return (height // 4 * 2) // BLOCK, (width // 4 * 2) // BLOCK


def _u_ll(frame: Frame, rows: int, cols: int) -> NDArray[np.float32]:
    """(rows * 4, cols * 4) float32: the Haar LL band of U over the pixels the blocks cover."""
    h, w = rows * BLOCK * 2, cols * BLOCK * 2
    u = cv2.transform(np.ascontiguousarray(frame[:h, :w]).astype(np.float32), _U_FROM_RGB).reshape(h, w) + 128.0
    # Haar LL = (a + b + c + d) / 2 = 2 * mean of each 2x2 group
    return cv2.resize(u, (w // 2, h // 2), interpolation=cv2.INTER_AREA) * 2.0


def _blocks(ll: NDArray[np.float32], rows: int, cols: int) -> NDArray[np.float32]:
    """(4, 4, rows * cols): the LL blocks in raster order, one matrix per last index (structure of arrays)."""
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


def embed_bits(frame: Frame, bits: NDArray[np.uint8], scale: float = SCALE) -> Frame:
    """Embed ``bits`` (n,) 0/1 into an (H, W, 3) uint8 RGB frame; returns a new frame (same shape and dtype)."""
    _check_frame(frame)
    rows, cols = _grid(*frame.shape[:2])
    if rows * cols < len(bits):
        raise ValueError(f"a {frame.shape[1]}x{frame.shape[0]} frame holds {rows * cols} blocks, fewer than the "
                         f"{len(bits)} payload bits; the watermark needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    ll = _u_ll(frame, rows, cols)
    b = _blocks(ll, rows, cols)
    u, s0, v = _top_singular(b)
    per_block = np.resize(np.asarray(bits, dtype=np.uint8), rows * cols)
    delta = _target(s0, per_block, scale) - s0  # (N,)
    d_ll = (u[:, None, :] * v[None, :, :]) * delta  # (4, 4, N)
    d_ll = d_ll.reshape(BLOCK, BLOCK, rows, cols).transpose(2, 0, 3, 1).reshape(rows * BLOCK, cols * BLOCK)
    # Each pixel of a 2x2 group moves by dLL / 2 in U; U -> RGB with Y and V held. Rounding the change before
    # adding it to integer pixels equals rounding the sum, so the full-size work is in int16.
    d_g = np.rint(d_ll * (0.5 * _RGB_PER_U[1])).astype(np.int16)
    d_b = np.rint(d_ll * (0.5 * _RGB_PER_U[2])).astype(np.int16)
    d_rgb = cv2.merge([np.zeros_like(d_g), d_g, d_b])  # (rows*4, cols*4, 3)
    h, w = rows * BLOCK * 2, cols * BLOCK * 2
    d_full = cv2.resize(d_rgb, (w, h), interpolation=cv2.INTER_NEAREST)
    out = frame.copy()
    out[:h, :w] = cv2.add(frame[:h, :w], d_full, dtype=cv2.CV_8U)  # saturates to 0..255
    return out


def read_watermark(frame: Frame, n_bits: int = N_BITS, scale: float = SCALE,
                   payload: NDArray[np.uint8] = PAYLOAD_BITS) -> WatermarkReading:
    """Read the majority-voted bits of an (H, W, 3) uint8 RGB frame and compare them with ``payload``.

    Frames too small to hold the payload read as nothing found (agreement 0).
    """
    _check_frame(frame)
    rows, cols = _grid(*frame.shape[:2])
    if rows * cols < n_bits:
        empty = np.zeros(n_bits, np.uint8)
        return WatermarkReading(bits=empty, votes=empty.astype(np.float32), agreement=0.0, blocks=0)
    ll = _u_ll(frame, rows, cols)
    b = _blocks(ll, rows, cols)
    # The exact singular value, as the package's reader computes it (the embedder's power iteration agrees
    # with it to float32 precision on these positive blocks).
    s0 = np.linalg.svd(b.transpose(2, 0, 1).astype(np.float64), compute_uv=False)[:, 0]
    # Soft vote: +1 at 3/4 of the step (a 1 bit), -1 at 1/4 (a 0 bit), 0 on the decision boundaries. Blocks
    # that lossy coding pushed near a boundary weigh little; the package's hard vote is the sign of this.
    soft = -np.sin(2.0 * np.pi * s0 / scale)
    index = np.arange(rows * cols) % n_bits
    votes = (np.bincount(index, weights=soft, minlength=n_bits) /
             np.bincount(index, minlength=n_bits)).astype(np.float32)
    bits = (votes > 0).astype(np.uint8)
    agreement = float(np.mean(bits == payload)) if len(payload) == n_bits else 0.0
    return WatermarkReading(bits=bits, votes=votes, agreement=agreement, blocks=rows * cols)


def embed_watermark(frame: Frame) -> Frame:
    """Mark an (H, W, 3) uint8 RGB frame as changeling output; returns a new (H, W, 3) uint8 frame.

    Invisible (the U channel moves by at most 2.25 levels, 1.1 on average); frames under 64x64 pixels cannot
    hold the payload and raise ``ValueError``. Reliable reading after lossy re-encoding needs about 256x256.
    """
    return embed_bits(frame, PAYLOAD_BITS)


def detect_watermark(frame: Frame) -> tuple[bool, float]:
    """Whether an (H, W, 3) uint8 RGB frame carries changeling's mark, and the bit agreement in [0, 1]."""
    reading = read_watermark(frame)
    return reading.found, reading.agreement


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
    rows, cols = _grid(height, width)
    if rows * cols < N_BITS:
        raise ValueError(f"a {width}x{height} frame holds {rows * cols} blocks, fewer than the {N_BITS} payload "
                         f"bits; the watermark needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    h, w = rows * BLOCK * 2, cols * BLOCK * 2
    dev = frames.device
    coef = torch.from_numpy(_U_FROM_RGB[0]).to(dev)
    u_img = frames[:, :h, :w].to(torch.float32) @ coef + 128.0  # (N, h, w)
    ll = torch.nn.functional.avg_pool2d(u_img[:, None], 2)[:, 0] * 2.0  # (N, h/2, w/2) Haar LL
    b = ll.reshape(n, rows, BLOCK, cols, BLOCK).permute(0, 1, 3, 2, 4).reshape(-1, BLOCK, BLOCK)  # (M, 4, 4)
    m = b.transpose(1, 2) @ b
    v = torch.full((b.shape[0], BLOCK, 1), 0.5, device=dev)
    for _ in range(_POWER_ITERATIONS):
        v = m @ v
        v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    wv = b @ v
    s0 = torch.linalg.vector_norm(wv, dim=1, keepdim=True)  # (M, 1, 1)
    u = wv / s0.clamp_min(1e-12)
    bits = torch.from_numpy(np.resize(PAYLOAD_BITS, rows * cols)).to(dev, torch.float32).repeat(n)
    offset = ((0.25 + 0.5 * bits) * SCALE)[:, None, None]
    delta = torch.round((s0 - offset) / SCALE) * SCALE + offset - s0
    d_ll = (delta * (u @ v.transpose(1, 2))).reshape(n, rows, cols, BLOCK, BLOCK)
    d_ll = d_ll.permute(0, 1, 3, 2, 4).reshape(n, rows * BLOCK, cols * BLOCK)
    d_g = torch.round(d_ll * float(0.5 * _RGB_PER_U[1]))
    d_b = torch.round(d_ll * float(0.5 * _RGB_PER_U[2]))
    d = torch.stack([torch.zeros_like(d_g), d_g, d_b], dim=-1)  # (N, h/2, w/2, 3)
    d = d.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    out = frames.clone()
    out[:, :h, :w] = (frames[:, :h, :w].to(torch.int16) + d.to(torch.int16)).clamp_(0, 255).to(torch.uint8)
    return out


def watermark_marker(device: torch.device | str) -> Callable[[Frame], Frame]:
    """The frame marker for a convert on ``device``: :func:`embed_watermark` (NumPy) on the CPU; on a GPU a
    :class:`~changeling.provenance.batch_marker.BatchMarker`, which marks the frames of all render threads
    together on that GPU (:func:`embed_watermark_torch` in batches, on a stream of its own)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return embed_watermark
    from changeling.provenance.batch_marker import BatchMarker

    return BatchMarker(dev)
