"""Sample clips from the bundled public-domain portraits: a seeded motion (head pose, expression, camera,
lighting) drives a piecewise-affine warp of a portrait along its landmark mesh, with a speech-like audio track.
The same motion drives any portrait, so the ideal swap of A's frame t is B's portrait under motion t.

    from changeling.synth import make_motion, make_clip
    info = make_clip("astronaut", make_motion(seed=1, duration=10), 256, 25, "a.mp4")
    info.landmarks  # (250, 468, 3) ground truth
"""

from changeling.synth.clip import ClipInfo, SynthFrame, make_clip, render_frame, render_frames
from changeling.synth.motion import PARAMS, Motion, MotionSettings, make_motion
from changeling.synth.portraits import PORTRAITS, Portrait, load_portrait
from changeling.synth.rig import Rig, make_rig

__all__ = [
    "PARAMS",
    "PORTRAITS",
    "ClipInfo",
    "Motion",
    "MotionSettings",
    "Portrait",
    "Rig",
    "SynthFrame",
    "load_portrait",
    "make_clip",
    "make_motion",
    "make_rig",
    "render_frame",
    "render_frames",
]
