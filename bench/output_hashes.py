"""Hashes of what the pipeline writes, to show a refactor changed no output bit.

Runs the command line of the tree on ``PYTHONPATH`` over a fixed little project: two short synthetic clips
(public-domain portraits, fixed motions), extraction of both, a few training steps of the tiny preset at a fixed
seed in float32 on the CPU, then convert of the held-out clip (faces tracked on the fly) and of A's clip (faces
from its alignments). Prints one JSON object of SHA-256 digests:

- ``faces``: every extracted face PNG, file bytes and decoded pixels;
- ``weights``: every tensor of the checkpoint (pair model, detail stage, optimizer moments);
- ``previews``: the pixels of the preview grid and the full-frame preview;
- ``convert_*``: the decoded frames of each converted video.

Usage (one tree, then the other; same work folder, since face files record their source path and hash)::

    PYTHONPATH=OLD/src python bench/output_hashes.py /tmp/hashes > old.json
    PYTHONPATH=NEW/src python bench/output_hashes.py /tmp/hashes > new.json
    diff old.json new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

STEPS = 20  # training steps: enough for the optimizer moments, the EMA and the detail stage to move
CLIP_SECONDS = 1.2
CLIP_SIZE = 320
FPS = 25.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cli(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "changeling", *args, "--quiet"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "CHANGELING_DECODE_PROCESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"changeling {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _pixels(path: Path) -> str:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return _sha(np.ascontiguousarray(np.asarray(img.convert("RGB"))).tobytes())


def _video_frames(path: Path) -> dict[str, object]:
    import av
    import numpy as np

    digest = hashlib.sha256()
    n = 0
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):
            digest.update(np.ascontiguousarray(frame.to_ndarray(format="rgb24")).tobytes())
            n += 1
    return {"frames": n, "sha256": digest.hexdigest()}


def _tensors(folder: Path) -> dict[str, str]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        for name, value in sorted(load_file(str(f)).items()):
            if name.startswith("rng."):
                continue
            out[f"{f.stem}/{name}"] = _sha(value.tobytes())
    return out


def make_clips(root: Path) -> dict[str, Path]:
    """The clips, made on the first run and kept: the synthetic renderer does not repeat every pixel from run
    to run, so both trees must read the same files."""
    from changeling.synth import make_clip, make_motion

    plan = {"A": ("astronaut", 1), "B": ("grace_hopper", 2), "test": ("astronaut", 3)}
    out = {}
    for key, (portrait, seed) in plan.items():
        path = root / "inputs" / f"{key}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            make_clip(portrait, make_motion(seed=seed, duration=CLIP_SECONDS), CLIP_SIZE, FPS, path, audio=False)
        out[key] = path
    return out


def run(root: Path) -> dict[str, object]:
    clips = make_clips(root)
    project = root / "project"
    shutil.rmtree(project, ignore_errors=True)
    for old in root.glob("*_swap.mp4"):
        old.unlink()
    _cli("init", str(project), cwd=root)
    for side in ("A", "B"):
        _cli("extract", "-p", str(project), "--side", side, "--device", "cpu", "--size", "128", str(clips[side]),
             cwd=root)
    _cli("train", "-p", str(project), "--device", "cpu", "--preset", "tiny", "--precision", "fp32", "--compile",
         "off", "--seed", "3", "--max-steps", str(STEPS), "--batch-size", "4", "--save-every", str(STEPS),
         "--preview-every", str(STEPS), "--ema", "0.9", "--detail", "2x", "--detail-every", "2", cwd=root)
    outputs = {}
    for key, clip in (("test", clips["test"]), ("A", clips["A"])):
        out = root / f"{key}_swap.mp4"
        _cli("convert", "-p", str(project), "--device", "cpu", "--workers", "2", str(clip), "-o", str(out),
             cwd=root)
        outputs[f"convert_{key}"] = _video_frames(out)
    faces = {}
    for side in ("A", "B"):
        for f in sorted((project / "faces" / side).glob("*.png")):
            faces[f"{side}/{f.name}"] = {"bytes": _sha(f.read_bytes()), "pixels": _pixels(f)}
    ckpts = sorted((project / "model" / "checkpoints").glob("step-*"))
    previews = {p.name: _pixels(p) for p in sorted((project / "previews").glob("*.png"))}
    return {"faces": faces, "checkpoint": ckpts[-1].name if ckpts else None,
            "weights": _tensors(ckpts[-1]) if ckpts else {}, "previews": previews, **outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="scratch folder (its clips are kept, the rest is made again); the same one for both trees")
    args = parser.parse_args()
    print(json.dumps(run(args.workdir.resolve()), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
