"""services.deploy and services.rollback: commands per device, wrapped keys, and refusals that send nothing."""

import base64

import msgspec
import pytest
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.models import Camera, Command, CommandState
from fleet_server.mqtt_bridge.models import OutboxMessage
from fleet_server.registry.services import package_content_key
from fleet_server.rollouts import services
from fleet_server.rollouts.models import Deployment
from model_store.crypto import unwrap_content_key
from tests.fleet_server.rollouts.conftest import keyed_device

SCENE = {
    "camera": "lot-east", "width": 320, "height": 240,
    "zones": [{"name": "space-1", "kind": "parking_space", "polygon": [[10, 10], [60, 10], [60, 50], [10, 50]]}],
}  # fmt: skip


def _nothing_sent():
    return not Command.objects.exists() and not OutboxMessage.objects.exists() and not Deployment.objects.exists()


def test_deploy_sends_each_device_its_own_wrapped_content_key(package, boxes, operator, settings):
    # given
    settings.DEPLOY_COMMAND_TTL_S = 3600
    devices = [device for device, _ in boxes]

    # when
    deployment = services.deploy(package, devices, created_by=operator, observe_s=30)

    # then: one deploy command per device, each published through the outbox
    targets = list(deployment.targets.select_related("command", "device"))
    assert sorted(t.device.name for t in targets) == ["box-a", "box-b"]
    assert OutboxMessage.objects.count() == 2
    content_key = package_content_key(package)
    for (device, private_key), target in zip(boxes, sorted(targets, key=lambda t: t.device.name), strict=True):
        command = target.command
        assert (command.name, command.device, command.created_by) == ("deploy", device, operator)
        assert (command.args["blob_sha256"], command.args["blob_size"]) == (package.blob_sha256, package.size_bytes)
        assert (command.args["model"], command.args["version"]) == ("lot-detector", 1)
        assert command.args["chunk_size"] == settings.BLOB_CHUNK_BYTES
        assert command.args["observe_s"] == 30
        assert 3500 < (command.expires_at - command.created_at).total_seconds() <= 3600
        wrapped = base64.b64decode(command.args["wrapped_key"])
        assert unwrap_content_key(wrapped, private_key, device.pk) == content_key
        assert target.state == CommandState.QUEUED
    # the wire message is a valid DeployCommand for that device
    message = fp.decode(bytes(OutboxMessage.objects.get(correlation_id=targets[0].command.pk).payload))
    assert isinstance(message.body, fp.DeployCommand)
    assert message.body.command_id == str(targets[0].command.pk)


def test_a_key_wrapped_for_one_device_does_not_open_for_another(package, boxes):
    (box_a, _), (_, key_b) = boxes
    deployment = services.deploy(package, [box_a])
    wrapped = base64.b64decode(deployment.targets.get().command.args["wrapped_key"])
    with pytest.raises(ValueError):
        unwrap_content_key(wrapped, key_b, box_a.pk)


def test_scene_configs_are_validated_and_sent_normalized(package, boxes):
    device, _ = boxes[0]
    Camera.objects.create(device=device, camera_id="lot-east")

    deployment = services.deploy(package, [device], scene_configs=[SCENE])

    sent = deployment.targets.get().command.args["scene_configs"]
    assert sent[0]["camera"] == "lot-east" and sent[0]["version"] == 1 and sent[0]["lines"] == []
    assert deployment.scene_configs == sent


def test_each_device_gets_the_zones_of_its_own_cameras(package, boxes):
    (east, _), (west, _) = boxes[0], boxes[1]
    Camera.objects.create(device=east, camera_id="lot-east")
    Camera.objects.create(device=west, camera_id="lot-west")

    deployment = services.deploy(package, [east, west], scene_configs=[SCENE, {**SCENE, "camera": "lot-west"}])

    sent = {t.device_id: [c["camera"] for c in t.command.args["scene_configs"]] for t in deployment.targets.all()}
    assert sent == {east.pk: ["lot-east"], west.pk: ["lot-west"]}


@pytest.mark.parametrize(
    ("scene_configs", "message"),
    [
        ([{**SCENE, "zones": [{**SCENE["zones"][0], "polygon": [[0, 0], [50, 50], [50, 0], [0, 50]]}]}], "space-1"),
        ([SCENE, SCENE], "one scene config per camera"),
        ([{**SCENE, "camera": "gate"}], "no target device has camera gate"),
        ("not a list", "must be a list"),
    ],
)
def test_bad_scene_configs_are_refused_with_nothing_sent(package, boxes, scene_configs, message):
    device, _ = boxes[0]
    Camera.objects.create(device=device, camera_id="lot-east")
    with pytest.raises(services.DeploymentError, match=message):
        services.deploy(package, [device], scene_configs=scene_configs)
    assert _nothing_sent()


def test_another_tenants_device_is_refused_and_nothing_is_sent(package, boxes, other_site):
    rival, _ = keyed_device(other_site, "rival-box")
    with pytest.raises(services.DeploymentError, match=r"rival-box .* belongs to another tenant"):
        services.deploy(package, [boxes[0][0], rival])
    assert _nothing_sent()


def test_a_revoked_device_is_refused_and_nothing_is_sent(package, boxes):
    revoked, _ = boxes[1]
    revoked.revoked_at = timezone.now()
    revoked.save()
    with pytest.raises(services.DeploymentError, match=r"box-b .* is revoked"):
        services.deploy(package, [boxes[0][0], revoked])
    assert _nothing_sent()


def test_a_device_without_a_runtime_of_the_package_is_refused(package, site):
    fpga_only, _ = keyed_device(site, "fpga-box", runtimes=["fpga-sim"])
    with pytest.raises(services.DeploymentError, match="runs fpga-sim, but package lot-detector v1 supports only"):
        services.deploy(package, [fpga_only])
    assert _nothing_sent()


def test_a_package_whose_blob_is_gone_is_refused(package, boxes):
    package.blob_sha256 = "f" * 64
    package.save()
    with pytest.raises(services.DeploymentError, match="missing from the blob store"):
        services.deploy(package, [boxes[0][0]])
    assert _nothing_sent()


def test_deploying_to_nobody_and_bad_observation_times_are_refused(package, boxes):
    with pytest.raises(services.DeploymentError, match="at least one device"):
        services.deploy(package, [])
    with pytest.raises(services.DeploymentError, match="observe_s"):
        services.deploy(package, [boxes[0][0]], observe_s=-1)
    assert _nothing_sent()


def test_rollback_sends_a_rollback_command_and_remembers_it_on_the_target(package, boxes, operator):
    devices = [device for device, _ in boxes]
    deployment = services.deploy(package, devices)

    commands = services.rollback(devices[:1], "stuck on verifying", operator, deployment=deployment)

    assert [(c.name, c.device, c.args) for c in commands] == [
        ("rollback", devices[0], {"reason": "stuck on verifying"})
    ]
    message = msgspec.json.decode(bytes(OutboxMessage.objects.get(correlation_id=commands[0].pk).payload))
    assert message["body"]["name"] == "rollback"
    assert deployment.targets.get(device=devices[0]).rollback_command == commands[0]
    assert deployment.targets.get(device=devices[1]).rollback_command is None


def test_rollback_of_a_device_outside_the_deployment_is_refused(package, boxes, site):
    deployment = services.deploy(package, [boxes[0][0]])
    stranger, _ = keyed_device(site, "stranger")
    with pytest.raises(services.DeploymentError, match="stranger"):
        services.rollback([stranger], "", deployment=deployment)
    assert not Command.objects.filter(name="rollback").exists()
