"""Settings for ``changeling extract``."""

from __future__ import annotations

from dataclasses import dataclass

from changeling.config.core import settings_field
from changeling.vocab import DetectorName, DeviceChoice, FaceType


@dataclass(frozen=True)
class ExtractSettings:
    detector: DetectorName = settings_field(
        "full", label="detector", help="BlazeFace short range (close-ups) or full range")
    size: int = settings_field(256, min=32, max=1024, label="face size (px)",
                               help="side of the aligned face crop in pixels")
    face_type: FaceType = settings_field("whole", label="face type", help="how much of the head the crop covers")
    every_nth: int = settings_field(1, min=1, max=10_000, label="every Nth frame", help="process every Nth frame")
    min_face: int = settings_field(32, min=1, max=10_000, label="smallest face (px)",
                                   help="smallest face to keep, in pixels (box side)")
    max_faces: int = settings_field(1, min=1, max=64, label="faces per frame",
                                    help="most faces kept per frame, largest first")
    min_score: float = settings_field(0.5, min=0.0, max=1.0, step=0.05, label="detector confidence",
                                      help="detector confidence threshold")
    blur_threshold: float = settings_field(
        0.0, min=0.0, label="blur threshold", help="skip faces whose variance of Laplacian is below this (0 keeps all)")
    batch_size: int = settings_field(16, min=1, max=4096, label="batch size",
                                     help="frames per batch through the networks")
    device: DeviceChoice = settings_field("auto", label="device", help="where the networks run")
    threads: int = settings_field(
        0, min=0, max=1024, label="CPU threads", help="CPU threads for the networks (0: half the cores, leaving the "
        "rest to decoding and writing)")
    identity_threshold: float = settings_field(
        0.6, min=0.05, max=1.5, label="identity threshold",
        help="--reference/--exclude: largest embedding distance counted as the same person")
    iris: bool = settings_field(
        False, label="iris refinement", help="refine the eyes with the iris model (478 points); about 2.5x slower "
        "on a CPU")
