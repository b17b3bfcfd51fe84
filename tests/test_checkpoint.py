"""Checkpoints: round trip, retention, atomicity, and refusal of damaged, tampered and pickle files."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from changeling.errors import UserError
from changeling.models import checkpoint as mck
from changeling.models import load as load_mod
from changeling.models.checkpoint_state import sha256_hex, state_digest
from changeling.models.load import load_for_inference
from changeling.models.registry import Dims, create_model, preset_config
from changeling.train import checkpoint as ck

CFG = preset_config("tiny", Dims(resolution=32, e_dims=4, ae_dims=8, d_dims=4))


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("tiny", CFG)


def _save(root: Path, step: int, model: torch.nn.Module | None = None, **kw: object) -> Path:
    model = model or _model()
    req = ck.SaveRequest(step=step, weights=model.state_dict(), optimizer={"rng.cpu": torch.get_rng_state()},
                         trainer={"lr_scale": 0.5}, settings={"lr": 1e-4})
    return ck.save_checkpoint(root, "tiny", CFG, "whole", req, **kw)  # type: ignore[arg-type]


def test_round_trip_of_weights_optimizer_and_state(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(2, 3, 32, 32)
    oa, ob = model.forward_pair(x, x)
    (oa.face.mean() + ob.face.mean()).backward()
    opt.step()
    ema = {k: v * 0.5 for k, v in model.state_dict().items()}
    req = ck.SaveRequest(step=3, weights=model.state_dict(), optimizer=ck.optimizer_tensors(opt, model), ema=ema,
                         trainer={"samplers": {"A": {"n": 4, "epoch": 1, "offset": 2}}}, settings={"lr": 1e-3})
    path = ck.save_checkpoint(tmp_path, "tiny", CFG, "full", req)
    got = mck.read_checkpoint(path)
    assert got.info.step == 3 and got.info.face_type == "full" and got.info.ema and got.info.config == CFG
    assert all(torch.equal(got.weights[k], v) for k, v in model.state_dict().items())
    assert got.state["trainer"]["samplers"]["A"]["offset"] == 2
    model2 = _model(seed=1)
    opt2 = torch.optim.AdamW(model2.parameters(), 1e-3)
    mck.load_weights(model2, got.weights, path)
    ck.load_optimizer_tensors(opt2, model2, got.optimizer, path)
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[p2][key])
    inf_model, info = load_for_inference(tmp_path, "cpu")  # uses the EMA weights
    assert torch.equal(inf_model.state_dict()["encoder.body.0.conv.weight"],
                       ema["encoder.body.0.conv.weight"])


def test_keeps_the_last_n_and_a_snapshot_every_k(tmp_path: Path) -> None:
    model = _model()
    for step in range(11):
        _save(tmp_path, step, model, keep_last=3, snapshot_every=4)
    assert [s for s, _ in mck.list_checkpoints(tmp_path)] == [8, 9, 10]
    assert [s for s, _ in mck.list_checkpoints(tmp_path, snapshots=True)] == [4, 8]
    mck.read_checkpoint(mck.list_checkpoints(tmp_path, snapshots=True)[0][1])  # a snapshot is a full checkpoint


def test_a_crash_mid_save_leaves_no_checkpoint_under_a_final_name(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    stale = tmp_path / "checkpoints" / ".step-00000002.tmp-999"
    stale.mkdir()
    (stale / mck.WEIGHTS).write_bytes(b"half")
    assert mck.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000001"
    _save(tmp_path, 2)
    assert not stale.exists()
    assert mck.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000002"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_are_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    _save(tmp_path, 1)
    path = _save(tmp_path, 2)
    weights = path / mck.WEIGHTS
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    else:
        weights.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(UserError, match="SHA-256 does not match") as err:
        load_for_inference(tmp_path, "cpu")
    assert str(weights) in str(err.value)
    assert (tmp_path / "checkpoints" / "step-00000001" / mck.WEIGHTS).exists()  # the previous one is kept
    mck.read_checkpoint(tmp_path / "checkpoints" / "step-00000001")


def test_edited_state_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, 5)
    state = json.loads((path / mck.STATE).read_text())
    state["step"] = 500
    (path / mck.STATE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="state.json was changed or damaged"):
        load_for_inference(tmp_path, "cpu")


class _Evil:
    """Unpickling this touches a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_in_place_of_safetensors_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _save(tmp_path, 1)
    torch.save({"evil": _Evil(marker)}, path / mck.WEIGHTS)
    # a careful attacker also fixes the checksums: the file is still refused as not safetensors
    state = json.loads((path / mck.STATE).read_text())
    state["files"][mck.WEIGHTS] = sha256_hex((path / mck.WEIGHTS).read_bytes())
    state["digest"] = state_digest(state)
    (path / mck.STATE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="not a valid safetensors file") as err:
        load_for_inference(tmp_path, "cpu")
    assert mck.WEIGHTS in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pth", "model.ckpt", "weights.bin"])
def test_pickle_files_are_refused_by_name_and_content(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"evil": _Evil(marker)}, path)
    with pytest.raises(UserError, match="never loads pickles"):
        load_for_inference(path, "cpu")
    disguised = tmp_path / "model_folder"
    path.rename(disguised)  # no suffix: recognised by its bytes
    with pytest.raises(UserError, match="never loads pickles"):
        load_for_inference(disguised, "cpu")
    assert not marker.exists()


def test_missing_or_empty_model_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such model folder"):
        load_for_inference(tmp_path / "nope", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no trained model here"):
        load_for_inference(tmp_path / "empty", "cpu")


def test_weights_of_another_shape_are_refused(tmp_path: Path) -> None:
    other = create_model("tiny", preset_config("tiny", Dims(resolution=32, e_dims=8, ae_dims=8, d_dims=4)))
    with pytest.raises(UserError, match="wrong shape"):
        mck.load_weights(_model(), other.state_dict(), tmp_path / "x")


def test_a_full_disk_is_a_one_line_error_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    _save(tmp_path, 1)
    real = ck._write
    calls = []

    def full(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write", full)
    with pytest.raises(UserError, match="cannot save the checkpoint of step 2 \\(No space left on device\\); the "
                       "newest saved checkpoint is step-00000001") as err:
        _save(tmp_path, 2)
    assert str(tmp_path) in str(err.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001"]  # no temp folder left
    mck.read_checkpoint(tmp_path / "checkpoints" / "step-00000001")


def test_a_kill_while_old_checkpoints_are_deleted_leaves_no_broken_folder(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    model = _model()
    for step in (1, 2):
        _save(tmp_path, step, model, keep_last=2)

    def killed(path: Path, *args: object, **kwargs: object) -> None:
        (Path(path) / mck.WEIGHTS).unlink()  # the process dies half-way through the deletion
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 3, model, keep_last=2)
    monkeypatch.undo()
    assert [s for s, _ in mck.list_checkpoints(tmp_path)] == [2, 3]
    for _, path in mck.list_checkpoints(tmp_path):
        mck.read_checkpoint(path)
    _save(tmp_path, 4, model, keep_last=2)  # the next save clears the half-deleted hidden folder
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]


# ---------------------------------------------------------------------- re-signed (tampered) checkpoints
# The digest of state.json is no secret: an attacker who edits a checkpoint recomputes it. Every field the
# trainer reads is then checked as untrusted input, and every file's size is checked against the model config.


def _resign(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    state = json.loads((path / mck.STATE).read_text())
    edit(state)
    for name in state["files"]:
        state["files"][name] = sha256_hex((path / name).read_bytes())
    state["digest"] = state_digest(state)
    (path / mck.STATE).write_text(json.dumps(state))
    return path / mck.STATE


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        *parents, key = dotted.split(".")
        d = state
        for p in parents:
            d = d.setdefault(p, {})
        d[key] = value

    return edit


WRONG_TYPES = [
    ("trainer.history", "many", "history must be a list"),
    ("trainer.history", [[1, "low", 0.5]], "loss must be a number"),
    ("trainer.history", [[1, 0.5]], "history rows must be"),
    ("trainer.lr_scale", "fast", "lr_scale must be a number"),
    ("trainer.lr_scale", 0, "lr_scale must be a number"),
    ("trainer.elapsed", [3600], "elapsed must be a number"),
    ("trainer.elapsed", 10**400, "elapsed must be a number"),
    ("trainer.samplers", {"A": {"n": 4, "epoch": 0, "offset": 9}}, "offset must be an integer from 0 to 3"),
    ("trainer.samplers", {"A": "start"}, "sampler A must be an object"),
    ("trainer.samplers", {"A": {"n": 4, "epoch": "1", "offset": 0}}, "epoch must be an integer"),
    ("trainer", ["not", "an", "object"], "trainer must be an object"),
    ("settings", "lr=1", "bad settings in state.json"),
    ("settings.lr", "fast", "bad value 'fast' for 'lr'"),
    ("settings.resolution", "32px", "bad value '32px' for 'resolution'"),
    ("model_config", {**CFG.to_dict(), "enc_channels": [4] * 40, "resolution": 2**41},
     "more than 16 encoder or decoder stages"),
]


@pytest.mark.parametrize(("field", "value", "says"), WRONG_TYPES, ids=[f"{f}-{i}" for i, (f, _v, _s)
                                                                      in enumerate(WRONG_TYPES)])
def test_a_resigned_state_with_wrong_types_is_refused_naming_it(tmp_path: Path, field: str, value: Any,
                                                                says: str) -> None:
    state = _resign(_save(tmp_path, 1), _set(field, value))
    for read in (mck.read_checkpoint, mck.read_state):
        with pytest.raises(UserError, match=says) as err:
            read(state.parent)
        assert str(err.value).startswith(str(state)) and "\n" not in str(err.value)


def test_a_huge_weights_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    """A 1 TiB (sparse) weights file: reading it whole to hash it ran out of memory."""
    path = _save(tmp_path, 1)
    with open(path / mck.WEIGHTS, "r+b") as fh:
        fh.truncate(1 << 40)
    with pytest.raises(UserError, match="more than the .* its model config allows") as err:
        mck.read_checkpoint(path)
    assert str(err.value).startswith(str(path / mck.WEIGHTS))


def test_a_resigned_weights_file_larger_than_the_config_implies_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    limit = mck.expected_files("tiny", CFG, path).limits[mck.WEIGHTS]
    size = (path / mck.WEIGHTS).stat().st_size
    assert size < limit <= size + mck.HEADER_BYTES + mck.HEADER_BYTES_PER_TENSOR * len(_model().state_dict())
    with open(path / mck.WEIGHTS, "ab") as fh:
        fh.write(b"\0" * (limit - size + 1))
    _resign(path, lambda s: None)
    with pytest.raises(UserError, match="its model config allows"):
        mck.read_checkpoint(path)


@pytest.mark.parametrize(("key", "tensor", "says"), [
    ("optim.encoder.body.0.conv.weight.exp_avg", torch.zeros(3, 3), "expected a float tensor of shape"),
    ("optim.nowhere.exp_avg", torch.zeros(1), "unknown parameter"),
    ("rng.cpu", torch.zeros(7, dtype=torch.uint8), "bad CPU RNG state"),
    ("rng.cpu", torch.zeros(5056), "bad RNG state"),
])
def test_a_resigned_optimizer_state_of_the_wrong_shape_is_refused(tmp_path: Path, key: str, tensor: torch.Tensor,
                                                                   says: str) -> None:
    model = _model()
    req = ck.SaveRequest(step=1, weights=model.state_dict(), optimizer={key: tensor})
    path = ck.save_checkpoint(tmp_path, "tiny", CFG, "whole", req)
    with pytest.raises(UserError, match=says) as err:
        mck.read_checkpoint(path)
    assert str(err.value).startswith(str(path / mck.OPTIMIZER))
    mck.read_checkpoint(path, with_optimizer=False)  # convert does not read it


def test_weights_not_fitting_a_resigned_config_are_refused_before_any_model_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-signed config asking for a far larger model than its weights hold is refused on the weights' shapes,
    before a model of that config is allocated (only shapes are built, on the meta device)."""
    path = _save(tmp_path, 1)
    huge = preset_config("tiny", Dims(resolution=32, e_dims=4096, ae_dims=16384, d_dims=4096))
    _resign(path, _set("model_config", huge.to_dict()))
    real = mck.create_model

    def only_on_meta(preset: str, config: Any) -> torch.nn.Module:
        if config == huge and torch.empty(0).device.type != "meta":
            raise AssertionError("a model of the hostile config was allocated")
        return real(preset, config)

    monkeypatch.setattr(mck, "create_model", only_on_meta)
    monkeypatch.setattr(load_mod, "create_model", only_on_meta)
    with pytest.raises(UserError, match="weights do not fit the model config") as err:
        load_for_inference(tmp_path, "cpu")
    assert str(err.value).startswith(str(path / mck.WEIGHTS))
