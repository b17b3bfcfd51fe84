"""Settings for ``changeling live``: what to ask of the camera. The swap itself (colour, mask, smoothing, the
model's device) takes the ``[convert]`` section, so live and convert render alike."""

from __future__ import annotations

from dataclasses import dataclass

from changeling.config.core import settings_field


@dataclass(frozen=True)
class LiveSettings:
    camera_width: int = settings_field(640, min=0, max=7680, label="camera width (px)",
                                       help="frame width asked of the camera (0: the camera's own)")
    camera_height: int = settings_field(480, min=0, max=4320, label="camera height (px)",
                                        help="frame height asked of the camera (0: the camera's own)")
    camera_fps: int = settings_field(30, min=0, max=240, label="camera frame rate",
                                     help="frames per second asked of the camera (0: the camera's own)")
