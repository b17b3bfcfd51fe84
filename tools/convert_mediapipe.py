"""Convert MediaPipe's face .tflite models to the safetensors weights of changeling's PyTorch ports.

Usage::

    python tools/convert_mediapipe.py SOURCE [--out src/changeling/assets/models] [--copy-tflite DIR]

SOURCE is the ``mediapipe-0.10.21-*.whl`` file or a folder holding its unpacked contents. The graph structure is
read from the flatbuffer (the schema module that ships with ``ai-edge-litert``); the weight values are read
through LiteRT itself with its default delegates switched off, so fp16 weights come back dequantized exactly as
the interpreter computes them and the sparse weights of the full-range detector come back densified.

Weights are matched to the PyTorch modules by graph order: the convolutions and PReLUs of the TFLite graph are
listed depth-first from the outputs (deepest input first), which is the order in which the port registers its
layers; every pair is checked for kind and shape. After loading, both versions run on the same random input and
the outputs must agree before anything is written. fp16 source weights are stored as fp16 (lossless).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from changeling.detect.blazeface import BlazeFaceFull, BlazeFaceShort
from changeling.detect.facemesh import FaceMeshNet
from changeling.detect.iris import IrisNet

MEDIAPIPE_VERSION = "0.10.21"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the safetensors stem
    tflite: str  # path of the .tflite inside the mediapipe package
    build: type[nn.Module]
    input_range: tuple[float, float]


SPECS = [
    ModelSpec("face_detection_short", "modules/face_detection/face_detection_short_range.tflite", BlazeFaceShort,
              (-1.0, 1.0)),
    ModelSpec("face_detection_full", "modules/face_detection/face_detection_full_range_sparse.tflite",
              BlazeFaceFull, (-1.0, 1.0)),
    ModelSpec("face_landmark", "modules/face_landmark/face_landmark.tflite", FaceMeshNet, (0.0, 1.0)),
    ModelSpec("iris_landmark", "modules/iris_landmark/iris_landmark.tflite", IrisNet, (0.0, 1.0)),
]

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU")
CONSTANT_OPS = ("DEQUANTIZE", "DENSIFY")


@dataclass(frozen=True)
class WeightOp:
    kind: str  # one of WEIGHT_OPS
    tensors: tuple[int, ...]  # weight (and bias) tensor indices
    name: str  # output tensor name, for messages


def _schema():  # type: ignore[no-untyped-def]
    from ai_edge_litert import schema_py_generated as fb

    return fb


def weight_ops_in_port_order(model_bytes: bytes) -> list[WeightOp]:
    """The graph's conv/depthwise/PReLU ops, depth-first from the outputs, deepest data input first."""
    fb = _schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(model_bytes, 0))
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]

    def kind(i: int) -> str:
        code = model.operatorCodes[graph.operators[i].opcodeIndex]
        return op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    producer = {int(t): i for i, op in enumerate(graph.operators) for t in op.outputs}

    def data_inputs(i: int) -> list[int]:
        inputs = [int(t) for t in graph.operators[i].inputs if t >= 0]
        if kind(i) in WEIGHT_OPS:
            inputs = inputs[:1]
        return [t for t in inputs if t in producer and kind(producer[t]) not in CONSTANT_OPS]

    @functools.cache
    def depth(t: int) -> int:
        return 1 + max((depth(x) for x in data_inputs(producer[t])), default=0) if t in producer else 0

    seen: set[int] = set()
    order: list[WeightOp] = []

    def visit(t: int) -> None:
        i = producer.get(t)
        if i is None or i in seen:
            return
        seen.add(i)
        for x in sorted(data_inputs(i), key=lambda x: -depth(x)):
            visit(x)
        if kind(i) in WEIGHT_OPS:
            op = graph.operators[i]
            params = tuple(int(t) for t in op.inputs[1:] if t >= 0)
            order.append(WeightOp(kind(i), params, graph.tensors[int(op.outputs[0])].name.decode()))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for t in graph.outputs:
        visit(int(t))
    return order


def tensor_reader(path: Path) -> Callable[[int], np.ndarray]:
    """Run LiteRT once (no delegates, all tensors kept); return ``value(tensor_index)`` for any tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
    interp.invoke()
    return interp.get_tensor  # type: ignore[no-any-return]


def port_layers(model: nn.Module) -> list[nn.Conv2d | nn.PReLU]:
    """The port's weight-bearing layers in registration order."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]


def load_into(model: nn.Module, ops: list[WeightOp], value: Callable[[int], np.ndarray]) -> None:
    """Copy the TFLite weights into ``model``; ``value(tensor_index)`` returns a float32 array."""
    layers = port_layers(model)
    if len(layers) != len(ops):
        raise RuntimeError(f"{type(model).__name__}: {len(layers)} layers in the port, {len(ops)} in the graph")
    for layer, op in zip(layers, ops, strict=True):
        arrays = [np.asarray(value(t), dtype=np.float32) for t in op.tensors]
        if isinstance(layer, nn.PReLU):
            if op.kind != "PRELU":
                raise RuntimeError(f"expected PRELU for {layer}, graph has {op.kind} ({op.name})")
            weight = torch.from_numpy(arrays[0].reshape(-1))
            bias = None
        else:
            depthwise = int(layer.groups) > 1
            if op.kind != ("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"):
                raise RuntimeError(f"expected {'depthwise ' if depthwise else ''}conv for {layer}, graph has "
                                   f"{op.kind} ({op.name})")
            kernel = arrays[0]  # conv (O, KH, KW, I); depthwise (1, KH, KW, C)
            weight = torch.from_numpy(kernel.transpose(3, 0, 1, 2) if depthwise else kernel.transpose(0, 3, 1, 2))
            bias = torch.from_numpy(arrays[1])
        params = dict(layer.named_parameters())
        if tuple(weight.shape) != tuple(params["weight"].shape):
            raise RuntimeError(f"shape mismatch at {op.name}: graph {tuple(weight.shape)}, port "
                               f"{tuple(params['weight'].shape)}")
        with torch.no_grad():
            params["weight"].copy_(weight)
            if bias is not None:
                params["bias"].copy_(bias)


def run_tflite(path: Path, x_nhwc: np.ndarray) -> list[np.ndarray]:
    """Outputs of the original model (LiteRT, default delegates) for a (1, S, S, 3) input."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x_nhwc.astype(np.float32))
    interp.invoke()
    return [interp.get_tensor(d["index"]).reshape(-1) for d in interp.get_output_details()]


def check_equivalence(spec: ModelSpec, model: nn.Module, path: Path) -> float:
    """Largest relative difference between the port and LiteRT over a few random inputs."""
    size = int(model.input_size)  # type: ignore[arg-type]
    lo, hi = spec.input_range
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        x = rng.uniform(lo, hi, (1, size, size, 3)).astype(np.float32)
        with torch.inference_mode():
            ours = model(torch.from_numpy(x).permute(0, 3, 1, 2))
        for a, b in zip([t.numpy().reshape(-1) for t in ours], run_tflite(path, x), strict=True):
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)))
    return worst


def find_tflite(source: Path, relative: str, scratch: Path) -> Path:
    """Locate ``relative`` (under ``mediapipe/``) in a wheel or an unpacked folder."""
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            member = f"mediapipe/{relative}"
            target = scratch / Path(relative).name
            with z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return target
    for candidate in (source / "mediapipe" / relative, source / relative):
        if candidate.is_file():
            return candidate
    hits = sorted(source.rglob(Path(relative).name))
    if not hits:
        raise FileNotFoundError(f"{source}: no {Path(relative).name} found")
    return hits[0]


def convert(spec: ModelSpec, tflite: Path, out_dir: Path) -> Path:
    model_bytes = tflite.read_bytes()
    ops = weight_ops_in_port_order(model_bytes)
    model = spec.build().eval()
    load_into(model, ops, tensor_reader(tflite))
    err = check_equivalence(spec, model, tflite)
    if err > 1e-3:
        raise RuntimeError(f"{spec.name}: port differs from LiteRT by {err:.2e} (relative)")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    lossless_fp16 = all(torch.equal(v.half().float(), v) for v in state.values())
    if lossless_fp16:
        state = {k: v.half() for k, v in state.items()}
    meta = {
        "source": f"mediapipe=={MEDIAPIPE_VERSION}:mediapipe/{spec.tflite}",
        "source_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "license": "Apache-2.0",
        "converter": "tools/convert_mediapipe.py",
        "dtype": "float16" if lossless_fp16 else "float32",
        "max_relative_error_vs_litert": f"{err:.3e}",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{spec.name}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(json.dumps({"model": spec.name, "layers": len(ops), **meta, "bytes": target.stat().st_size}))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="mediapipe wheel (.whl) or unpacked folder")
    parser.add_argument("--out", type=Path, default=Path("src/changeling/assets/models"))
    parser.add_argument("--copy-tflite", type=Path, default=None,
                        help="also copy the original .tflite files here (test references)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        for spec in SPECS:
            tflite = find_tflite(args.source, spec.tflite, Path(scratch))
            convert(spec, tflite, args.out)
            if args.copy_tflite is not None:
                args.copy_tflite.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tflite, args.copy_tflite / Path(spec.tflite).name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
