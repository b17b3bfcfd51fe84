"""Video and image I/O on PyAV: frames in as RGB uint8 with timestamps, H.264 out with the source audio."""

from changeling.video.probe import VideoInfo, probe
from changeling.video.reader import FrameSource, TimedFrame, open_frames
from changeling.video.writer import VideoWriter

__all__ = ["FrameSource", "TimedFrame", "VideoInfo", "VideoWriter", "open_frames", "probe"]
