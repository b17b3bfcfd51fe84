"""Extraction: turn videos, images or folders of one person into aligned faces plus per-source alignments."""

from changeling.extract.pipeline import ExtractReport, SourceReport, Tracker, TrackerFactory, extract

__all__ = ["ExtractReport", "SourceReport", "Tracker", "TrackerFactory", "extract"]
