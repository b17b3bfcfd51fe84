"""The benchmark harness: rows land in RESULTS.md's table, the DDP case trains through DDP, extraction
reports where its time went."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from changeling.bench.runner import record, run_cases
from changeling.errors import UserError


def _row(case: str, value: float) -> dict[str, object]:
    return {"case": case, "date": "2026-11-26", "machine": "test cpu", "torch": "x", "value": value,
            "unit": "frames/s", "target": ">= 1", "batch": 4, "detail_keys": ["batch"]}


def test_record_appends_rows_to_the_table_and_keeps_notes_below(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    record([_row("a", 1.0)], md, "cmd one")
    md.write_text(md.read_text() + "\n## Notes\n\n| summary | table |\n|---|---|\n| x | y |\n\n- a note\n")
    record([_row("b", 2.5), _row("c", 3.0)], md, "cmd two")
    lines = md.read_text().splitlines()
    top = lines.index(next(line for line in lines if line.startswith("| date |")))
    assert all(line.startswith("|") for line in lines[top:top + 5])  # header, rule, a, b, c: one table
    assert "| b |" in lines[top + 3] and "batch=4" in lines[top + 3] and "`cmd two`" in lines[top + 3]
    assert lines[top + 5] == ""
    assert lines[-5:] == ["| summary | table |", "|---|---|", "| x | y |", "", "- a note"]
    other = tmp_path / "NOTES.md"
    other.write_text("# Notes only\n")
    record([_row("d", 1.0)], other, "cmd")
    assert other.read_text().splitlines()[-3].startswith("| date |")


def test_unknown_case_is_a_user_error() -> None:
    with pytest.raises(UserError, match="train-nope"):
        run_cases(["train-nope"], "cpu", 1)


def test_bench_train_through_ddp_in_a_one_process_group() -> None:
    import torch.distributed as dist

    from changeling.bench.train_bench import bench_train

    out = bench_train("tiny", "cpu", steps=2, warmup=1, resolution=32, e_dims=4, ae_dims=16, d_dims=8,
                      batch_size=4, precision="fp32", reference=False, ddp=True)
    assert out["ddp"] is True and out["examples_per_s"] > 0 and out["ratio_to_reference"] is None
    assert not dist.is_initialized()  # the group is torn down again


def test_extract_report_says_where_the_time_went(tmp_path: Path) -> None:
    from changeling.bench.cases import moving_portrait_frames
    from changeling.config import ExtractSettings
    from changeling.extract import extract
    from changeling.project import init_project
    from changeling.video.testclip import write_clip

    clip = write_clip(tmp_path / "c.mp4", width=320, height=180, fps=25,
                      images=moving_portrait_frames(6, 320, 180))
    report = extract(init_project(tmp_path / "p"), "A", [clip], ExtractSettings(batch_size=4, size=64),
                     progress=False)
    assert report.frames_processed == 6 and report.faces_written >= 1
    stages = report.stages
    assert set(stages) == {"decode", "decode_wait", "networks", "faces", "faces_cpu", "faces_wait", "store"}
    assert all(v >= 0 for v in stages.values()) and stages["networks"] > 0 and stages["faces"] > 0
    assert 0 < stages["decode"] <= report.seconds  # the decode thread's own time
    assert sum(stages[k] for k in ("decode_wait", "networks", "faces_wait", "store")) <= report.seconds


def test_convert_bench_splits_the_render_time(tmp_path: Path) -> None:
    from changeling.bench.convert_bench import bench_convert

    out = bench_convert("720p", "cpu", frames=6, workers=2, work_dir=tmp_path, cpu_marker_too=True)
    st = out["stages_ms"]
    assert out["frames"] == 6 and out["faces"] == 6
    parts = ("render_mask", "render_color", "render_paste", "render_mark")
    assert all(st[p] > 0 for p in parts) and st["render_cpu"] > 0
    assert sum(st[p] for p in parts) <= st["render"] * 1.01 + 0.05  # the parts are inside the whole
    assert "cpu_marker_fps" not in out  # the CPU's marker is the NumPy one: nothing to compare


def test_convert_bench_compares_another_marker_with_the_numpy_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from changeling.bench.convert_bench import bench_convert
    from changeling.provenance import batch_marker, watermark

    calls: list[int] = []

    def other_marker(frame: np.ndarray) -> np.ndarray:  # stands in for the GPU's batched marker
        calls.append(1)
        return watermark.embed_watermark(frame)

    monkeypatch.setattr(batch_marker, "watermark_marker", lambda device: other_marker)
    for first in (False, True):
        calls.clear()
        out = bench_convert("720p", "cpu", frames=6, workers=2, work_dir=tmp_path, cpu_marker_too=True,
                            cpu_marker_first=first)
        assert len(calls) == 6  # one run used the stand-in, the other did not
        assert out["frames"] == 6 and out["stages_ms"]["render_mark"] > 0
        assert out["cpu_marker_fps"] > 0 and out["cpu_marker_stages_ms"]["render_mark"] > 0
        assert {"cpu_marker_fps", "cpu_marker_stages_ms"} <= set(out["detail_keys"])


def test_decode_bench_measures_the_software_path_and_reports_a_failed_hardware_one() -> None:
    from changeling.bench.cases import decode_720p

    out = decode_720p("cpu", 1, quick=True, frames=12)
    assert out["frames"] == 12 and out["value"] > 0 and "hw_frames_per_s" not in out
    assert out["swscale_frames_per_s"] > 0 and "swscale_frames_per_s" in out["detail_keys"]
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:  # asked for NVDEC without a GPU: the failure is reported, not raised
        out = decode_720p("cuda", 1, quick=True, frames=12)
        assert out["value"] > 0 and out["hw_error"] and "hw_error" in out["detail_keys"]
