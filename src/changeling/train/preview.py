"""Preview grids: fixed sample faces of A and B through the model, one row per sample, columns
A, A→A, A→B, B, B→B, B→A under a header strip with the column names."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from changeling.provenance.marked import write_synthetic_image

COLUMNS = ("A", "A>A", "A>B", "B", "B>B", "B>A")  # input, reconstruction, swap; per side
HEADER = 16  # pixels of the label strip above the tiles
PREVIEW = "preview.png"
TIMELAPSE = "timelapse"


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``n`` faces (fixed for the whole training)."""
    k = min(k, n)
    return [int(round(i * (n - 1) / max(1, k - 1))) for i in range(k)] if k > 1 else [0]


def _to_u8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) float [0, 1] -> (N, R, R, 3) uint8."""
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def preview_tiles(model: torch.nn.Module, faces_a: torch.Tensor, faces_b: torch.Tensor,
                  shown_a: torch.Tensor | None = None, shown_b: torch.Tensor | None = None) -> np.ndarray:
    """Tiles (K, 6, S, S, 3) uint8 for K sample faces per side, (K, 3, R, R) uint8 each, in COLUMNS order.

    S is the side of the model's output (larger than R behind a detail stage); the A and B columns show
    ``shown_a`` / ``shown_b`` (the same faces at S, as stored) when given, else the inputs enlarged."""
    for name, t in (("faces_a", faces_a), ("faces_b", faces_b)):
        if t.ndim != 4 or t.shape[1] != 3 or t.dtype != torch.uint8:
            raise ValueError(f"{name}: expected (K, 3, R, R) uint8, got {tuple(t.shape)} {t.dtype}")
    device = next(model.parameters()).device
    a = faces_a.to(device).float() / 255
    b = faces_b.to(device).float() / 255
    swap = model.swap  # a pair model, or one behind its detail stage
    outs = [swap(a, "A").face, swap(a, "B").face, swap(b, "B").face, swap(b, "A").face]  # type: ignore[operator]
    size = outs[0].shape[-1]

    def shown(faces: torch.Tensor, stored: torch.Tensor | None) -> torch.Tensor:
        if stored is not None and stored.shape[-1] == size:
            return stored.to(device).float() / 255
        if faces.shape[-1] == size:
            return faces
        return F.interpolate(faces, size=(size, size), mode="bicubic", align_corners=False)

    cols = [shown(a, shown_a), outs[0], outs[1], shown(b, shown_b), outs[2], outs[3]]
    return np.stack([_to_u8(c) for c in cols], 1)


def grid_image(tiles: np.ndarray) -> np.ndarray:
    """Tiles (K, C, R, R, 3) -> (HEADER + K R, C R, 3) uint8 with labels over the columns."""
    k, c, r = tiles.shape[:3]
    body = tiles.transpose(0, 2, 1, 3, 4).reshape(k * r, c * r, 3)
    head = np.full((HEADER, c * r, 3), 32, np.uint8)
    for i, name in enumerate(COLUMNS[:c]):
        cv2.putText(head, name, (i * r + 3, HEADER - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1,
                    cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([head, body], 0))


def tile_at(grid: np.ndarray, row: int, col: int, r: int) -> np.ndarray:
    """The (R, R, 3) tile of a grid written by :func:`grid_image`."""
    y = HEADER + row * r
    return grid[y:y + r, col * r:(col + 1) * r]


def write_preview(model: torch.nn.Module, faces_a: torch.Tensor, faces_b: torch.Tensor, previews_dir: Path,
                  step: int, shown_a: torch.Tensor | None = None, shown_b: torch.Tensor | None = None) -> Path:
    """Write ``preview.png`` and ``timelapse/step-NNNNNNNN.png`` (the same grid); returns the former.

    The grid shows swapped faces, so each file is marked as convert marks its output; the watermark covers the
    whole grid, the picture a user downloads (one tile can be too small to hold it)."""
    previews_dir = Path(previews_dir)
    (previews_dir / TIMELAPSE).mkdir(parents=True, exist_ok=True)
    grid = grid_image(preview_tiles(model, faces_a, faces_b, shown_a, shown_b))
    write_synthetic_image(previews_dir / TIMELAPSE / f"step-{step:08d}.png", grid)
    write_synthetic_image(previews_dir / PREVIEW, grid)
    return previews_dir / PREVIEW
