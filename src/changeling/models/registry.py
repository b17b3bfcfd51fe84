"""Model presets: a plain dict from name to :class:`Preset`. Importing this module builds nothing.

Every preset takes the same four knobs (0 keeps the preset's default): ``resolution``, ``e_dims`` (width of
the first encoder convolution; the encoder doubles it at each of its four downscales), ``ae_dims`` (width of
the dense bottleneck) and ``d_dims`` (width unit of the decoder). ``df`` and ``liae`` default to wider dims
(96) from 256 px on, as such models are usually run; ``df`` at 128 px and at 256 px then have the shapes of the
reference steps ``df128`` and ``df256`` (``models/reference.py``), and ``original`` that of ``original64``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from changeling.models.pair import ModelConfig, PairModel
from changeling.vocab import PRESET_NAMES, check_registry


@dataclass(frozen=True)
class Dims:
    """The user-settable size knobs of a preset (0: the preset's default)."""

    resolution: int = 0
    e_dims: int = 0
    ae_dims: int = 0
    d_dims: int = 0

    def over(self, defaults: Dims) -> Dims:
        """These dims with every 0 replaced by ``defaults``."""
        return Dims(*(v or d for v, d in zip((self.resolution, self.e_dims, self.ae_dims, self.d_dims),
                                             (defaults.resolution, defaults.e_dims, defaults.ae_dims,
                                              defaults.d_dims), strict=True)))


@dataclass(frozen=True)
class Preset:
    """A named model shape: default dims, the function that turns dims into a config, and a batch cap used
    when the trainer fits the batch to memory."""

    description: str
    defaults: Dims
    build: Callable[[Dims], ModelConfig]
    max_batch: int  # faces per side; larger batches stop helping quality
    wide: Dims | None = None  # default widths from 256 px on (the resolution chosen decides)

    def dims(self, requested: Dims) -> Dims:
        """``requested`` with its zeros filled from this preset's defaults for the requested resolution."""
        res = requested.resolution or self.defaults.resolution
        base = self.wide if self.wide is not None and res >= 256 else self.defaults
        return Dims(res, requested.e_dims, requested.ae_dims, requested.d_dims).over(base)


LITE_LIGHT = 2  # lite's decoder stages that upscale with depthwise-separable convolutions


def _tiny(d: Dims) -> ModelConfig:
    e = d.e_dims
    return ModelConfig(arch="df", resolution=d.resolution, enc_channels=(e, 2 * e, 4 * e, 8 * e),
                       enc_kernel=3, dense=d.ae_dims, inter_channels=8 * e, inter_up_channels=4 * d.d_dims,
                       dec_channels=(4 * d.d_dims, 2 * d.d_dims, d.d_dims), head_kernel=3)


def _lite(d: Dims) -> ModelConfig:
    # tiny's widths and kernels with one more decoder upscale; the two largest grids upscale with
    # depthwise-separable convolutions, so 128 px takes fewer multiply-adds than tiny at 64 px (0.58 against
    # 0.62 GMAC per face), though it runs at about half tiny's speed on a CPU (bigger activations)
    e, dd = d.e_dims, d.d_dims
    return ModelConfig(arch="df", resolution=d.resolution, enc_channels=(e, 2 * e, 4 * e, 8 * e),
                       enc_kernel=3, dense=d.ae_dims, inter_channels=8 * e, inter_up_channels=4 * dd,
                       dec_channels=(4 * dd, 2 * dd, dd, max(1, dd // 2)), head_kernel=3, light_stages=LITE_LIGHT)


def _lite_liae(d: Dims) -> ModelConfig:
    # lite's widths and kernels in the LIAE arrangement: one decoder renders both people from per-identity
    # codes, so the decoder that draws B also learns from A's faces and a swap crosses less far (at the demo's
    # 10 CPU minutes with 8 faces per side: view SSIM 0.55-0.58 against tiny's 0.47-0.51; bench/RESULTS.md,
    # "The swap's crossing gap")
    return replace(_lite(d), arch="liae")


def _original(d: Dims) -> ModelConfig:
    e, dd = d.e_dims, d.d_dims
    return ModelConfig(arch="df", resolution=d.resolution, enc_channels=(e, 2 * e, 4 * e, 8 * e), dense=d.ae_dims,
                       inter_channels=8 * e, inter_up_channels=8 * e, dec_channels=(4 * dd, 2 * dd, dd))


def _df(d: Dims) -> ModelConfig:
    e, dd = d.e_dims, d.d_dims
    return ModelConfig(arch="df", resolution=d.resolution, enc_channels=(e, 2 * e, 4 * e, 8 * e), dense=d.ae_dims,
                       inter_channels=8 * e, inter_up_channels=8 * e, dec_channels=(8 * dd, 4 * dd, 2 * dd),
                       res_blocks=True)


def _liae(d: Dims) -> ModelConfig:
    e, dd = d.e_dims, d.d_dims
    return ModelConfig(arch="liae", resolution=d.resolution, enc_channels=(e, 2 * e, 4 * e, 8 * e),
                       dense=d.ae_dims, inter_channels=4 * e, inter_up_channels=4 * e,
                       dec_channels=(8 * dd, 4 * dd, 2 * dd), res_blocks=True)


PRESETS: dict[str, Preset] = {
    "tiny": Preset("64 px, about 1 GFLOP per face (forward and backward), for a laptop CPU",
                   Dims(64, 16, 128, 32), _tiny, 256),
    "lite": Preset("128 px for a CPU: tiny's trunk, one more upscale, depthwise-separable convolutions on the "
                   "largest grids", Dims(128, 16, 128, 32), _lite, 256),
    "lite-liae": Preset("lite's 128 px shape as LIAE (one shared decoder, per-identity inter layers): with the "
                        "demo's settings for it, the truest swap measured in 10 CPU minutes", Dims(128, 16, 128, 32), _lite_liae, 256),
    "original": Preset("64 px classic shape: 4 stride-2 convolutions 128..1024, dense 1024, pixel-shuffle ups",
                       Dims(64, 128, 1024, 64), _original, 256),
    "df": Preset("SAEHD-class DF: shared encoder, one decoder with residual blocks per person (128-256 px)",
                 Dims(128, 64, 256, 64), _df, 128, wide=Dims(256, 96, 256, 96)),
    "liae": Preset("SAEHD-class LIAE: shared encoder and decoder, per-identity inter layers (128-256 px)",
                   Dims(128, 64, 256, 64), _liae, 128, wide=Dims(256, 96, 256, 96)),
}
check_registry("preset", PRESETS, PRESET_NAMES)


def preset_config(name: str, dims: Dims | None = None) -> ModelConfig:
    """The config of preset ``name`` with ``dims`` over its defaults; ``ValueError`` for unknown names or
    inconsistent dims."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    config = preset.build(preset.dims(dims or Dims()))
    config.check()
    return config


def create_model(name: str, config: ModelConfig | None = None) -> PairModel:
    """A freshly initialised model of preset ``name`` (its default config unless ``config`` is given)."""
    if config is None:
        config = preset_config(name)
    elif name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets are: {', '.join(PRESETS)}")
    else:
        expected = preset_config(name).arch
        if config.arch != expected:
            raise ValueError(f"preset {name!r} is a {expected} model, the config says {config.arch}")
    return PairModel(config)


def scaled(config: ModelConfig, **changes: object) -> ModelConfig:
    """``config`` with some fields replaced (checked)."""
    out = replace(config, **changes)  # type: ignore[arg-type]
    out.check()
    return out
