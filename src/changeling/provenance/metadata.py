"""Metadata that says "synthetic media, made with changeling": container tags for videos, PNG text chunks and
EXIF/XMP/COM for JPEG images, and the readers that find them again."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import av
from PIL import Image, PngImagePlugin

from changeling import __version__
from changeling.types import Frame

log = logging.getLogger(__name__)

SYNTHETIC_KEY = "synthetic_media"
GENERATOR_KEY = "generator"
SOURCE_TYPE_KEY = "digital_source_type"
# IPTC's term for real footage with parts made by a trained model (a face swap); C2PA uses the same URI.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
_XMP_NS = "https://github.com/changeling/ns/1.0/"

_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131


def synthetic_metadata(version: str = __version__) -> dict[str, str]:
    """Tags every output carries: keys and values are plain ASCII so every container keeps them."""
    return {
        SYNTHETIC_KEY: "true",
        GENERATOR_KEY: f"changeling {version}",
        SOURCE_TYPE_KEY: DIGITAL_SOURCE_TYPE,
        "comment": f"Synthetic media: faces were replaced by changeling {version} (face swap).",
    }


@dataclass(frozen=True)
class MetadataFinding:
    """What a file's metadata says about its origin."""

    present: bool  # the file says it is synthetic media made with changeling
    generator: str | None  # e.g. "changeling 0.1.0"
    tags: dict[str, str] = field(default_factory=dict)  # the tags that were read (lower-case keys)


def judge_tags(tags: dict[str, str]) -> MetadataFinding:
    """Whether tags (any case of keys) mark the media as changeling's synthetic output."""
    low = {k.lower(): v for k, v in tags.items()}
    generator = low.get(GENERATOR_KEY)
    synthetic = low.get(SYNTHETIC_KEY, "").strip().lower() == "true"
    made_here = generator is not None and generator.lower().startswith("changeling")
    return MetadataFinding(present=synthetic and made_here, generator=generator, tags=low)


# -- images -------------------------------------------------------------------------------------------------


def _xmp_packet(tags: dict[str, str]) -> bytes:
    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        f' xmlns:changeling="{_XMP_NS}"'
        f' Iptc4xmpExt:DigitalSourceType="{esc(tags[SOURCE_TYPE_KEY])}"'
        f' xmp:CreatorTool="{esc(tags[GENERATOR_KEY])}"'
        f' changeling:{SYNTHETIC_KEY}="{esc(tags[SYNTHETIC_KEY])}"'
        f' changeling:{GENERATOR_KEY}="{esc(tags[GENERATOR_KEY])}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{esc(tags["comment"])}</rdf:li></rdf:Alt>'
        '</dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


_XMP_ATTR = re.compile(r'changeling:(\w+)="([^"]{0,200})"')


def _tags_from_xmp(xmp: bytes | str) -> dict[str, str]:
    """Our attributes from an XMP packet (a pattern match: no XML parser runs on untrusted input)."""
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    return {k: v for k, v in _XMP_ATTR.findall(text[:100_000])}


def encode_image(frame: Frame, fmt: str, *, quality: int = 95, tags: dict[str, str] | None = None) -> bytes:
    """An (H, W, 3) uint8 RGB frame as PNG or JPEG bytes carrying the synthetic-media metadata.

    PNG: one tEXt chunk per tag plus the XMP packet (iTXt ``XML:com.adobe.xmp``). JPEG: EXIF ImageDescription
    and Software, a COM comment and the XMP packet (APP1).
    """
    tags = {**synthetic_metadata(), **(tags or {})}  # the synthetic-media tags are always there
    img = Image.fromarray(frame)
    buf = io.BytesIO()
    xmp = _xmp_packet(tags)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for k, v in tags.items():
            info.add_text(k, v)
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
        img.save(buf, format="PNG", pnginfo=info, compress_level=1)
    elif fmt == "JPEG":
        exif = Image.Exif()
        exif[_EXIF_IMAGE_DESCRIPTION] = tags["comment"]
        exif[_EXIF_SOFTWARE] = tags[GENERATOR_KEY]
        img.save(buf, format="JPEG", quality=quality, exif=exif, xmp=xmp,
                 comment=f"{tags['comment']} {SYNTHETIC_KEY}=true")
    else:
        raise ValueError(f"expected PNG or JPEG, got {fmt!r}")
    return buf.getvalue()


def read_image_metadata(path: Path) -> MetadataFinding:
    """The synthetic-media tags of a PNG or JPEG (other formats: whatever PIL's ``info`` holds)."""
    with Image.open(path) as img:
        tags: dict[str, str] = {}
        for k, v in img.info.items():
            if isinstance(k, str) and isinstance(v, str) and k.lower() in (SYNTHETIC_KEY, GENERATOR_KEY, SOURCE_TYPE_KEY, "comment"):
                tags[k] = v
        xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
        if isinstance(xmp, (bytes, str)):
            for k, v in _tags_from_xmp(xmp).items():
                tags.setdefault(k, v)
        exif = img.getexif()
        software = exif.get(_EXIF_SOFTWARE)
        if isinstance(software, str) and software.lower().startswith("changeling"):
            tags.setdefault(GENERATOR_KEY, software)
    return judge_tags(tags)


# -- videos -------------------------------------------------------------------------------------------------


def read_video_metadata(path: Path) -> MetadataFinding:
    """The container tags of a video (mp4/mov keep them with ``use_metadata_tags``; Matroska upper-cases keys)."""
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        tags = {str(k): str(v) for k, v in container.metadata.items()}
    return judge_tags(tags)
