"""What an extraction did, per source and in all (``changeling extract`` prints it, the benchmark reads its
stage times)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SourceReport:
    source: str
    alignments: str
    frames_read: int = 0  # decoded in this run
    frames_processed: int = 0  # went through the networks in this run
    faces_written: int = 0
    frames_without_face: int = 0
    corrupt_frames: int = 0  # undecodable frames (or unreadable images in a folder), skipped
    resumed_frames: int = 0  # already done by an earlier run, not processed again
    skipped_frames: int = 0  # not selected by every-Nth
    blurry_faces: int = 0  # found but below the blur threshold (kept in the alignments, no file)
    small_faces: int = 0  # smaller than min_face (dropped)
    other_people: int = 0  # rejected by the identity filter (--reference / --exclude)
    already_complete: bool = False
    decoder: str = ""  # "thread", or "process" where frames were decoded in a child process ("": not decoded)
    # seconds of work per stage: the decode thread decoding, or waiting for the decoder process ("decode");
    # the main thread waiting for decoded frames ("decode_wait"), running the networks ("networks"), waiting
    # for the face threads ("faces_wait") and writing the store ("store"); "faces" is the face threads'
    # crop/mask/PNG work summed over the threads (it overlaps the others), and "faces_cpu" those threads'
    # CPU time (with worker processes, the masks and PNG are not in it)
    stages: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


@dataclass
class ExtractReport:
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0
    preview: str | None = None

    def _sum(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sources)

    @property
    def frames_read(self) -> int:
        return self._sum("frames_read")

    @property
    def frames_processed(self) -> int:
        return self._sum("frames_processed")

    @property
    def faces_written(self) -> int:
        return self._sum("faces_written")

    @property
    def frames_without_face(self) -> int:
        return self._sum("frames_without_face")

    @property
    def corrupt_frames(self) -> int:
        return self._sum("corrupt_frames")

    @property
    def resumed_frames(self) -> int:
        return self._sum("resumed_frames")

    @property
    def blurry_faces(self) -> int:
        return self._sum("blurry_faces")

    @property
    def stages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for src in self.sources:
            for k, v in src.stages.items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def frames_per_second(self) -> float:
        return self.frames_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sources": [asdict(s) for s in self.sources], "seconds": self.seconds, "preview": self.preview}

