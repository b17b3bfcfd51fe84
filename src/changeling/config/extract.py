"""Settings for ``changeling extract``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from changeling.config.core import settings_field
from changeling.types import DetectorName


@dataclass(frozen=True)
class ExtractSettings:
    detector: DetectorName = settings_field("full", help="BlazeFace short range (close-ups) or full range")
    size: int = settings_field(256, min=32, max=1024, help="side of the aligned face crop in pixels")
    face_type: Literal["half", "mid", "full", "whole", "head"] = settings_field(
        "whole", help="how much of the head the crop covers")
    every_nth: int = settings_field(1, min=1, max=10_000, help="process every Nth frame")
    min_face: int = settings_field(32, min=1, max=10_000, help="smallest face to keep, in pixels (box side)")
    max_faces: int = settings_field(1, min=1, max=64, help="most faces kept per frame, largest first")
    min_score: float = settings_field(0.5, min=0.0, max=1.0, help="detector confidence threshold")
    blur_threshold: float = settings_field(
        0.0, min=0.0, help="skip faces whose variance of Laplacian is below this (0 keeps all)")
    batch_size: int = settings_field(16, min=1, max=4096, help="frames per batch through the networks")
    device: Literal["auto", "cpu", "cuda"] = settings_field("auto", help="where the networks run")
    threads: int = settings_field(
        0, min=0, max=1024, help="CPU threads for the networks (0: half the cores, leaving the rest to decoding "
        "and writing)")
    identity_threshold: float = settings_field(
        0.6, min=0.05, max=1.5, help="--reference/--exclude: largest embedding distance counted as the same person")
    iris: bool = settings_field(
        False, help="refine the eyes with the iris model (478 points); about 2.5x slower on a CPU")
