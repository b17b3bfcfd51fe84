"""Extraction: turn videos, images or folders of one person into aligned faces plus per-source alignments."""

from changeling.extract.pipeline import extract
from changeling.extract.report import ExtractReport, SourceReport
from changeling.extract.tracking import Tracker, TrackerFactory

__all__ = ["ExtractReport", "SourceReport", "Tracker", "TrackerFactory", "extract"]
