"""Provenance marks on every output: an invisible watermark in every frame, synthetic-media metadata in the
container, and (with the optional ``c2pa-python``) a signed C2PA manifest; ``verify_file`` reads them back.

For a writer of outputs:

* every frame: ``frame = embed_watermark(frame)`` after the paste-back, before encoding;
* videos: ``VideoWriter(..., metadata=synthetic_metadata())``, then ``attach_c2pa(path)`` once the file is
  complete (mp4/mov; Matroska has no C2PA binding and keeps the watermark and tags);
* images: ``write_marked_image(path, frame)`` (PNG/JPEG with tags and the manifest, written atomically);
* any other picture that shows a swapped face (previews, frame strips): ``write_synthetic_image(path, image)``,
  which also adds the watermark.

There is deliberately no setting that turns the marks off.
"""

from changeling.provenance.c2pa import ManifestFinding
from changeling.provenance.c2pa import available as c2pa_available
from changeling.provenance.c2pa import sign_file as attach_c2pa
from changeling.provenance.marked import write_marked_image, write_synthetic_image
from changeling.provenance.metadata import MetadataFinding, synthetic_metadata
from changeling.provenance.verify import VerifyReport, verify_file
from changeling.provenance.watermark import detect_watermark, embed_watermark, read_watermark

__all__ = [
    "ManifestFinding",
    "MetadataFinding",
    "VerifyReport",
    "attach_c2pa",
    "c2pa_available",
    "detect_watermark",
    "embed_watermark",
    "read_watermark",
    "synthetic_metadata",
    "verify_file",
    "write_marked_image",
    "write_synthetic_image",
]
