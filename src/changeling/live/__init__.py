"""Live mode (``changeling live``): a camera, or a file played in real time, swapped frame by frame with
convert's pipeline in a low-latency form, out to a file, a virtual camera or the web UI; every frame watermarked.

:mod:`.inputs` (camera, paced file, the one-frame slot that drops), :mod:`.pipeline` (the stages),
:mod:`.sinks` (file, virtual camera, callback), :mod:`.stats` (the latency instrument), :mod:`.project`
(assembled from a project)."""

from changeling.live.project import LiveOptions, live, live_converter
from changeling.live.stats import LiveReport

__all__ = ["LiveOptions", "LiveReport", "live", "live_converter"]
