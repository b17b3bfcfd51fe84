"""Colour matching of the swapped face to the frame it is pasted into.

Every matcher is a pure function ``(face, target, mask) -> face``:

- ``face``: the model's output, (H, W, 3) RGB, float32 in [0, 1] or uint8;
- ``target``: the original frame's crop under the same transform, same shape and dtype;
- ``mask``: (H, W) float in [0, 1]; statistics are taken over the pixels where ``mask >= 0.5``.

The result has the face's shape and dtype (uint8 in, uint8 out) and is clipped to the valid range. The
transfer computed inside the mask is applied to every pixel of the crop, so a later feathered blend sees a
consistent face. When the mask selects fewer than :data:`MIN_PIXELS` pixels the face comes back unchanged.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import scipy.fft
from numpy.typing import NDArray

from changeling.vocab import COLOR_MODES, check_registry

FloatImage = NDArray[np.float32]  # (H, W, 3) in [0, 1]
MIN_PIXELS = 16
_EPS = 1e-6


class ColorMatcher(Protocol):
    def __call__(self, face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def _check(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
    if face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) face, got {face.shape}")
    if target.shape != face.shape:
        raise ValueError(f"target {target.shape} must have the face's shape {face.shape}")
    if mask.shape != face.shape[:2]:
        raise ValueError(f"mask {mask.shape} must be (H, W) = {face.shape[:2]}")


def to_float(image: np.ndarray) -> FloatImage:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1] (no copy when already float32)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return np.asarray(image, dtype=np.float32)


def _like(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Clip to the valid range and return in ``like``'s dtype (uint8 is rounded)."""
    if like.dtype == np.uint8:
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def selection(mask: np.ndarray) -> NDArray[np.bool_]:
    """The pixels whose statistics count: ``mask >= 0.5``."""
    return np.asarray(mask) >= 0.5


def none(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """No colour change."""
    _check(face, target, mask)
    return face


def mean_color(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift each RGB channel so the face's mean inside the mask equals the target's."""
    _check(face, target, mask)
    sel = selection(mask)
    if sel.sum() < MIN_PIXELS:
        return face
    f, t = to_float(face), to_float(target)
    shift = t[sel].mean(axis=0) - f[sel].mean(axis=0)  # (3,)
    return _like(f + shift.astype(np.float32), face)


def rgb_to_lab(image: FloatImage) -> FloatImage:
    """sRGB float [0, 1] -> CIELAB (D65): L in [0, 100], a and b roughly [-128, 127]."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab), np.float32)


def lab_to_rgb(lab: FloatImage) -> FloatImage:
    """CIELAB (D65) -> sRGB float, not clipped."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB), np.float32)


def rct(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer: match the mean and standard deviation of each LAB channel inside the mask."""
    _check(face, target, mask)
    sel = selection(mask)
    if sel.sum() < MIN_PIXELS:
        return face
    f_lab, t_lab = rgb_to_lab(to_float(face)), rgb_to_lab(to_float(target))
    fs, ts = f_lab[sel].astype(np.float64), t_lab[sel].astype(np.float64)
    mu_f, mu_t = fs.mean(axis=0), ts.mean(axis=0)
    sd_f, sd_t = fs.std(axis=0), ts.std(axis=0)
    gain = np.where(sd_f > _EPS, sd_t / np.maximum(sd_f, _EPS), 1.0)
    out_lab = (f_lab - mu_f.astype(np.float32)) * gain.astype(np.float32) + mu_t.astype(np.float32)
    return _like(lab_to_rgb(out_lab), face)


def match_cdf(values: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotone map that gives ``values`` the distribution of ``reference`` (both 1-D).

    Returns ``(xs, ys)``: each distinct value ``xs[i]`` of ``values`` maps to ``ys[i]``, the reference value
    at the same quantile (linear between the reference's distinct values). Apply with ``np.interp``.
    """
    xs, counts = np.unique(values, return_counts=True)
    rs, rcounts = np.unique(reference, return_counts=True)
    q = np.cumsum(counts) / values.size
    rq = np.cumsum(rcounts) / reference.size
    return xs, np.interp(q, rq, rs)


def hist_match(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Histogram matching per RGB channel: the face's masked pixels take the target's masked distribution."""
    _check(face, target, mask)
    sel = selection(mask)
    if sel.sum() < MIN_PIXELS:
        return face
    f, t = to_float(face), to_float(target)
    out = np.empty_like(f)
    for c in range(3):
        xs, ys = match_cdf(f[..., c][sel], t[..., c][sel])
        out[..., c] = np.interp(f[..., c], xs, ys)
    return _like(out, face)


def _sqrtm_psd(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root and inverse square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(m)
    w = np.maximum(w, 1e-12)
    return (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T


def mkl_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monge-Kantorovich linear map between two (N, 3) colour samples.

    Returns ``(T, b)`` with ``x @ T + b`` mapping the source sample onto one with the target's mean and
    covariance: ``T = S^-1/2 (S^1/2 C S^1/2)^1/2 S^-1/2`` for source covariance ``S``, target ``C``.
    """
    src, tgt = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = src.mean(axis=0), tgt.mean(axis=0)
    cov_s = np.cov(src, rowvar=False) + 1e-9 * np.eye(3)  # keeps a flat-coloured face invertible
    cov_t = np.cov(tgt, rowvar=False)
    s_half, s_inv_half = _sqrtm_psd(cov_s)
    mid, _ = _sqrtm_psd(s_half @ cov_t @ s_half)
    t = s_inv_half @ mid @ s_inv_half  # symmetric
    return t, mu_t - mu_s @ t


def mkl(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Monge-Kantorovich linear colour transfer in RGB: the masked face takes the target's mean and
    covariance."""
    _check(face, target, mask)
    sel = selection(mask)
    if sel.sum() < MIN_PIXELS:
        return face
    f, t = to_float(face), to_float(target)
    mat, off = mkl_transform(f[sel], t[sel])
    out = f.reshape(-1, 3) @ mat.astype(np.float32) + off.astype(np.float32)
    return _like(out.reshape(f.shape), face)


def _forward_diff(img: np.ndarray, axis: int) -> np.ndarray:
    """``img[i+1] - img[i]`` along ``axis``; the last entry uses the mirrored neighbour ``img[n-2]``."""
    d = np.empty_like(img)
    n = img.shape[axis]
    lo = [slice(None)] * img.ndim
    hi = [slice(None)] * img.ndim
    lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
    d[tuple(lo)] = img[tuple(hi)] - img[tuple(lo)]
    last = [slice(None)] * img.ndim
    prev = [slice(None)] * img.ndim
    last[axis], prev[axis] = slice(n - 1, n), slice(n - 2, n - 1)
    d[tuple(last)] = img[tuple(prev)] - img[tuple(last)]
    return d


def poisson_dirichlet(rhs: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Solve the 5-point discrete Poisson equation ``lap(u) = rhs`` on a rectangle.

    ``boundary`` (H, W, C) gives ``u`` on the outer ring (its interior is ignored); ``rhs`` (H, W, C) is
    used on the interior. Returns ``u`` (H, W, C) float64. Solved exactly with the type-I discrete sine
    transform, which diagonalises the Laplacian with zero Dirichlet boundary.
    """
    h, w = rhs.shape[:2]
    u = boundary.astype(np.float64, copy=True)
    if h < 3 or w < 3:
        return u
    ring = u.copy()
    ring[1:-1, 1:-1] = 0.0
    # the known ring's contribution to the interior equations moves to the right-hand side
    known = ring[:-2, 1:-1] + ring[2:, 1:-1] + ring[1:-1, :-2] + ring[1:-1, 2:]
    f = rhs[1:-1, 1:-1].astype(np.float64) - known
    m, n = h - 2, w - 2
    ky = 2.0 * np.cos(np.pi * np.arange(1, m + 1) / (m + 1)) - 2.0
    kx = 2.0 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) - 2.0
    eig = ky[:, None] + kx[None, :]  # (m, n), all < 0
    spec = scipy.fft.dstn(f, type=1, axes=(0, 1))
    spec /= eig[..., None]
    u[1:-1, 1:-1] = scipy.fft.idstn(spec, type=1, axes=(0, 1))
    return u


def seamless(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson (gradient-domain) cloning of the face into the target, as OpenCV's ``seamlessClone`` with
    ``NORMAL_CLONE`` at the face's own position computes it, in floating point.

    Over the bounding box of the mask (the crop's outer pixel row never counts), the result's Laplacian
    follows the face's gradients inside the mask shrunk by 3 px and the target's gradients elsewhere; the
    box's border keeps the target's values. Colours therefore come from the surroundings and details from the
    face.
    """
    _check(face, target, mask)
    sel = selection(mask)
    sel[0, :] = sel[-1, :] = False
    sel[:, 0] = sel[:, -1] = False
    if sel.sum() < MIN_PIXELS:
        return face
    ys, xs = np.nonzero(sel)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    f = to_float(face)[y0:y1, x0:x1].astype(np.float64)
    t = to_float(target)[y0:y1, x0:x1].astype(np.float64)
    m_roi = sel[y0:y1, x0:x1]
    f = f * m_roi[..., None]
    # 3 passes of a 3x3 erosion, computed on the whole mask so the box's edges erode as well
    inner = cv2.erode(sel.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=3)[y0:y1, x0:x1]
    k = inner.astype(np.float64)[..., None]
    gx = _forward_diff(f, 1) * k + _forward_diff(t, 1) * (1.0 - k)
    gy = _forward_diff(f, 0) * k + _forward_diff(t, 0) * (1.0 - k)
    div = np.zeros_like(gx)
    div[:, 1:] += gx[:, 1:] - gx[:, :-1]
    div[1:, :] += gy[1:, :] - gy[:-1, :]
    solved = poisson_dirichlet(div, t)
    out = to_float(face).copy()
    # the solved box replaces the face there; the rest of the crop keeps the target, as OpenCV does
    out[...] = to_float(target)
    out[y0:y1, x0:x1] = solved.astype(np.float32)
    return _like(out, face)


COLOR_MATCHERS: dict[str, ColorMatcher] = {
    "none": none,
    "mean": mean_color,
    "rct": rct,
    "hist": hist_match,
    "mkl": mkl,
    "seamless": seamless,
}
check_registry("colour mode", COLOR_MATCHERS, COLOR_MODES)


def color_matcher(mode: str) -> ColorMatcher:
    """The matcher for a mode name (one of :data:`COLOR_MATCHERS`)."""
    try:
        return COLOR_MATCHERS[mode]
    except KeyError:
        raise ValueError(f"unknown colour mode {mode!r}; use one of {', '.join(COLOR_MATCHERS)}") from None
