"""The segmenter's file: ``PROJECT/occlusion/segmenter.safetensors``, weights and optimizer moments as tensors,
everything else as JSON in the safetensors header (never pickle). One file, written to a temporary name, synced
and renamed, so a crash leaves the previous file or the new one, never half of either.

The header says what the segmenter was trained on: the face type and size of the project's faces and the
sources (content hashes) they were extracted from. A segmenter is refused, with one line naming its file,
when it does not fit the project that uses it (see :func:`check_fits`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from changeling.errors import UserError
from changeling.occlusion.net import OcclusionNet, SegmenterConfig

KIND = "changeling-occlusion"
FORMAT = 1
FOLDER = "occlusion"
FILE = "segmenter.safetensors"
MAX_HEADER_BYTES = 4_000_000
MAX_SOURCES = 256
TRAIN_HINT = "train one with `changeling masks train --project {root}`"


@dataclass
class SegmenterInfo:
    """What a segmenter file says about itself."""

    config: SegmenterConfig
    face_type: str
    face_size: int
    sources: list[str]  # content hashes (or names) of the videos its faces came from
    step: int
    target_step: int  # the step the current run trains to (a resumed run continues to it)
    corrections: int = 0  # hand-corrected faces it last trained on
    seconds: float = 0.0  # training time so far
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"kind": KIND, "format": FORMAT, "config": self.config.to_dict(),
                           "face_type": self.face_type, "face_size": self.face_size, "sources": self.sources,
                           "step": self.step, "target_step": self.target_step, "corrections": self.corrections,
                           "seconds": self.seconds, "settings": self.settings},
                          separators=(",", ":"), allow_nan=False)


def segmenter_path(project_root: Path) -> Path:
    return Path(project_root) / FOLDER / FILE


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key!r} must be an integer from {lo} to {hi}")
    return v


def info_from_json(text: str) -> SegmenterInfo:
    """Validate the untrusted header JSON; ``ValueError`` says what is wrong."""
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError("header is too large")
    d = json.loads(text, parse_constant=_reject_constant)
    if not isinstance(d, dict) or d.get("kind") != KIND:
        raise ValueError("not a changeling occlusion segmenter")
    if d.get("format") != FORMAT:
        raise ValueError(f"format {d.get('format')!r} is not {FORMAT}")
    if not isinstance(d.get("face_type"), str):
        raise ValueError("'face_type' must be a string")
    sources = d.get("sources")
    if not isinstance(sources, list) or len(sources) > MAX_SOURCES or not all(isinstance(s, str) for s in sources):
        raise ValueError("'sources' must be a list of strings")
    seconds = d.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e9:
        raise ValueError("'seconds' must be a non-negative number")
    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError("'settings' must be an object")
    return SegmenterInfo(config=SegmenterConfig.from_dict(d.get("config")), face_type=d["face_type"],
                         face_size=_int(d, "face_size", 8, 4096), sources=list(sources),
                         step=_int(d, "step", 0, 10**9), target_step=_int(d, "target_step", 0, 10**9),
                         corrections=_int(d, "corrections", 0, 10**9), seconds=float(seconds), settings=settings)


@dataclass
class LoadedSegmenter:
    info: SegmenterInfo
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    path: Path


def read_segmenter(path: Path) -> LoadedSegmenter:
    """Read and check a segmenter file (tensors on the CPU). :class:`UserError` names the file when it is
    missing, damaged, not a segmenter, or its tensors do not fit the network its header describes."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no occlusion segmenter here", path)
    try:
        with safe_open(str(path), framework="pt") as fh:  # type: ignore[no-untyped-call]
            header = (fh.metadata() or {}).get("changeling")
            if header is None:
                raise UserError("not a changeling occlusion segmenter (no header)", path)
            info = info_from_json(header)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"not a readable safetensors file ({exc})", path) from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"bad segmenter header: {exc}", path) from None
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    expected = OcclusionNet(info.config).state_dict()
    if set(weights) != set(expected) or any(weights[k].shape != v.shape for k, v in expected.items()):
        raise UserError("its weights do not fit the network its header describes (damaged or edited)", path)
    if any(not torch.isfinite(v).all() for v in weights.values()):
        raise UserError("its weights are not finite (damaged)", path)
    return LoadedSegmenter(info, weights, optimizer, path)


def write_segmenter(path: Path, info: SegmenterInfo, weights: Mapping[str, torch.Tensor],
                    optimizer: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write the segmenter atomically (temporary name in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in weights.items()}
    tensors.update({f"optim.{k}": v.detach().to("cpu").contiguous() for k, v in (optimizer or {}).items()})
    data = st_save(tensors, metadata={"changeling": info.to_json()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_fits(info: SegmenterInfo, path: Path, *, face_type: str | None, face_size: int | None,
               sources: Sequence[str], resolution: int | None = None) -> None:
    """Refuse a segmenter that does not belong here: trained on faces of another face type or size than the
    project's, on none of the project's sources, or (``resolution`` given) at another input resolution."""
    if resolution is not None and info.config.resolution != resolution:
        raise UserError(f"the segmenter works at {info.config.resolution} px but {resolution} px was asked for; "
                        "train a new one with `changeling masks train --fresh`", path)
    if face_type is not None and (face_type, face_size) != (info.face_type, info.face_size):
        raise UserError(f"the segmenter was trained on '{info.face_type}' faces at {info.face_size} px but this "
                        f"project's faces are '{face_type}' at {face_size} px; it belongs to another project or "
                        "the faces were extracted again: train it again with `changeling masks train --fresh`", path)
    if sources and info.sources and not set(sources) & set(info.sources):
        raise UserError("the segmenter was trained on faces from other videos than this project's; it belongs "
                        "to another project: train this project's with `changeling masks train --fresh`", path)
