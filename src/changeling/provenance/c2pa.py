"""C2PA manifests (Content Credentials) through the optional ``c2pa-python`` package, offline.

Each installation makes its own signing identity on first use: a local root certificate and a signing
certificate under it (ECDSA P-256, ES256), kept in the user's config folder (``$XDG_CONFIG_HOME/changeling/c2pa``
or ``~/.config/changeling/c2pa``; never in a project or the repository). Manifests say the media is a composite
with parts made by a trained model and name changeling and its version. Readers elsewhere see a valid
signature from an untrusted certificate; this installation's reader adds its own root as a trust anchor, so
its own outputs read as trusted.

Without ``c2pa-python`` (the ``[c2pa]`` extra) nothing is signed and manifests are not read; the watermark and
the metadata tags do not depend on it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeling import __version__
from changeling.provenance.metadata import DIGITAL_SOURCE_TYPE

log = logging.getLogger(__name__)

MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".mp4": "video/mp4",
              ".m4v": "video/mp4", ".mov": "video/quicktime"}
_CHAIN_FILE, _KEY_FILE, _ROOT_FILE = "signer-chain.pem", "signer-key.pem", "root.pem"
_OFFLINE_VERIFY = {"verify": {"verify_trust": True, "ocsp_fetch": False, "remote_manifest_fetch": False}}


def available() -> bool:
    """Whether ``c2pa-python`` (and ``cryptography``, which it depends on) can be imported."""
    try:
        import c2pa  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def config_dir() -> Path:
    """Where this installation's signing identity lives."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "changeling" / "c2pa"


@dataclass(frozen=True)
class SigningIdentity:
    chain_pem: bytes  # signing certificate, then the local root
    key_pem: bytes  # PKCS#8 private key of the signing certificate
    root_pem: bytes  # the local root certificate (a trust anchor for this installation's reader)
    folder: Path


def _make_identity() -> tuple[bytes, bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "changeling (this installation)")])

    def usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(name("changeling local root")).issuer_name(
        name("changeling local root")).public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("changeling signer")).issuer_name(root.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(sign=True, ca=False), critical=True)
            # C2PA requires an extended key usage; e-mail protection is one the specification accepts.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    chain = cert.public_bytes(serialization.Encoding.PEM) + root_pem
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return chain, key_pem, root_pem


def signing_identity(folder: Path | None = None) -> SigningIdentity:
    """This installation's identity, made on first use (the private key is readable by the user only).

    The files are written into a fresh folder that is renamed into place, so two processes starting at once
    never see half an identity: the second rename fails and that process reads the winner's files.
    """
    folder = Path(folder) if folder is not None else config_dir()
    if not (folder / _KEY_FILE).exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        chain, key_pem, root_pem = _make_identity()
        tmp = Path(tempfile.mkdtemp(prefix=".c2pa-", dir=folder.parent))
        try:
            for fname, data in ((_CHAIN_FILE, chain), (_KEY_FILE, key_pem), (_ROOT_FILE, root_pem)):
                fd = os.open(tmp / fname, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            os.rename(tmp, folder)
            log.info("made a C2PA signing identity for this installation in %s", folder)
        except OSError:
            if not (folder / _KEY_FILE).exists():
                raise
        finally:
            if tmp.exists():
                for p in tmp.iterdir():
                    p.unlink()
                tmp.rmdir()
    return SigningIdentity(chain_pem=(folder / _CHAIN_FILE).read_bytes(), key_pem=(folder / _KEY_FILE).read_bytes(),
                           root_pem=(folder / _ROOT_FILE).read_bytes(), folder=folder)


def manifest_definition(title: str, version: str = __version__) -> dict[str, Any]:
    """The manifest changeling signs: who made it, and that it is a composite made with a trained model."""
    agent = {"name": "changeling", "version": version}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [{
            "label": "c2pa.actions",
            "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": agent,
                "description": "Faces replaced by changeling (face swap).",
            }]},
        }],
    }


def sign_stream(source: Any, dest: Any, mime: str, title: str, identity: SigningIdentity | None = None) -> None:
    """Copy ``source`` (a readable binary stream) to ``dest`` with a signed manifest; raises on failure."""
    import c2pa

    ident = identity or signing_identity()
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ident.chain_pem, ident.key_pem, None)
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest_definition(title)) as builder:
        builder.sign(signer, mime, source, dest)


def sign_file(path: Path, identity: SigningIdentity | None = None, *, name: str | None = None) -> bool:
    """Attach a signed manifest to a PNG, JPEG, MP4 or MOV in place (temporary name, then rename).

    ``name``: the file's final name when ``path`` is still a temporary one (the type and the manifest's title
    come from it), so a writer can sign before it publishes the file.
    Returns False, leaving the file as it was, when c2pa-python is missing or the type is not one it signs
    (Matroska, for one); signing errors are logged and also return False: the watermark and tags remain.
    """
    path = Path(path)
    title = name or path.name
    mime = MIME_TYPES.get(Path(title).suffix.lower())
    if mime is None or not available():
        return False
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".c2pa", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            sign_stream(src, dst, mime, title, identity)
        os.replace(tmp, path)
        return True
    except Exception as exc:  # noqa: BLE001 - the c2pa library raises its own and OS errors; the file stays marked
        log.warning("%s: could not attach a C2PA manifest (%s)", path, exc)
        return False
    finally:
        tmp.unlink(missing_ok=True)


def sign_bytes(data: bytes, mime: str, title: str, identity: SigningIdentity | None = None) -> bytes | None:
    """``data`` with a signed manifest, or None when c2pa-python is missing or signing failed."""
    import io

    if not available():
        return None
    out = io.BytesIO()
    try:
        sign_stream(io.BytesIO(data), out, mime, title, identity)
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: could not attach a C2PA manifest (%s)", title, exc)
        return None
    return out.getvalue()


@dataclass(frozen=True)
class ManifestFinding:
    """A C2PA manifest as ``verify`` shows it."""

    state: str  # "Trusted", "Valid" (signature good, certificate not trusted here) or "Invalid"
    generator: str | None  # e.g. "changeling 0.1.0"
    digital_source_type: str | None
    signer: str | None  # certificate common name and issuer
    this_installation: bool  # signed with this installation's key
    problems: tuple[str, ...]  # validation codes other than an untrusted certificate


def read_manifest(path: Path, folder: Path | None = None) -> ManifestFinding | None:
    """The active manifest of a file, or None when it has none or c2pa-python is missing."""
    if not available():
        return None
    import c2pa

    settings: dict[str, Any] = json.loads(json.dumps(_OFFLINE_VERIFY))
    local_root: bytes | None = None
    key_folder = Path(folder) if folder is not None else config_dir()
    if (key_folder / _ROOT_FILE).exists():
        local_root = (key_folder / _ROOT_FILE).read_bytes()
        settings["trust"] = {"user_anchors": local_root.decode("ascii")}
    try:
        with c2pa.Context(c2pa.Settings.from_dict(settings)) as ctx:
            reader = c2pa.Reader.try_create(str(path), context=ctx)
            if reader is None:
                return None
            with reader:
                state = reader.get_validation_state() or "Invalid"
                report = json.loads(reader.json())
                manifest = reader.get_active_manifest() or {}
    except Exception as exc:  # noqa: BLE001 - unsupported type or a damaged manifest store
        log.debug("%s: no readable C2PA manifest (%s)", path, exc)
        return None
    gen_info = manifest.get("claim_generator_info") or [{}]
    generator = " ".join(str(x) for x in (gen_info[0].get("name"), gen_info[0].get("version")) if x) or None
    source_type = None
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                source_type = source_type or action.get("digitalSourceType")
    sig = manifest.get("signature_info") or {}
    signer = ", ".join(str(sig[k]) for k in ("common_name", "issuer") if sig.get(k)) or None
    problems = tuple(str(s.get("code")) for s in report.get("validation_status") or []
                     if s.get("code") != "signingCredential.untrusted")
    return ManifestFinding(state=state, generator=generator, digital_source_type=source_type, signer=signer,
                           this_installation=state == "Trusted" and local_root is not None, problems=problems)
