"""A worker running compression jobs: progress, the signed and encrypted package, cancel, failures."""

import io
import threading

import numpy as np
import pytest
from django.db import connections

from compression.sensitivity import most_sensitive
from fleet_server.registry import services
from fleet_server.registry.compression_jobs import RUNTIMES, run_job
from fleet_server.registry.models import CompressionJob, JobStatus, Package
from fleet_server.registry.storage import blob_store, signing_keyring
from model_store import reference
from model_store.crypto import decrypt_package
from model_store.package import read_package
from tests.fleet_server.registry.conftest import LABELS, TINY
from tests.helpers import wait_until


def _open_package(package: Package):
    ciphertext = blob_store().read(package.blob_sha256)
    plaintext = decrypt_package(ciphertext, services.package_content_key(package))
    return read_package(plaintext, signing_keyring().public_keys())


def test_an_int8_job_produces_a_signed_encrypted_package_with_a_selftest(model_version):
    job = services.start_compression_job(model_version, "int8", TINY["int8"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.step == job.total > 0 and job.finished_at and job.heartbeat_at
    assert job.report["compression_ratio"] > 3 and "| layer |" in job.report["markdown"]
    assert {"calibration", "lowering", "packaging"} <= set(job.timings)
    package = job.package
    assert (package.version, package.codebook, package.runtimes) == (1, "int8", RUNTIMES)
    assert package.size_bytes == blob_store().size(package.blob_sha256)

    opened = _open_package(package)
    manifest = opened.manifest
    assert (manifest.name, manifest.version, manifest.labels) == ("lot-detector", 1, LABELS)
    assert manifest.input["shape"] == [1, 3, 240, 320] and manifest.signer_key_id == package.signer_key_id
    assert manifest.compression["preset"] == "int8" and manifest.to_dict() == package.manifest
    model = opened.integer_model()
    selftest = opened.selftest()
    frames = selftest[model.inputs[0]]
    assert frames.shape == (2, 3, 240, 320) and frames.dtype == np.uint8
    outputs = reference.run(model, frames)
    for name in model.outputs:
        np.testing.assert_array_equal(outputs[name], selftest[name])
    # The ciphertext is not the package: without the content key it reads as nothing.
    assert blob_store().read(package.blob_sha256)[:4] == b"SPEP"

    again = services.start_compression_job(model_version, "data-free", TINY["data-free"], enqueue=False)
    assert run_job(again.pk) == JobStatus.SUCCEEDED
    assert Package.objects.get(job=again).version == 2  # monotonic per family, across presets


def test_a_pruned_3_bit_job_streams_its_loss_curve(model_version):
    job = services.start_compression_job(model_version, "3-bit-sparse", TINY["3-bit-sparse"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    # 2 pruning steps x 1 step of fine-tuning, 2 ADMM steps, 1 fine-tuning step: one loss each.
    assert [step for step, _ in job.loss_curve] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(loss) for _, loss in job.loss_curve)
    assert job.total == 5 + len(["calibration", "lowering", "packaging"])
    phases = " ".join(job.log)
    assert "prune" in phases and "admm" in phases and "finetune" in phases
    package = job.package
    assert package.codebook == "pow2-4" and job.report["sparsity"] > 0.5
    assert package.compression_ratio > 20


def test_a_mixed_job_gives_wide_layers_ternary_and_narrow_ones_3_bit(model_version):
    job = services.start_compression_job(model_version, "ternary-mixed", TINY["ternary-mixed"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    # The IR names layers with underscores for the module path's dots.
    codebooks = {layer["name"]: layer["codebook"] for layer in job.report["layers"]}
    assert {name for name, codebook in codebooks.items() if codebook == "ternary"} == {
        "stage16_0_0",
        *(f"stage16_{block}_body_{conv}_0" for block in (1, 2, 3) for conv in (0, 1)),
    }
    assert codebooks["stage4_0_0"] == codebooks["merge8_0"] == "pow2-4" and codebooks["stem_0"] == "int8"
    assert job.package.codebook == job.package.manifest["compression"]["codebook"] == "ternary+pow2-4"
    assert job.package.compression_ratio > 14  # 3-bit alone packs this detector about 11x


def test_a_sensitive_job_gives_3_bit_to_a_few_measured_layers_and_ternary_to_the_rest(model_version):
    job = services.start_compression_job(model_version, "ternary-sensitive", TINY["ternary-sensitive"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    layers = job.report["layers"]
    weights = {
        codebook: sum(layer["weights"] for layer in layers if layer["codebook"] == codebook)
        for codebook in {layer["codebook"] for layer in layers}
    }
    assert set(weights) == {"int8", "ternary", "pow2-4"}
    assert 0 < weights["pow2-4"] <= 0.05 * sum(weights.values()) < weights["ternary"]
    # Each candidate's measured loss increase is in the report; the int8 first and last layers were no candidates.
    measured = {layer["name"]: layer["sensitivity"] for layer in layers if layer["codebook"] != "int8"}
    assert all(value is not None for value in measured.values())
    assert all(layer["sensitivity"] is None for layer in layers if layer["codebook"] == "int8")
    # and the pow2-4 layers are the ones those measurements choose within 5 % of the weights.
    sizes = {layer["name"]: layer["weights"] for layer in layers}
    budget = int(0.05 * sum(sizes.values()))
    chosen = {layer["name"] for layer in layers if layer["codebook"] == "pow2-4"}
    assert chosen == set(most_sensitive(measured, sizes, budget))
    assert any("sensitivity" in line for line in job.log)
    assert job.package.codebook == job.package.manifest["compression"]["codebook"] == "ternary+pow2-4"
    assert job.package.compression_ratio > 17  # ternary alone packs this detector about 19x, 3-bit 11x


def test_a_smaller_input_shape_gets_frames_resized_to_it(family, checkpoint_bytes):
    version = services.register_version(family, io.BytesIO(checkpoint_bytes), input_shape=(1, 3, 64, 96))
    config = {**TINY["int8"], "eval_frames_per_condition": 2}
    job = services.start_compression_job(version, "int8", config, enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    opened = _open_package(job.package)
    assert opened.manifest.input["shape"] == [1, 3, 64, 96]
    model = opened.integer_model()
    assert opened.selftest()[model.inputs[0]].shape == (2, 3, 64, 96)
    # The held-out frames are 240x320: no mAP for this input, and the log says why.
    assert job.package.metric_after is None and any("no mAP" in line for line in job.log)


def test_the_metric_is_measured_on_the_integer_model(model_version):
    config = {**TINY["int8"], "eval_frames_per_condition": 1}
    job = services.start_compression_job(model_version, "int8", config, enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    package = Package.objects.get(job=job)
    assert package.metric_name == "mAP50"
    assert 0 <= package.metric_after <= 1 and 0 <= package.metric_before <= 1
    assert package.manifest["compression"]["metric_after"] == package.metric_after


def test_a_missing_checkpoint_fails_the_job_with_the_reason(model_version):
    job = services.start_compression_job(model_version, "int8", TINY["int8"], enqueue=False)
    blob_store().delete(model_version.blob_sha256)
    assert run_job(job.pk) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "BlobNotFound" in job.error and job.finished_at
    assert not Package.objects.exists()


def test_a_redelivered_message_does_not_run_a_job_again(model_version):
    job = services.start_compression_job(model_version, "int8", TINY["int8"], enqueue=False)
    services.cancel_job(job)
    assert run_job(job.pk) is None
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.started_at is None


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_job_stops_it_and_keeps_no_package(family, checkpoint_bytes):
    model_version = services.register_version(family, io.BytesIO(checkpoint_bytes))
    config = {**TINY["3-bit"], "admm_steps": 2000}
    job = services.start_compression_job(model_version, "3-bit", config, enqueue=False)
    outcome = {}

    def work():
        try:
            outcome["status"] = run_job(job.pk)
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_until(lambda: CompressionJob.objects.get(pk=job.pk).step >= 2, timeout=60, message="training steps")
        services.cancel_job(CompressionJob.objects.get(pk=job.pk))
    finally:
        worker.join(60)
    job.refresh_from_db()
    assert outcome["status"] == JobStatus.CANCELLED
    assert job.status == JobStatus.CANCELLED and job.error == "cancelled by a user"
    assert 2 <= job.step < 2000 and not Package.objects.exists()
