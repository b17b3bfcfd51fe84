"""Faces on disk: one PNG per aligned face with JSON metadata, plus the per-video alignments store."""

from changeling.faces.facefile import FaceFileError, FaceMeta, list_faces, read_face, read_meta, write_face

__all__ = ["FaceFileError", "FaceMeta", "list_faces", "read_face", "read_meta", "write_face"]
