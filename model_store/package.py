"""The model package: a signed, uncompressed tar of the manifest, the integer IR, the ONNX model and a self-test set.

`build_package` writes one; `read_package` checks the tar framing, the signature, the manifest and every file's
hash before handing anything out. The byte layout and the reasons for the order are in docs/package-format.md.
"""

import copy
import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from types import MappingProxyType

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from model_store.crypto import SIGNATURE_BYTES, CryptoError, SigningKey, key_id_of, sign, verify
from model_store.ir import Model
from model_store.serialization import from_bytes

PACKAGE_FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PAYLOAD_FILES = ("model.ir", "model.onnx", "selftest.npz")
MEMBER_NAMES = (MANIFEST, *PAYLOAD_FILES, SIGNATURE)
MiB = 2**20
# The detector's files are well under 1 MiB; the limits leave room for models twenty times its size and a
# self-test set of a few hundred frames, while bounding what a reader holds in memory.
MAX_MEMBER_BYTES = {
    MANIFEST: 1 * MiB,
    "model.ir": 64 * MiB,
    "model.onnx": 256 * MiB,
    "selftest.npz": 256 * MiB,
    SIGNATURE: SIGNATURE_BYTES,
}
MAX_PACKAGE_BYTES = 512 * MiB

TAR_BLOCK = 512
# (field, offset, width) of a ustar header, for naming the field that differs from the canonical header.
_TAR_FIELDS = (
    ("name", 0, 100),
    ("mode", 100, 8),
    ("uid", 108, 8),
    ("gid", 116, 8),
    ("size", 124, 12),
    ("mtime", 136, 12),
    ("checksum", 148, 8),
    ("type", 156, 1),
    ("linkname", 157, 100),
    ("magic", 257, 6),
    ("version", 263, 2),
    ("uname", 265, 32),
    ("gname", 297, 32),
    ("devmajor", 329, 8),
    ("devminor", 337, 8),
    ("prefix", 345, 155),
    ("padding", 500, 12),
)
_TAR_TYPES = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"g": "pax global header",
    b"x": "pax extended header",
    b"K": "GNU long link name",
    b"L": "GNU long name",
    b"S": "GNU sparse file",
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_AGENT_VERSION = re.compile(r"\d+(\.\d+){0,3}")
_CREATED_AT = "%Y-%m-%dT%H:%M:%SZ"
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class PackageError(ValueError):
    """A package (or what should go into one) is refused; the message starts with what failed."""


class VersionChange(StrEnum):
    """What installing a package does to a slot, as `check_version` classifies it."""

    INSTALL = "install"
    UPGRADE = "upgrade"
    SAME = "same"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Manifest:
    """What a package is and holds; checked on construction, so a Manifest in hand is always well formed."""

    name: str
    version: int
    task: str
    labels: list[str]
    input: dict
    compression: dict
    files: dict[str, dict]
    runtimes: list[str]
    min_agent_version: str
    signer_key_id: str
    created_at: str
    package_format: int = PACKAGE_FORMAT

    def __post_init__(self):
        _check_package_format(self.package_format)
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise PackageError(f"manifest: name {self.name!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if not _is_int(self.version) or not 1 <= self.version < 2**63:
            raise PackageError(f"manifest: version {self.version!r} must be an integer >= 1")
        _check_text(self.task, "task", 64)
        _check_text_list(self.labels, "labels", 128)
        _check_input(self.input)
        if not isinstance(self.compression, dict):
            raise PackageError("manifest: compression must be an object (the compression summary)")
        _check_files(self.files)
        _check_text_list(self.runtimes, "runtimes", 64)
        if not isinstance(self.min_agent_version, str) or not _AGENT_VERSION.fullmatch(self.min_agent_version):
            raise PackageError(f"manifest: min_agent_version {self.min_agent_version!r} must look like '1.2.3'")
        if not isinstance(self.signer_key_id, str) or not _KEY_ID.fullmatch(self.signer_key_id):
            raise PackageError(f"manifest: signer_key_id {self.signer_key_id!r} must be 16 lowercase hex digits")
        _check_created_at(self.created_at)
        # compression and the extra input keys are free-form: they must still encode as canonical JSON
        canonical_manifest_bytes(self)

    def to_dict(self) -> dict:
        return copy.deepcopy({item.name: getattr(self, item.name) for item in fields(self)})

    @classmethod
    def from_dict(cls, data: Mapping) -> "Manifest":
        if not isinstance(data, Mapping):
            raise PackageError(f"manifest: must be a JSON object, got {type(data).__name__}")
        # the format first: another format may have other fields
        _check_package_format(data.get("package_format"))
        expected = {item.name for item in fields(cls)}
        if unknown := sorted(set(data) - expected):
            raise PackageError(f"manifest: unknown fields {unknown}")
        if missing := sorted(expected - set(data)):
            raise PackageError(f"manifest: missing fields {missing}")
        return cls(**copy.deepcopy(dict(data)))


def canonical_manifest_bytes(manifest: Manifest | Mapping) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no whitespace, UTF-8, no NaN or infinities."""
    value = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as error:
        raise PackageError(f"manifest: must be plain JSON (objects, lists, strings, finite numbers): {error}") from None


@dataclass(frozen=True)
class Package:
    """A package whose signature, manifest and file hashes have all been checked."""

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    files: Mapping[str, bytes]

    @property
    def ir_bytes(self) -> bytes:
        return self.files["model.ir"]

    @property
    def onnx_bytes(self) -> bytes:
        return self.files["model.onnx"]

    @property
    def selftest_bytes(self) -> bytes:
        return self.files["selftest.npz"]

    def integer_model(self) -> Model:
        """The integer model decoded from model.ir."""
        try:
            return from_bytes(self.ir_bytes)
        except ValueError as error:
            raise PackageError(f"model.ir: {error}") from None

    def selftest(self) -> dict[str, np.ndarray]:
        """The self-test arrays (frames and reference outputs) by name, loaded without pickle."""
        try:
            with np.load(io.BytesIO(self.selftest_bytes), allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise PackageError(f"selftest.npz: not a readable npz archive: {error}") from None


def build_package(
    *,
    name: str,
    version: int,
    task: str,
    labels: list[str],
    input_spec: dict,
    ir_bytes: bytes,
    onnx_bytes: bytes,
    selftest: Mapping[str, np.ndarray],
    compression: dict,
    runtimes: list[str],
    min_agent_version: str,
    signing_key: SigningKey,
    created_at: datetime | None = None,
) -> bytes:
    """Assemble and sign a package; anything that would make an unreadable package raises PackageError."""
    if not isinstance(signing_key, SigningKey):
        raise PackageError(f"signing key must be a SigningKey, got {type(signing_key).__name__}")
    payload = {
        "model.ir": _payload(ir_bytes, "model.ir"),
        "model.onnx": _payload(onnx_bytes, "model.onnx"),
        "selftest.npz": _selftest_npz(selftest),
    }
    for member, data in payload.items():
        if len(data) > MAX_MEMBER_BYTES[member]:
            raise PackageError(f"{member}: {len(data)} bytes is over the limit of {MAX_MEMBER_BYTES[member]}")
    try:
        model = from_bytes(payload["model.ir"])
    except ValueError as error:
        raise PackageError(f"model.ir: {error}") from None
    created_at = datetime.now(UTC) if created_at is None else created_at
    if not isinstance(created_at, datetime) or created_at.tzinfo is None:
        raise PackageError(f"created_at must be a timezone-aware datetime, got {created_at!r}")
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        labels=_as_plain_json(labels, "labels"),
        input=_as_plain_json(input_spec, "input_spec"),
        compression=_as_plain_json(compression, "compression"),
        files={member: _file_entry(data) for member, data in payload.items()},
        runtimes=_as_plain_json(runtimes, "runtimes"),
        min_agent_version=min_agent_version,
        signer_key_id=signing_key.key_id,
        created_at=created_at.astimezone(UTC).strftime(_CREATED_AT),
    )
    _check_input_matches_model(manifest.input, model)
    manifest_bytes = canonical_manifest_bytes(manifest)
    if len(manifest_bytes) > MAX_MEMBER_BYTES[MANIFEST]:
        raise PackageError(f"manifest: {len(manifest_bytes)} bytes is over the limit of {MAX_MEMBER_BYTES[MANIFEST]}")
    members = [(MANIFEST, manifest_bytes), *payload.items(), (SIGNATURE, sign(manifest_bytes, signing_key))]
    return _write_tar(members)


def read_package(
    data: bytes, trusted_keys: Mapping[str, Ed25519PublicKey], *, max_bytes: int = MAX_PACKAGE_BYTES
) -> Package:
    """Verify a package and return it; anything wrong raises PackageError naming what failed.

    Order: the tar framing (nothing is parsed out of a member before its framing checks out), then the signature
    over the raw manifest bytes, then the manifest (canonical bytes, schema, signer id), then every file's size
    and sha256. Nothing in the manifest is parsed before its signature verifies.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PackageError(f"tar: a package is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise PackageError(f"tar: package is {len(data)} bytes, over the limit of {max_bytes}")
    members = _read_tar(data)
    manifest_bytes, signature = members[MANIFEST], members[SIGNATURE]
    signer_key_id = _trusted_signer(manifest_bytes, signature, trusted_keys)
    manifest = _parse_manifest(manifest_bytes)
    if manifest.signer_key_id != signer_key_id:
        raise PackageError(
            f"manifest: signer_key_id {manifest.signer_key_id} is not the key that signed it ({signer_key_id})"
        )
    for member in PAYLOAD_FILES:
        expected, content = manifest.files[member], members[member]
        if len(content) != expected["size"]:
            raise PackageError(f"{member} size mismatch: {len(content)} bytes, the manifest says {expected['size']}")
        if hashlib.sha256(content).hexdigest() != expected["sha256"]:
            raise PackageError(f"{member} sha256 mismatch: the file is not the one the manifest names")
    files = MappingProxyType({member: members[member] for member in PAYLOAD_FILES})
    return Package(manifest=manifest, manifest_bytes=manifest_bytes, signature=signature, files=files)


def check_version(manifest_version: int, installed_version: int | None, rollback: bool = False) -> VersionChange:
    """Decide whether a package version may replace the installed one in a slot.

    A higher version is an upgrade. An equal version is accepted as the same package re-sent (a deploy command
    retried after a lost ack): the registry never signs two packages with one name and version, so the signature
    binds that pair to one content. A lower version is refused unless the command is an explicit rollback.
    """
    _check_package_version(manifest_version)
    if installed_version is None:
        return VersionChange.INSTALL
    _check_package_version(installed_version)
    if manifest_version > installed_version:
        return VersionChange.UPGRADE
    if manifest_version == installed_version:
        return VersionChange.SAME
    if rollback:
        return VersionChange.ROLLBACK
    raise PackageError(
        f"version: package version {manifest_version} is lower than the installed version {installed_version}; "
        "only an explicit rollback command may install it"
    )


def _check_package_version(version) -> None:
    if not _is_int(version) or version < 1:
        raise PackageError(f"version: {version!r} is not a package version (an integer >= 1)")


def check_agent_version(min_agent_version: str, agent_version: str) -> None:
    """Refuse a package that needs a newer agent than `agent_version` (its leading dotted numbers compare)."""
    if not isinstance(min_agent_version, str) or not _AGENT_VERSION.fullmatch(min_agent_version):
        raise PackageError(f"min_agent_version: {min_agent_version!r} must look like '1.2.3'")
    running = re.match(r"\d+(\.\d+)*", agent_version) if isinstance(agent_version, str) else None
    if not running:
        raise PackageError(f"min_agent_version: agent version {agent_version!r} does not start with numbers")
    needed = [int(part) for part in min_agent_version.split(".")]
    have = [int(part) for part in running.group().split(".")]
    width = max(len(needed), len(have))
    if have + [0] * (width - len(have)) < needed + [0] * (width - len(needed)):
        raise PackageError(f"min_agent_version: the package needs agent {min_agent_version}, this is {agent_version}")


def _write_tar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for name, data in members:
        out += _tar_header(name, len(data))
        out += data
        out += bytes(-len(data) % TAR_BLOCK)
    return bytes(out + bytes(2 * TAR_BLOCK))


def _tar_header(name: str, size: int) -> bytes:
    """The one ustar header a package member may have: mode 0644, owner 0, mtime 0, no names or device numbers.

    Fixed values make a package's bytes a function of its contents; they are what Python's tarfile writes for such
    a member, so `tar` and `tarfile` list and extract packages as they are.
    """
    header = bytearray(TAR_BLOCK)
    for offset, value in (
        (0, name.encode()),
        (100, b"0000644\0"),
        (108, b"0000000\0"),
        (116, b"0000000\0"),
        (124, b"%011o\0" % size),
        (136, b"%011o\0" % 0),
        (148, b" " * 8),
        (156, b"0"),
        (257, b"ustar\0"),
        (263, b"00"),
    ):
        header[offset : offset + len(value)] = value
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _read_tar(data: bytes) -> dict[str, bytes]:
    members, offset = {}, 0
    for index, expected in enumerate(MEMBER_NAMES, start=1):
        header = data[offset : offset + TAR_BLOCK]
        if len(header) < TAR_BLOCK:
            raise PackageError(f"tar: truncated before member {index} ({expected})")
        if not any(header):
            raise PackageError(f"tar: the archive ends after {index - 1} members, {expected} is missing")
        name = _checked_member_name(header, index, expected)
        size = _member_size(header, name)
        canonical = _tar_header(name, size)
        if header != canonical:
            differing = next(f for f, at, width in _TAR_FIELDS if header[at : at + width] != canonical[at : at + width])
            raise PackageError(f"tar: header of {name} is not the canonical one (field {differing})")
        start = offset + TAR_BLOCK
        offset = start + size + (-size % TAR_BLOCK)
        if offset > len(data):
            raise PackageError(f"tar: member {name} truncated")
        if any(data[start + size : offset]):
            raise PackageError(f"tar: nonzero padding after member {name}")
        members[name] = data[start : start + size]
    trailer = data[offset:]
    if len(trailer) >= TAR_BLOCK and any(trailer[:TAR_BLOCK]):
        raise PackageError(f"tar: unexpected member after {SIGNATURE}")
    if trailer != bytes(2 * TAR_BLOCK):
        raise PackageError(f"tar: the archive must end with exactly two zero blocks after {SIGNATURE}")
    return members


def _checked_member_name(header: bytes, index: int, expected: str) -> str:
    """The member's path once its header checksum holds and the path is the one expected at this position."""
    checksum_field = header[148:156].rstrip(b"\0 ")
    if not re.fullmatch(rb"[0-7]{1,7}", checksum_field):
        raise PackageError(f"tar: member {index} ({expected}) has a malformed header checksum")
    stored = int(checksum_field, 8)
    if stored != sum(header[:148]) + 8 * ord(" ") + sum(header[156:]):
        raise PackageError(f"tar: header checksum mismatch in member {index} ({expected})")
    name = header[:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    name = (prefix + b"/" + name if prefix else name).decode("utf-8", errors="replace")
    kind = header[156:157]
    if kind not in (b"0", b"\0"):
        what = _TAR_TYPES.get(kind, f"entry of type {kind!r}")
        raise PackageError(f"tar: member {name!r} is a {what}; a package holds regular files only")
    if name.startswith("/"):
        raise PackageError(f"tar: member path {name!r} is absolute")
    if ".." in PurePosixPath(name).parts:
        raise PackageError(f"tar: member path {name!r} leaves the archive ('..')")
    if name != expected:
        raise PackageError(
            f"tar: unexpected member {name!r} where {expected} belongs (a package holds {', '.join(MEMBER_NAMES)} "
            "in that order)"
        )
    return name


def _member_size(header: bytes, name: str) -> int:
    field_bytes = header[124:136].rstrip(b"\0 ")
    if not re.fullmatch(rb"[0-7]{1,11}", field_bytes):
        raise PackageError(f"tar: member {name} has a malformed size field")
    size = int(field_bytes, 8)
    if size > MAX_MEMBER_BYTES[name]:
        raise PackageError(f"tar: member {name} is {size} bytes, over the limit of {MAX_MEMBER_BYTES[name]}")
    return size


def _trusted_signer(manifest_bytes: bytes, signature: bytes, trusted_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the trusted key whose signature this is; every trusted key is tried so the manifest stays unparsed."""
    if not isinstance(trusted_keys, Mapping) or not trusted_keys:
        raise PackageError("signature: no trusted signing keys to verify against")
    for key_id, public_key in trusted_keys.items():
        if not isinstance(public_key, Ed25519PublicKey) or key_id_of(public_key) != key_id:
            raise PackageError(f"signature: trusted key {key_id!r} is not an Ed25519 public key with that id")
    if len(signature) != SIGNATURE_BYTES:
        raise PackageError(f"signature: {SIGNATURE} is {len(signature)} bytes, an Ed25519 signature is 64")
    for key_id, public_key in trusted_keys.items():
        try:
            verify(manifest_bytes, signature, public_key)
        except CryptoError:
            continue
        return key_id
    raise PackageError(
        f"signature: the manifest is not signed by any trusted key ({', '.join(sorted(trusted_keys))}); "
        "it was altered, or its signer is unknown or retired"
    )


def _parse_manifest(manifest_bytes: bytes) -> Manifest:
    try:
        value = json.loads(manifest_bytes.decode("utf-8"), object_pairs_hook=_object_without_duplicates)
    except (ValueError, RecursionError) as error:
        raise PackageError(f"manifest: not valid UTF-8 JSON: {error}") from None
    if canonical_manifest_bytes(value) != manifest_bytes:
        raise PackageError("manifest: bytes are not canonical JSON (sorted keys, no whitespace, UTF-8)")
    return Manifest.from_dict(value)


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate keys in an object")
    return value


def _check_package_format(value) -> None:
    if value != PACKAGE_FORMAT or isinstance(value, bool):
        raise PackageError(f"manifest: package format {value!r} is not supported (this reader knows {PACKAGE_FORMAT})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(value, what: str, max_length: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_length or not value.isprintable():
        raise PackageError(f"manifest: {what} {value!r} must be printable text of 1-{max_length} characters")


def _check_text_list(value, what: str, max_length: int) -> None:
    if not isinstance(value, list) or not value:
        raise PackageError(f"manifest: {what} must be a non-empty list")
    for item in value:
        _check_text(item, f"{what} entry", max_length)
    if len(set(value)) != len(value):
        raise PackageError(f"manifest: {what} has duplicates")


def _check_input(spec) -> None:
    if not isinstance(spec, dict):
        raise PackageError("manifest: input must be an object with shape, dtype, layout and scale")
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) != 4 or not all(_is_int(n) and 1 <= n < 2**31 for n in shape):
        raise PackageError(f"manifest: input shape {shape!r} must be four positive integers [N, C, H, W]")
    if spec.get("dtype") != "uint8":
        raise PackageError(f"manifest: input dtype {spec.get('dtype')!r} must be 'uint8' (integer pixels)")
    if spec.get("layout") != "NCHW":
        raise PackageError(f"manifest: input layout {spec.get('layout')!r} must be 'NCHW'")
    scale = spec.get("scale")
    if not isinstance(scale, int | float) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
        raise PackageError(f"manifest: input scale {scale!r} must be a positive number")


def _check_files(files) -> None:
    if not isinstance(files, dict) or sorted(files) != sorted(PAYLOAD_FILES):
        names = sorted(files) if isinstance(files, dict) else files
        raise PackageError(f"manifest: files must list exactly {', '.join(PAYLOAD_FILES)}, got {names!r}")
    for member, entry in files.items():
        if not isinstance(entry, dict) or sorted(entry) != ["sha256", "size"]:
            raise PackageError(f"manifest: files[{member!r}] must be {{'sha256': hex, 'size': bytes}}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            raise PackageError(f"manifest: files[{member!r}].sha256 must be 64 lowercase hex digits")
        if not _is_int(entry["size"]) or not 0 <= entry["size"] <= MAX_MEMBER_BYTES[member]:
            raise PackageError(f"manifest: files[{member!r}].size must be 0-{MAX_MEMBER_BYTES[member]} bytes")


def _check_created_at(value) -> None:
    try:
        datetime.strptime(value, _CREATED_AT)
    except (TypeError, ValueError):
        raise PackageError(f"manifest: created_at {value!r} must be UTC time like 2025-01-31T12:00:00Z") from None


def _check_input_matches_model(spec: dict, model: Model) -> None:
    if len(model.inputs) != 1:
        return
    expected = list(model.tensors[model.inputs[0]].shape)
    if spec["shape"][1:] != expected:
        raise PackageError(f"input: shape {spec['shape']} does not match the model's input [N, {expected}]")


def _as_plain_json(value, what: str):
    """`value` as the manifest reader will see it (tuples become lists), or PackageError if JSON cannot hold it."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise PackageError(f"{what}: must be plain JSON (objects, lists, strings, finite numbers): {error}") from None


def _file_entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _payload(data, member: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview) or not len(data):
        raise PackageError(f"{member}: must be non-empty bytes")
    return bytes(data)


def _selftest_npz(selftest) -> bytes:
    """The self-test arrays as an uncompressed npz (what np.savez writes), with fixed timestamps and no pickle."""
    if not isinstance(selftest, Mapping) or not selftest:
        raise PackageError("selftest.npz: the self-test set must be a non-empty mapping of names to numpy arrays")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in selftest.items():
            if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
                raise PackageError(f"selftest.npz: array name {name!r} must be letters, digits, '_', '.' or '-'")
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise PackageError(f"selftest.npz: array {name!r} holds Python objects; only plain arrays are allowed")
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), npy.getvalue())
    return buffer.getvalue()
