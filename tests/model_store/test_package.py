import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from model_store.crypto import (
    CryptoError,
    Keyring,
    SigningKey,
    decrypt_package,
    encrypt_package,
    sign,
    unwrap_content_key,
    wrap_content_key,
)
from model_store.package import (
    MAX_MEMBER_BYTES,
    MEMBER_NAMES,
    TAR_BLOCK,
    Manifest,
    PackageError,
    VersionChange,
    build_package,
    canonical_manifest_bytes,
    check_agent_version,
    check_version,
    read_package,
)
from model_store.reference import run
from model_store.serialization import to_bytes
from tests.model_store.synthetic import small_model

CREATED_AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
INPUT_SPEC = {"shape": [1, 3, 8, 12], "dtype": "uint8", "layout": "NCHW", "scale": 1 / 255, "zero_point": 7}


@pytest.fixture(scope="module")
def signing_key():
    return SigningKey.generate()


@pytest.fixture(scope="module")
def model():
    return small_model(np.random.default_rng(3))


@pytest.fixture(scope="module")
def selftest(model):
    frames = np.random.default_rng(4).integers(0, 256, size=(2, 3, 8, 12), dtype=np.uint8)
    return {"frames": frames, "outputs.out": run(model, frames)["out"]}


@pytest.fixture(scope="module")
def package_args(model, selftest, signing_key):
    return dict(
        name="park-detector",
        version=3,
        task="detection",
        labels=["car", "person"],
        input_spec=INPUT_SPEC,
        ir_bytes=to_bytes(model),
        onnx_bytes=b"\x08\x07onnx-model-bytes" * 20,
        selftest=selftest,
        compression={"ratio": 7.5, "bits": {"conv": 3}},
        runtimes=["reference", "cpu-int8"],
        min_agent_version="0.1.0",
        signing_key=signing_key,
        created_at=CREATED_AT,
    )


@pytest.fixture(scope="module")
def package(package_args):
    return build_package(**package_args)


@pytest.fixture(scope="module")
def trusted(signing_key):
    return {signing_key.key_id: signing_key.public_key}


def members_of(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {info.name: archive.extractfile(info).read() for info in archive.getmembers()}


def regions(data: bytes) -> list[tuple[str, int, int, str]]:
    """(what, start, end, expected reason) of every byte range in a package, in order."""
    reasons = {
        "manifest.json": "signature:",
        "manifest.sig": "signature:",
        "model.ir": "model.ir sha256 mismatch",
        "model.onnx": "model.onnx sha256 mismatch",
        "selftest.npz": "selftest.npz sha256 mismatch",
    }
    found, offset = [], 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for info in archive.getmembers():
            found.append((f"{info.name} header", offset, offset + TAR_BLOCK, "tar:"))
            end = info.offset_data + info.size
            found.append((f"{info.name} data", info.offset_data, end, reasons[info.name]))
            offset = end + (-info.size % TAR_BLOCK)
            found.append((f"{info.name} padding", end, offset, "tar: nonzero padding"))
    found.append(("end-of-archive blocks", offset, len(data), "tar:"))
    return [region for region in found if region[2] > region[1]]


def canonical_tar(members: list[tuple[str, bytes]]) -> bytes:
    """A package tar written by Python's tarfile with the fixed header values the format prescribes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o644, 0, "", ""
            archive.addfile(info, io.BytesIO(data))
        end = archive.offset
    # tarfile pads the end to a 10 KiB record; a package ends with exactly the two zero blocks.
    return buffer.getvalue()[:end] + bytes(2 * TAR_BLOCK)


def resigned(package: bytes, key: SigningKey, manifest_bytes: bytes | None = None, **replaced: bytes) -> bytes:
    """The package with some members replaced and the (possibly replaced) manifest signed again by `key`."""
    members = members_of(package) | replaced
    if manifest_bytes is not None:
        members["manifest.json"] = manifest_bytes
    members["manifest.sig"] = sign(members["manifest.json"], key)
    return canonical_tar([(name, members[name]) for name in MEMBER_NAMES])


def manifest_dict(package: bytes) -> dict:
    return json.loads(members_of(package)["manifest.json"])


def test_a_built_package_reads_back_with_its_manifest_and_files(package, package_args, model, selftest, trusted):
    loaded = read_package(package, trusted)

    manifest = loaded.manifest
    assert (manifest.name, manifest.version, manifest.task) == ("park-detector", 3, "detection")
    assert manifest.labels == ["car", "person"] and manifest.runtimes == ["reference", "cpu-int8"]
    assert manifest.input == INPUT_SPEC and manifest.compression == package_args["compression"]
    assert manifest.signer_key_id == package_args["signing_key"].key_id
    assert manifest.created_at == "2025-03-01T12:30:00Z" and manifest.min_agent_version == "0.1.0"
    assert loaded.ir_bytes == package_args["ir_bytes"] and loaded.onnx_bytes == package_args["onnx_bytes"]
    assert manifest.files["model.ir"] == {
        "sha256": hashlib.sha256(package_args["ir_bytes"]).hexdigest(),
        "size": len(package_args["ir_bytes"]),
    }
    assert to_bytes(loaded.integer_model()) == to_bytes(model)
    arrays = loaded.selftest()
    assert set(arrays) == {"frames", "outputs.out"}
    for name, array in selftest.items():
        assert arrays[name].dtype == array.dtype and np.array_equal(arrays[name], array)
    assert np.array_equal(run(loaded.integer_model(), arrays["frames"])["out"], arrays["outputs.out"])


def test_a_package_is_a_plain_tar_of_the_five_members_in_order(package, package_args):
    with tarfile.open(fileobj=io.BytesIO(package)) as archive:
        infos = archive.getmembers()
        assert [info.name for info in infos] == list(MEMBER_NAMES)
        assert all(info.isreg() and info.mode == 0o644 for info in infos)
        assert archive.extractfile("model.onnx").read() == package_args["onnx_bytes"]
    manifest_bytes = members_of(package)["manifest.json"]
    assert manifest_bytes == canonical_manifest_bytes(json.loads(manifest_bytes))
    assert b" " not in manifest_bytes.replace(b"park-detector", b"")
    assert np.load(io.BytesIO(members_of(package)["selftest.npz"]), allow_pickle=False)["frames"].shape == (2, 3, 8, 12)


def test_the_same_inputs_build_the_same_bytes(package, package_args):
    assert build_package(**package_args) == package


def test_a_manifest_reads_back_equal_to_the_one_built_from_tuples(package_args, trusted):
    built = build_package(
        **package_args | {"labels": ("car", "person"), "input_spec": INPUT_SPEC | {"shape": (1, 3, 8, 12)}}
    )
    manifest = read_package(built, trusted).manifest
    assert manifest.labels == ["car", "person"] and manifest.input["shape"] == [1, 3, 8, 12]
    assert Manifest.from_dict(json.loads(canonical_manifest_bytes(manifest))) == manifest


def test_the_canonical_header_is_the_one_pythons_tarfile_writes(package):
    members = members_of(package)
    assert canonical_tar([(name, members[name]) for name in MEMBER_NAMES]) == package


def test_a_flipped_byte_anywhere_in_the_package_is_refused_naming_what_failed(package, trusted):
    rng = np.random.default_rng(0)
    covered = set()
    for what, start, end, reason in regions(package):
        # every header and padding byte; a sample of each member's data
        offsets = range(start, end) if "data" not in what else np.unique(rng.integers(start, end, size=48))
        for offset in offsets:
            for mask in (0x01, 0xFF):
                tampered = bytearray(package)
                tampered[offset] ^= mask
                with pytest.raises(PackageError) as refused:
                    read_package(bytes(tampered), trusted)
                assert str(refused.value).startswith(reason), (what, int(offset), str(refused.value))
        covered.add(what.split()[-1])
    assert covered == {"header", "data", "padding", "blocks"}


def test_every_truncation_and_any_extra_bytes_are_refused(package, trusted):
    for length in list(range(0, len(package), 97)) + [len(package) - 1, len(package) - TAR_BLOCK]:
        with pytest.raises(PackageError, match=r"^tar: "):
            read_package(package[:length], trusted)
    with pytest.raises(PackageError, match=r"exactly two zero blocks"):
        read_package(package + bytes(TAR_BLOCK), trusted)
    with pytest.raises(PackageError, match=r"tar: unexpected member after manifest.sig"):
        read_package(package[: -2 * TAR_BLOCK] + package[:TAR_BLOCK] + bytes(2 * TAR_BLOCK), trusted)


def tar_with(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o644, 0, "", ""
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    ("second_entry", "reason"),
    [
        (special("model.ir", tarfile.SYMTYPE, "/etc/passwd"), "tar: member 'model.ir' is a symbolic link"),
        (special("model.ir", tarfile.LNKTYPE, "manifest.json"), "tar: member 'model.ir' is a hard link"),
        (special("model.ir", tarfile.CHRTYPE), "tar: member 'model.ir' is a character device"),
        (special("model.ir", tarfile.BLKTYPE), "tar: member 'model.ir' is a block device"),
        (special("model.ir", tarfile.FIFOTYPE), "tar: member 'model.ir' is a FIFO"),
        (special("model.ir", tarfile.DIRTYPE), "tar: member 'model.ir/' is a directory"),
        (("/model.ir", b"x"), "tar: member path '/model.ir' is absolute"),
        (("../model.ir", b"x"), "tar: member path '../model.ir' leaves the archive"),
        (("models/../../model.ir", b"x"), "leaves the archive"),
        (("model.onnx", b"x"), "tar: unexpected member 'model.onnx' where model.ir belongs"),
        (("manifest.json", b"x"), "tar: unexpected member 'manifest.json' where model.ir belongs"),
        (("evil.sh", b"x"), "tar: unexpected member 'evil.sh'"),
    ],
)
def test_tar_structure_attacks_are_refused_before_anything_is_parsed(package, trusted, second_entry, reason):
    members = members_of(package)
    data = tar_with([("manifest.json", members["manifest.json"]), second_entry])
    with pytest.raises(PackageError) as refused:
        read_package(data, trusted)
    assert reason in str(refused.value)


def test_a_tar_missing_a_member_or_in_another_order_is_refused(package, trusted):
    members = members_of(package)
    missing = canonical_tar([(name, members[name]) for name in MEMBER_NAMES if name != "selftest.npz"])
    with pytest.raises(PackageError, match=r"unexpected member 'manifest.sig' where selftest.npz belongs"):
        read_package(missing, trusted)
    short = canonical_tar([(name, members[name]) for name in MEMBER_NAMES[:3]])
    with pytest.raises(PackageError, match=r"ends after 3 members, selftest.npz is missing"):
        read_package(short, trusted)


def test_a_member_over_its_size_limit_is_refused_from_the_header_alone(package, trusted):
    header = bytearray(tar_with([("manifest.json", bytes(MAX_MEMBER_BYTES["manifest.json"] + 1))])[:TAR_BLOCK])
    with pytest.raises(PackageError, match=r"tar: member manifest.json is 1048577 bytes, over the limit"):
        read_package(bytes(header) + bytes(2 * TAR_BLOCK), trusted)
    with pytest.raises(PackageError, match=f"tar: package is {len(package)} bytes, over the limit of 4096"):
        read_package(package, trusted, max_bytes=4096)


def test_a_tar_with_other_header_values_is_refused_naming_the_field(package, trusted):
    members = members_of(package)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in MEMBER_NAMES:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uname, info.gname = len(members[name]), 0o644, 1700000000, "", ""
            archive.addfile(info, io.BytesIO(members[name]))
    with pytest.raises(PackageError, match=r"tar: header of manifest.json is not the canonical one \(field mtime\)"):
        read_package(buffer.getvalue(), trusted)


def test_a_package_from_an_unknown_signer_is_refused(package, trusted):
    stranger = SigningKey.generate()
    with pytest.raises(PackageError, match="signature: the manifest is not signed by any trusted key"):
        read_package(resigned(package, stranger), trusted)
    with pytest.raises(PackageError, match="signature: no trusted signing keys"):
        read_package(package, {})


def test_trusted_keys_must_carry_their_own_ids(package, signing_key):
    with pytest.raises(PackageError, match="signature: trusted key '0000000000000000' is not an Ed25519 public key"):
        read_package(package, {"0000000000000000": signing_key.public_key})


def test_rotation_keeps_packages_readable_until_their_signer_is_retired(tmp_path, package_args):
    # given a package signed before a key rotation
    keyring = Keyring.create(tmp_path)
    old_package = build_package(**package_args | {"signing_key": keyring.active()})
    new_key = keyring.rotate()
    new_package = build_package(**package_args | {"signing_key": new_key, "version": 4})

    # then devices pinning the keyring's public keys read both
    assert read_package(old_package, keyring.public_keys()).manifest.version == 3
    assert read_package(new_package, keyring.public_keys()).manifest.signer_key_id == new_key.key_id

    # and once the old key is retired its packages are refused
    keyring.retire(read_package(old_package, keyring.public_keys()).manifest.signer_key_id)
    with pytest.raises(PackageError, match="signature:"):
        read_package(old_package, keyring.public_keys())
    assert read_package(new_package, keyring.public_keys()).manifest.version == 4


def test_a_signed_manifest_must_be_canonical_and_name_its_signer(package, signing_key, trusted):
    manifest = manifest_dict(package)
    spaced = json.dumps(manifest, sort_keys=True, indent=1).encode()
    with pytest.raises(PackageError, match="manifest: bytes are not canonical JSON"):
        read_package(resigned(package, signing_key, spaced), trusted)

    unsorted = json.dumps(dict(reversed(manifest.items())), separators=(",", ":")).encode()
    with pytest.raises(PackageError, match="manifest: bytes are not canonical JSON"):
        read_package(resigned(package, signing_key, unsorted), trusted)

    other_signer = canonical_manifest_bytes(manifest | {"signer_key_id": "0123456789abcdef"})
    with pytest.raises(PackageError, match="manifest: signer_key_id 0123456789abcdef is not the key that signed it"):
        read_package(resigned(package, signing_key, other_signer), trusted)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": 0}, "manifest: version 0 must be an integer >= 1"),
        ({"version": True}, "manifest: version True"),
        ({"package_format": 2}, "manifest: package format 2 is not supported"),
        ({"extra": 1}, "manifest: unknown fields ['extra']"),
        ({"labels": []}, "manifest: labels must be a non-empty list"),
        ({"labels": ["car", "car"]}, "manifest: labels has duplicates"),
        ({"runtimes": ["reference", ""]}, "manifest: runtimes entry '' must be printable text"),
        ({"input": INPUT_SPEC | {"dtype": "float32"}}, "manifest: input dtype 'float32' must be 'uint8'"),
        ({"input": INPUT_SPEC | {"shape": [1, 3, 8]}}, "manifest: input shape [1, 3, 8] must be four"),
        ({"input": INPUT_SPEC | {"scale": 0}}, "manifest: input scale 0 must be a positive number"),
        ({"files": {}}, "manifest: files must list exactly model.ir, model.onnx, selftest.npz"),
        ({"created_at": "yesterday"}, "manifest: created_at 'yesterday' must be UTC time"),
        ({"min_agent_version": "latest"}, "manifest: min_agent_version 'latest' must look like '1.2.3'"),
        ({"name": "../etc"}, "manifest: name '../etc' must be"),
    ],
)
def test_a_signed_manifest_with_an_invalid_schema_is_refused(package, signing_key, trusted, change, reason):
    manifest_bytes = canonical_manifest_bytes(manifest_dict(package) | change)
    with pytest.raises(PackageError) as refused:
        read_package(resigned(package, signing_key, manifest_bytes), trusted)
    assert str(refused.value).startswith(reason)


def test_a_missing_manifest_field_is_named(package, signing_key, trusted):
    manifest = manifest_dict(package)
    del manifest["task"]
    with pytest.raises(PackageError, match=r"manifest: missing fields \['task'\]"):
        read_package(resigned(package, signing_key, canonical_manifest_bytes(manifest)), trusted)


def test_signed_manifest_json_that_is_not_json_is_refused(package, signing_key, trusted):
    for manifest_bytes in (b"\xff\xfe", b'{"a":1,"a":2}', b"[1,2]", b'{"a":NaN}'):
        with pytest.raises(PackageError, match=r"^manifest: "):
            read_package(resigned(package, signing_key, manifest_bytes), trusted)


def test_a_replaced_file_of_another_size_is_refused_by_size(package, signing_key, trusted):
    with pytest.raises(PackageError, match=r"model.onnx size mismatch: 3 bytes, the manifest says 360"):
        read_package(resigned(package, signing_key, **{"model.onnx": b"abc"}), trusted)


def test_an_encrypted_package_round_trips_through_a_device_key(package, trusted):
    device = X25519PrivateKey.generate()
    ciphertext, content_key = encrypt_package(package)
    wrapped = wrap_content_key(content_key, device.public_key(), "device-1")

    opened = decrypt_package(ciphertext, unwrap_content_key(wrapped, device, "device-1"))

    assert read_package(opened, trusted).manifest.version == 3
    with pytest.raises(CryptoError, match="authentication failed"):
        unwrap_content_key(wrapped, X25519PrivateKey.generate(), "device-1")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ir_bytes": b"not an IR"}, "model.ir: "),
        ({"onnx_bytes": b""}, "model.onnx: must be non-empty bytes"),
        ({"selftest": {}}, "selftest.npz: the self-test set must be a non-empty mapping"),
        ({"selftest": {"frames": np.array([object()])}}, "selftest.npz: array 'frames' holds Python objects"),
        ({"selftest": {"../x": np.zeros(2)}}, "selftest.npz: array name '../x'"),
        ({"input_spec": INPUT_SPEC | {"shape": [1, 3, 16, 16]}}, "input: shape [1, 3, 16, 16] does not match"),
        ({"compression": {"ratio": float("nan")}}, "compression: must be plain JSON"),
        ({"compression": {"layers": np.int64(3)}}, "compression: must be plain JSON"),
        ({"labels": ("car", "car")}, "manifest: labels has duplicates"),
        ({"version": 0}, "manifest: version 0"),
        ({"signing_key": "key"}, "signing key must be a SigningKey"),
        ({"created_at": datetime(2025, 1, 1)}, "created_at must be a timezone-aware datetime"),
    ],
)
def test_build_package_refuses_what_would_not_read_back(package_args, change, reason):
    with pytest.raises(PackageError) as refused:
        build_package(**package_args | change)
    assert str(refused.value).startswith(reason)


def test_manifest_canonical_bytes_are_sorted_compact_utf8():
    manifest = Manifest(
        name="lot-7",
        version=1,
        task="detection",
        labels=["voiture", "piéton"],
        input=INPUT_SPEC,
        compression={},
        files={name: {"sha256": "0" * 64, "size": 1} for name in ("model.ir", "model.onnx", "selftest.npz")},
        runtimes=["reference"],
        min_agent_version="1",
        signer_key_id="0123456789abcdef",
        created_at="2025-01-01T00:00:00Z",
    )
    encoded = canonical_manifest_bytes(manifest)
    assert "piéton".encode() in encoded
    assert encoded.startswith(b'{"compression":{},"created_at":"2025-01-01T00:00:00Z","files":{')
    assert Manifest.from_dict(json.loads(encoded)) == manifest


def test_check_version_allows_upgrades_and_resends_and_lower_versions_only_as_rollback():
    assert check_version(1, None) is VersionChange.INSTALL
    assert check_version(5, 4) is VersionChange.UPGRADE
    assert check_version(4, 4) is VersionChange.SAME
    assert check_version(3, 4, rollback=True) is VersionChange.ROLLBACK
    assert check_version(5, 4, rollback=True) is VersionChange.UPGRADE
    with pytest.raises(PackageError, match="version: package version 3 is lower than the installed version 4"):
        check_version(3, 4)
    with pytest.raises(PackageError, match="version: 0 is not a package version"):
        check_version(0, None)
    with pytest.raises(PackageError, match="version: '4' is not a package version"):
        check_version(5, "4")


def test_check_agent_version_compares_dotted_numbers():
    check_agent_version("0.1.0", "0.1.0")
    check_agent_version("0.1", "0.1.0")
    check_agent_version("0.9.0", "0.10.0")
    check_agent_version("1.2.0", "1.2.0.dev3")
    with pytest.raises(PackageError, match=r"min_agent_version: the package needs agent 0.10.0, this is 0.9.9"):
        check_agent_version("0.10.0", "0.9.9")
    with pytest.raises(PackageError, match="does not start with numbers"):
        check_agent_version("1.0", "unknown")
    with pytest.raises(PackageError, match="min_agent_version: 'next' must look like"):
        check_agent_version("next", "1.0")


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes_raise_only_package_error(data):
    key = SigningKey.generate()
    with pytest.raises(PackageError):
        read_package(data, {key.key_id: key.public_key})


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_fuzz_truncated_or_mutated_packages_raise_only_package_error(package, trusted, data):
    # module-scoped fixtures: the same valid package for every example
    tampered = bytearray(package)
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(package) - 1), st.integers(1, 255)), min_size=1, max_size=4)
    )
    for offset, mask in edits:
        tampered[offset] ^= mask
    cut = data.draw(st.integers(0, len(package)))
    inserted = data.draw(st.binary(max_size=600))
    tampered[cut:cut] = inserted
    tampered = tampered[: data.draw(st.integers(0, len(tampered)))]
    if bytes(tampered) == package:
        return
    with pytest.raises(PackageError):
        read_package(bytes(tampered), trusted)
