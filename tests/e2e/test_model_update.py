"""A model update end to end, with real processes: compress → deploy → download → verify → self-test → activate
→ observe → commit → detect → events in Postgres; then a package that fails its self-test is rolled back and the
device keeps detecting with the old model.

Real pieces: the live server (enrollment), a Celery worker publishing the command outbox, the blob server and
the MQTT ingest (`manage.py blob_server`, `manage.py mqtt_ingest`) on the test database, Mosquitto, and a real
`edge-agent run` process with a synthetic camera. The package is the shipped detector compressed by the
registry's own job (int8 projection, a few calibration frames).
"""

import hashlib
import re
import signal
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from edge_agent.update import PAUSE_ENV
from edge_agent.video import SyntheticSource
from fleet_server.devices.models import Command, Device
from fleet_server.events.models import Event
from fleet_server.registry import services as registry
from fleet_server.registry.compression_jobs import run_job
from fleet_server.registry.content_keys import seal_content_key
from fleet_server.registry.models import CompressionJob, JobStatus, Package
from fleet_server.registry.storage import blob_store, signing_keyring
from fleet_server.rollouts.services import deploy
from model_store.crypto import decrypt_package, encrypt_package
from model_store.package import build_package, read_package
from smartpark.detector import DEFAULT_CHECKPOINT
from tests.conftest import edge_agent, manage
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CAMERA, SEED, VIEW = "lot-a", 103, "lot"
QUICK_INT8 = {"calibration_frames": 4, "selftest_frames": 2, "eval_frames_per_condition": 0}


def _compressed_detector(park) -> Package:
    family = registry.create_family(park.tenant, "lot-detector", ["vehicle", "person"])
    version = registry.register_version(family, str(DEFAULT_CHECKPOINT))
    job = registry.start_compression_job(version, "int8", QUICK_INT8, enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED, CompressionJob.objects.get(pk=job.pk).error
    return Package.objects.get(job=job)


def _next_version(package: Package, selftest_shift: int = 0) -> Package:
    """The next version of `package`, properly signed; with `selftest_shift` its self-test expects outputs its
    model does not give (as a package built from a broken export would): every device must refuse it."""
    key = signing_keyring().active()
    plaintext = decrypt_package(blob_store().read(package.blob_sha256), registry.package_content_key(package))
    good = read_package(plaintext, {key.key_id: key.public_key})
    model = good.integer_model()
    selftest = good.selftest()
    for name in model.outputs:
        selftest[name] = (selftest[name].astype(np.int16) + selftest_shift).clip(0, 255).astype(np.uint8)
    manifest = good.manifest
    bad = build_package(
        name=manifest.name, version=package.version + 1, task=manifest.task, labels=list(manifest.labels),
        input_spec=dict(manifest.input), ir_bytes=good.ir_bytes, onnx_bytes=good.onnx_bytes, selftest=selftest,
        compression=dict(manifest.compression), runtimes=list(manifest.runtimes),
        min_agent_version=manifest.min_agent_version, signing_key=key,
    )  # fmt: skip
    ciphertext, content_key = encrypt_package(bad)
    digest = blob_store().put_bytes(ciphertext)
    broken = Package.objects.get(pk=package.pk)
    broken.pk = broken.job = None
    broken.version = package.version + 1
    broken.blob_sha256, broken.size_bytes = digest, len(ciphertext)
    broken.plaintext_sha256 = hashlib.sha256(bad).hexdigest()
    broken.sealed_content_key = seal_content_key(content_key, digest)
    broken.save()
    return broken


def _final(command: Command, timeout: float) -> Command:
    def done():
        command.refresh_from_db()
        return command if command.is_final else None

    return wait_until(done, timeout=timeout, interval=0.5, message=f"command {command.name} to end")


def _active_slot(device: Device) -> dict | None:
    device.refresh_from_db()
    return next((slot for slot in device.model_slots if slot["active"]), None)


def _agent(state_dir) -> list[str]:
    return edge_agent(state_dir, "run", "--source", f"{CAMERA}=synthetic:{SEED}:{VIEW}", "--fps", "4",
                      "--observe", "3", "--threads", "1", "--telemetry-interval", "2")  # fmt: skip


@pytest.fixture
def fleet(park, enroll, processes, platform_env, registry_env, ingest_process, celery_worker_process):
    """The platform's processes and one enrolled agent (not started); returns (env, state_dir, device)."""

    def _start(**blob_server_env):
        env = {**platform_env, **registry_env}
        celery_worker_process(**registry_env)
        argv = manage("blob_server", "--client-id", f"blobs-{park.pk}-{id(env)}")
        processes.start("blob_server", argv, {**env, **blob_server_env})
        state_dir, device_id = enroll("lot-box")
        return env, state_dir, Device.objects.get(pk=device_id)

    return _start


def _kill(processes, name: str) -> None:
    processes.signal(name, signal.SIGKILL)
    processes.children[name].wait(10)


def _zones() -> dict:
    return SyntheticSource(SEED, camera=CAMERA, view=VIEW).scene_config().to_dict()


def test_a_deployed_model_runs_on_the_device_and_a_failing_update_rolls_back(park, fleet, processes):
    # given: the platform's processes, one enrolled agent with a synthetic lot camera, a compressed detector
    env, state_dir, device = fleet()
    device_id = device.pk
    processes.start("agent", _agent(state_dir), env)
    package = _compressed_detector(park)
    wait_until(lambda: Device.objects.get(pk=device_id).runtimes, timeout=60, message="the agent's status")
    zones = _zones()

    # when: the operator deploys it with the camera's zones
    deployment = deploy(package, [device], scene_configs=[zones], observe_s=3)

    # then: it is downloaded, verified, self-tested, activated, observed and committed
    command = _final(deployment.targets.get().command, timeout=180)
    assert command.state == "healthy", f"{command.state}: {command.reason}\n{processes.log('agent')[-3000:]}"
    wait_until(lambda: _active_slot(device), timeout=30, message="the status to show the new slot")
    assert _active_slot(device)["version"] == package.version
    # and the device detects with it: occupancy events of its camera reach Postgres
    wait_until(
        lambda: Event.objects.filter(device_id=device_id, rule="occupancy", model_version=package.version).exists(),
        timeout=120,
        message="occupancy events from the deployed model",
    )
    event = Event.objects.filter(device_id=device_id).first()
    assert event.camera == CAMERA and event.site_id == park.pk

    # when: a package whose self-test fails is deployed
    broken = _next_version(package, selftest_shift=60)
    failed = _final(deploy(broken, [device], observe_s=3).targets.get().command, timeout=180)

    # then: it is refused before activation, the old model stays active and keeps detecting
    assert failed.state in ("failed", "rolled_back"), failed.state
    assert failed.reason.startswith("selftest on cpu-int8"), failed.reason
    refused_at = timezone.now()
    assert _active_slot(device)["version"] == package.version
    wait_until(
        lambda: Event.objects.filter(
            device_id=device_id, model_version=package.version, received_at__gt=refused_at - timedelta(seconds=1)
        ).exists(),
        timeout=120,
        message="events from the old model after the refused update",
    )


def test_an_agent_killed_mid_download_and_mid_observation_ends_committed_then_rolled_back(
    park, fleet, processes, settings
):
    # given: small chunks served one at a time, so the download takes a few seconds
    settings.BLOB_CHUNK_BYTES = 4096
    env, state_dir, device = fleet(BLOB_WINDOW_PER_DEVICE="1")
    package = _compressed_detector(park)
    processes.start("agent", _agent(state_dir), env)
    wait_until(lambda: Device.objects.get(pk=device.pk).runtimes, timeout=60, message="the agent's status")

    # when: the agent is SIGKILLed in the middle of the download, then started again
    command = deploy(package, [device], scene_configs=[_zones()], observe_s=3).targets.get().command
    wait_until(
        lambda: (Command.objects.get(pk=command.pk).progress or 0) >= 10, timeout=60, interval=0.05, message="10 %"
    )
    _kill(processes, "agent")
    processes.start("agent-restarted", _agent(state_dir), env)

    # then: the download goes on from the chunks on disk and the update is committed
    assert _final(command, timeout=180).state == "healthy", command.reason
    resumed = re.search(r"resuming with (\d+) of (\d+) chunks", processes.log("agent-restarted"))
    assert resumed and 0 < int(resumed[1]) < int(resumed[2]), processes.log("agent-restarted")[-2000:]

    # when: the next version is SIGKILLed while it is being observed (activated, health not yet confirmed)
    _kill(processes, "agent-restarted")
    processes.start("agent-observing", _agent(state_dir), {**env, PAUSE_ENV: "observe"})
    wait_until(lambda: _active_slot(device), timeout=60, message="the agent's status after the restart")
    second = deploy(_next_version(package), [device], observe_s=3).targets.get().command
    wait_until(lambda: (state_dir / "update" / "paused").exists(), timeout=120, message="the pause in observe")
    _kill(processes, "agent-observing")
    processes.start("agent-again", _agent(state_dir), env)

    # then: the restart rolls back to the committed version, which keeps detecting
    second = _final(second, timeout=120)
    assert second.state == "rolled_back" and "interrupted by a restart in observe" in second.reason, second.reason
    wait_until(
        lambda: (_active_slot(device) or {}).get("version") == package.version and Device.objects.get(
            pk=device.pk).update_state == "idle",
        timeout=60, message="the status to show the old slot active",
    )  # fmt: skip
    restarted_at = timezone.now()
    wait_until(
        lambda: Event.objects.filter(device_id=device.pk, model_version=package.version,
                                     received_at__gt=restarted_at).exists(),
        timeout=120, message="events from the committed model after the rollback",
    )  # fmt: skip
