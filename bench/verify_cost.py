"""What ``changeling verify`` costs on a 720p 10 s clip: as convert writes it (marked), unmarked, and marked but
edited (cropped 5% a side, mirrored, scaled to 480p and re-encoded at CRF 23, which needs the search).

    PYTHONPATH=src python bench/verify_cost.py [--work DIR] [--repeat 3]

The clips are made once in DIR (default: a folder under the system's temporary one) and reused. Prints one
line per clip: the verdict, the geometry read, and the median wall time of ``verify_file`` (in-process, the
16 sampled frames of the default) over the repeats. Runs on the code it imports, so pointing PYTHONPATH at an
older tree measures that tree (whose verify has no search) on the same clips.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from changeling.provenance import embed_watermark, synthetic_metadata, verify_file
from changeling.synth import make_clip, make_motion
from changeling.video.writer import VideoWriter


def make_clips(work: Path) -> dict[str, Path]:
    plain, marked, edited = work / "plain720.mp4", work / "marked720.mp4", work / "edited480.mp4"
    if not plain.exists():
        make_clip("astronaut", make_motion(seed=1, duration=10.0), (1280, 720), 25, plain, audio=True)
    with av.open(str(plain)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if not marked.exists():
        with VideoWriter(marked, width=1280, height=720, fps=25, metadata=synthetic_metadata()) as w:
            for f in frames:
                w.write(embed_watermark(f))
    if not edited.exists():
        with av.open(str(marked)) as c, VideoWriter(edited, width=854, height=480, fps=25, crf=23) as w:
            for f in c.decode(video=0):
                img = f.to_ndarray(format="rgb24")[36:-36, 64:-64][:, ::-1]  # 5% off each side, mirrored
                w.write(np.ascontiguousarray(cv2.resize(img, (854, 480), interpolation=cv2.INTER_AREA)))
    return {"marked (as convert writes it)": marked, "unmarked": plain, "marked, edited to 480p": edited}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "changeling-verify-cost")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for name, path in make_clips(args.work).items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = verify_file(path)
            times.append(time.perf_counter() - t0)
        geometry = getattr(report, "watermark_geometry", "-")
        print(f"{name:30s} {report.verdict:10s} watermark {str(report.watermark):5s} ({geometry}); "
              f"pooled {report.pooled_agreement:.2f}; {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
