"""manage.py import_model, compress_model and verify_package."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from fleet_server.registry import services
from fleet_server.registry.models import ModelFamily, ModelVersion, Package
from fleet_server.registry.storage import blob_store
from model_store.crypto import Keyring, decrypt_package
from smartpark.detector import DEFAULT_CHECKPOINT


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_import_model_creates_the_family_then_adds_versions(tenant):
    first = _run(
        "import_model", str(DEFAULT_CHECKPOINT), "--family", "lot", "--tenant", "acme", "--labels", "vehicle,person"
    )
    assert "created family lot" in first and "lot v1" in first
    assert "lot v2" in _run("import_model", str(DEFAULT_CHECKPOINT), "--family", "lot", "--tenant", "acme")
    assert ModelFamily.objects.get(name="lot").labels == ["vehicle", "person"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--family", "new", "--tenant", "acme"], "give --labels"),
        (["--family", "new", "--tenant", "nobody", "--labels", "a"], "no tenant"),
        (["--family", "new", "--tenant", "acme", "--labels", "a,b,c"], "detects 2 class"),
        (["--family", "new", "--tenant", "acme", "--labels", "a,b", "--input-shape", "1,3,10,10"], "multiples of 16"),
    ],
)
def test_import_model_refuses_with_the_reason(tenant, args, message):
    with pytest.raises(CommandError, match=message):
        _run("import_model", str(DEFAULT_CHECKPOINT), *args)
    assert not ModelVersion.objects.exists()


def test_import_model_refuses_a_file_that_is_no_checkpoint(tenant, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(CommandError, match="not a PyTorch checkpoint"):
        _run("import_model", str(junk), "--family", "lot", "--tenant", "acme", "--labels", "vehicle,person")
    assert list(blob_store().digests()) == []


@pytest.fixture
def compressed(model_version) -> Package:
    output = _run(
        "compress_model", "lot-detector:1", "--preset", "3-bit", "--steps", "2",
        *("--set", "calibration_frames=2", "--set", "selftest_frames=1", "--set", "eval_frames_per_condition=0"),
    )  # fmt: skip
    assert "admm" in output and "| layer |" in output and "package lot-detector v1" in output
    return Package.objects.get()


def test_compress_model_runs_a_job_and_prints_progress(compressed):
    assert compressed.job.config["admm_steps"] == 2 and compressed.job.status == "succeeded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lot-detector:1", "--preset", "int8", "--steps", "3"], "trains nothing"),
        (["lot-detector:1", "--preset", "int8", "--set", "admm_steps=3"], "does not take admm_steps"),
        (["lot-detector:1", "--preset", "int8", "--set", "frames"], "NAME=VALUE"),
        (["lot-detector:9", "--preset", "int8"], "no model version"),
        (["lot-detector", "--preset", "int8"], "id or FAMILY:N"),
    ],
)
def test_compress_model_refuses_with_the_reason(model_version, args, message):
    with pytest.raises(CommandError, match=message):
        _run("compress_model", *args)


def test_verify_package_checks_encrypted_and_plain_packages(compressed, tmp_path, settings):
    encrypted = tmp_path / "package.spkg.enc"
    encrypted.write_bytes(blob_store().read(compressed.blob_sha256))
    output = _run("verify_package", str(encrypted), "--from-registry")
    assert output.rstrip().endswith("self-test on 1 frame(s)") and "OK" in output
    assert json.loads(output[: output.rindex("}") + 1])["name"] == "lot-detector"
    content_key = services.package_content_key(compressed)
    assert "OK" in _run("verify_package", str(encrypted), "--content-key", content_key.hex())

    plain = tmp_path / "package.tar"
    plain.write_bytes(decrypt_package(encrypted.read_bytes(), content_key))
    assert "OK" in _run("verify_package", str(plain), "--keyring", str(settings.MODEL_SIGNING_KEYRING_DIR))
    public = tmp_path / "keys.json"
    public.write_text(json.dumps(Keyring(settings.MODEL_SIGNING_KEYRING_DIR).export_public()))
    assert "OK" in _run("verify_package", str(plain), "--public-keys", str(public))


def test_verify_package_refuses_tampered_and_untrusted_packages(compressed, tmp_path):
    content_key = services.package_content_key(compressed)
    plaintext = decrypt_package(blob_store().read(compressed.blob_sha256), content_key)
    tampered = tmp_path / "tampered.tar"
    middle = len(plaintext) // 2
    tampered.write_bytes(plaintext[:middle] + bytes([plaintext[middle] ^ 1]) + plaintext[middle + 1 :])
    with pytest.raises(CommandError, match="sha256 mismatch"):
        _run("verify_package", str(tampered))
    plain = tmp_path / "package.tar"
    plain.write_bytes(plaintext)
    with pytest.raises(CommandError, match="not signed by any trusted key"):
        _run("verify_package", str(plain), "--keyring", str(Keyring.create(tmp_path / "other").directory))
    encrypted = tmp_path / "package.enc"
    encrypted.write_bytes(blob_store().read(compressed.blob_sha256))
    with pytest.raises(CommandError, match="give --content-key"):
        _run("verify_package", str(encrypted))
    with pytest.raises(CommandError, match="authentication failed"):
        _run("verify_package", str(encrypted), "--content-key", "00" * 32)


def test_compress_model_overrides_do_not_collide_with_djangos_settings_option():
    from fleet_server.registry.management.commands.compress_model import Command

    parser = Command().create_parser("manage.py", "compress_model")
    options = parser.parse_args(["lot-detector:1", "--preset", "int8"])
    assert options.preset_settings == [] and options.settings is None
    options = parser.parse_args(["lot-detector:1", "--preset", "int8", "--set", "calibration_frames=2"])
    assert options.preset_settings == ["calibration_frames=2"]
