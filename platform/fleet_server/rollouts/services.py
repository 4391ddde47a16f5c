"""Deploying a package to devices and rolling devices back; views, the API and `manage.py deploy` call these.

Every target is checked before anything is sent, and all deploy commands (with their outbox rows) are
saved in one transaction, so a bad target changes nothing.
"""

import base64
import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

import fleet_protocol as fp
from fleet_server.devices.models import Command, Device
from fleet_server.devices.services import CommandError, send_command
from fleet_server.registry.models import Package
from fleet_server.registry.services import package_content_key
from fleet_server.registry.storage import blob_store
from fleet_server.rollouts.models import Deployment, DeploymentTarget
from model_store.crypto import wrap_content_key
from smartpark.geometry import GeometryError, validate_scene_config

logger = logging.getLogger(__name__)

MAX_OBSERVE_S = 86400
MAX_SCENE_CONFIGS = 64


class DeploymentError(ValueError):
    """A deployment or rollback that cannot be sent; the message says which target and why."""


def check_scene_configs(scene_configs) -> list[dict]:
    """Validated scene configs (smartpark.geometry), normalized to SceneConfig.to_dict(); one per camera."""
    if scene_configs in (None, ""):
        return []
    if not isinstance(scene_configs, list):
        raise DeploymentError("scene_configs must be a list of scene configs (one per camera)")
    if len(scene_configs) > MAX_SCENE_CONFIGS:
        raise DeploymentError(f"at most {MAX_SCENE_CONFIGS} scene configs per deployment")
    configs = []
    for index, raw in enumerate(scene_configs):
        try:
            configs.append(validate_scene_config(raw))
        except GeometryError as exc:
            raise DeploymentError(f"scene config {index + 1}: {exc}") from None
    cameras = [config.camera for config in configs]
    repeated = sorted({camera for camera in cameras if cameras.count(camera) > 1})
    if repeated:
        raise DeploymentError(f"one scene config per camera; repeated: {', '.join(repeated)}")
    return [config.to_dict() for config in configs]


def check_observe_s(observe_s) -> float | None:
    if observe_s is None:
        return None
    if not 0 <= observe_s <= MAX_OBSERVE_S:
        raise DeploymentError(f"observe_s must be between 0 and {MAX_OBSERVE_S} seconds, got {observe_s}")
    return float(observe_s)


def _chunk_size() -> int:
    size = settings.BLOB_CHUNK_BYTES
    if not 1024 <= size <= fp.MAX_CHUNK_BYTES:
        raise DeploymentError(f"BLOB_CHUNK_BYTES must be between 1024 and {fp.MAX_CHUNK_BYTES}, got {size}")
    return size


def _unique(devices: Iterable[Device]) -> list[Device]:
    return list({device.pk: device for device in devices}.values())


def check_target(package: Package, device: Device) -> None:
    """Refuse a device that may not or cannot take this package, saying why."""
    if device.site.tenant_id != package.family.tenant_id:
        raise DeploymentError(
            f"device {device.name} ({device.pk}) belongs to another tenant than package "
            f"{package.family.name} v{package.version}"
        )
    if device.revoked_at is not None:
        raise DeploymentError(f"device {device.name} ({device.pk}) is revoked and takes no deployments")
    if device.runtimes and not set(device.runtimes) & set(package.runtimes):
        raise DeploymentError(
            f"device {device.name} ({device.pk}) runs {', '.join(device.runtimes)}, but package "
            f"{package.family.name} v{package.version} supports only {', '.join(package.runtimes) or 'no runtime'}"
        )


def configs_per_device(devices: list[Device], scene_configs: list[dict]) -> dict[str, list[dict]]:
    """Each device's share of the deployment's zones: those of its registered cameras (all of them for a
    device that registered none). A zone set for a camera no target device has is refused, saying which."""
    shares, claimed = {}, set()
    for device in devices:
        known = {camera.camera_id for camera in device.cameras.all()}
        shares[device.pk] = [config for config in scene_configs if not known or config["camera"] in known]
        claimed |= {config["camera"] for config in shares[device.pk]}
    if unclaimed := sorted({config["camera"] for config in scene_configs} - claimed):
        cameras = sorted({camera.camera_id for device in devices for camera in device.cameras.all()})
        raise DeploymentError(
            f"no target device has camera {', '.join(unclaimed)} (their cameras: {', '.join(cameras) or 'none'})"
        )
    return shares


@transaction.atomic
def deploy(
    package: Package,
    devices: Iterable[Device],
    *,
    created_by=None,
    scene_configs=None,
    observe_s: float | None = None,
    name: str = "",
    note: str = "",
) -> Deployment:
    """Send `package` to every device: one deploy command each, its content key wrapped for that device."""
    devices = _unique(devices)
    if not devices:
        raise DeploymentError("choose at least one device to deploy to")
    configs = check_scene_configs(scene_configs)
    observe_s = check_observe_s(observe_s)
    chunk_size = _chunk_size()
    for device in devices:
        check_target(package, device)
    shares = configs_per_device(devices, configs)
    if not blob_store().exists(package.blob_sha256):
        raise DeploymentError(f"the encrypted package {package.blob_sha256} is missing from the blob store")
    content_key = package_content_key(package)
    deployment = Deployment.objects.create(
        package=package,
        name=name or f"{package.family.name} v{package.version}",
        note=note,
        scene_configs=configs,
        observe_s=observe_s,
        created_by=created_by,
    )
    args = {
        "model": package.family.name,
        "version": package.version,
        "blob_sha256": package.blob_sha256,
        "blob_size": package.size_bytes,
        "chunk_size": chunk_size,
    }
    if observe_s is not None:
        args["observe_s"] = observe_s
    for device in devices:
        wrapped = base64.b64encode(wrap_content_key(content_key, device.public_key, device.pk)).decode()
        try:
            command = send_command(
                device,
                "deploy",
                {**args, "scene_configs": shares[device.pk], "wrapped_key": wrapped},
                created_by=created_by,
                ttl_s=settings.DEPLOY_COMMAND_TTL_S,
            )
        except CommandError as exc:
            raise DeploymentError(f"device {device.name} ({device.pk}): {exc}") from None
        DeploymentTarget.objects.create(deployment=deployment, device=device, command=command)
    logger.info(
        "deployment %s: %s v%s to %d devices", deployment.pk, package.family.name, package.version, len(devices)
    )
    return deployment


@transaction.atomic
def rollback(
    devices: Iterable[Device], reason: str = "", created_by=None, *, deployment: Deployment | None = None
) -> list[Command]:
    """Send each device a rollback command (back to its previous slot, model and scene configs together).

    With `deployment`, every device must be one of its targets, and each target remembers its rollback.
    """
    devices = _unique(devices)
    if not devices:
        raise DeploymentError("choose at least one device to roll back")
    reason = (reason or "").strip()[:500]
    targets = {}
    if deployment is not None:
        targets = {target.device_id: target for target in deployment.targets.filter(device__in=devices)}
        strangers = [device.name for device in devices if device.pk not in targets]
        if strangers:
            raise DeploymentError(f"not targets of {deployment}: {', '.join(strangers)}")
    commands = []
    for device in devices:
        if device.revoked_at is not None:
            raise DeploymentError(f"device {device.name} ({device.pk}) is revoked and takes no commands")
        try:
            command = send_command(device, "rollback", {"reason": reason}, created_by=created_by)
        except CommandError as exc:
            raise DeploymentError(f"device {device.name} ({device.pk}): {exc}") from None
        if device.pk in targets:
            targets[device.pk].rollback_command = command
            targets[device.pk].save(update_fields=["rollback_command"])
        commands.append(command)
    return commands
