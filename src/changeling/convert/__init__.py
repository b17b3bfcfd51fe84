"""Convert: render the swap into a video (or images), seamlessly, with the source's audio and provenance marks.

The Python API behind ``changeling convert`` (:mod:`changeling.convert.project`): :func:`build_converter`
assembles a :class:`~changeling.convert.pipeline.Converter` for a project from its settings (model, face source,
colour matcher, masks, writer, watermark); :func:`convert` runs it over a video and :func:`preview` renders one
frame in every colour mode. The pieces (colour, blend, smooth, sharpen, writers) are usable on their own.
"""

from changeling.convert.pipeline import Converter, ConvertReport
from changeling.convert.project import (
    ConvertPlan,
    build_converter,
    convert,
    default_output,
    default_writer,
    preview,
    resolve_settings,
)

__all__ = ["ConvertPlan", "ConvertReport", "Converter", "build_converter", "convert", "default_output",
           "default_writer", "preview", "resolve_settings"]
