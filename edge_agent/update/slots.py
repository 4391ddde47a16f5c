"""The two slots (``a`` and ``b``) and the ``active`` pointer, on disk, each changed only by atomic renames.

Layout under the updater's state directory::

    active              {"slot": "a" | "b" | null, "previous": "a" | "b" | null}: what runs, and the rollback target
    a/ b/               one slot each:
        package.tar     the decrypted, signed model package (absent in a scene-only slot before any model)
        scenes.json     the cameras' scene configs (smartpark.geometry.SceneConfig.to_dict() each)
        slot.json       model, version, runtime, scene_version, package sha256, committed
    .install-<slot>/    a slot being written; renamed onto <slot> once every file in it is fsynced
    .trash-<slot>/      an old slot being deleted

A slot directory is therefore either absent, a complete old slot or a complete new one; never half written. The
pointer is one small JSON file replaced by rename, so a switch of model and scene configs is one atomic step.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edge_agent.files import fsync_directory, read_json, write_private_json
from model_store.package import Package, PackageError, read_package
from smartpark.geometry import GeometryError, SceneConfig, validate_scene_config

SLOTS = ("a", "b")
POINTER_FILE = "active"
PACKAGE_FILE = "package.tar"
SCENES_FILE = "scenes.json"
SLOT_FILE = "slot.json"
_SCENE_KEYS = {"camera", "width", "height", "version", "zones", "lines"}
_ZONE_KEYS = {"name", "kind", "polygon", "params"}
_LINE_KEYS = {"name", "a", "b", "params"}


class SlotError(RuntimeError):
    """A slot cannot be used (missing, unreadable, or its package no longer verifies); the message says why."""


@dataclass(frozen=True)
class ActiveModel:
    """What the camera pipeline runs: one slot's model and scene configs, always switched together."""

    slot: str
    model: str
    version: int
    package: Package | None  # None for a scene-only slot before any model
    runtime: str  # the runtime chosen for the package ("" without a package)
    scene_configs: dict[str, SceneConfig]  # by camera id
    scene_version: int


def other_slot(slot: str | None) -> str:
    return "b" if slot == "a" else "a"


def scene_config_from_dict(raw) -> SceneConfig:
    """A SceneConfig from ``SceneConfig.to_dict()`` output, strictly: unknown keys are refused as well.

    The geometry checks are ``smartpark.geometry.validate_scene_config`` (zones inside the frame, simple
    polygons, unique names, ...); raises GeometryError naming the bad part.
    """
    if not isinstance(raw, dict):
        raise GeometryError("a scene config is an object")
    where = f"scene config for camera {raw.get('camera')!r}"
    if unknown := sorted(set(raw) - _SCENE_KEYS):
        raise GeometryError(f"{where}: unknown fields {unknown}")
    for key, allowed in (("zones", _ZONE_KEYS), ("lines", _LINE_KEYS)):
        items = raw.get(key, [])
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and (unknown := sorted(set(item) - allowed)):
                raise GeometryError(f"{where}: {key[:-1]} {item.get('name')!r} has unknown fields {unknown}")
    try:
        return validate_scene_config(raw)
    except GeometryError as error:
        raise GeometryError(f"{where}: {error}") from None


def parse_scene_configs(raws) -> dict[str, SceneConfig]:
    """Scene configs by camera; a camera named twice is refused."""
    configs: dict[str, SceneConfig] = {}
    for raw in raws:
        config = scene_config_from_dict(raw)
        if config.camera in configs:
            raise GeometryError(f"camera {config.camera!r} has two scene configs in one command")
        configs[config.camera] = config
    return configs


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class SlotStore:
    """The slots and the active pointer under ``root``; packages are re-verified with ``trusted_keys`` on load."""

    def __init__(self, root: Path, trusted_keys: dict):
        self.root = Path(root)
        self.trusted_keys = trusted_keys

    # --- the pointer ---------------------------------------------------------------------------

    def pointer(self) -> tuple[str | None, str | None]:
        """(active slot, previous slot): the running slot and the committed slot a rollback returns to."""
        data = read_json(self.root / POINTER_FILE, default={}) or {}
        slot, previous = data.get("slot"), data.get("previous")
        return (slot if slot in SLOTS else None), (previous if previous in SLOTS else None)

    def set_pointer(self, slot: str | None, previous: str | None) -> None:
        """Switch atomically (temp file, fsync, rename, fsync of the directory)."""
        write_private_json(self.root / POINTER_FILE, {"slot": slot, "previous": previous})

    # --- slot contents ------------------------------------------------------------------------

    def path(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise SlotError(f"no slot named {slot!r}")
        return self.root / slot

    def info(self, slot: str) -> dict | None:
        """The slot's slot.json, or None when the slot is empty."""
        return read_json(self.path(slot) / SLOT_FILE)

    def write(self, slot: str, package_tar: bytes | None, scene_configs: dict[str, SceneConfig], meta: dict) -> None:
        """Replace ``slot`` with a new one: written and fsynced in a temp dir, then renamed into place."""
        staging = self.root / f".install-{slot}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        meta = dict(meta, slot=slot, committed=False)
        if package_tar is not None:
            _write_synced(staging / PACKAGE_FILE, package_tar)
            meta["package_sha256"] = hashlib.sha256(package_tar).hexdigest()
        scenes = [config.to_dict() for _, config in sorted(scene_configs.items())]
        _write_synced(staging / SCENES_FILE, json.dumps(scenes, indent=1).encode())
        _write_synced(staging / SLOT_FILE, json.dumps(meta, indent=1).encode())
        fsync_directory(staging)
        self.remove(slot)
        os.rename(staging, self.path(slot))
        fsync_directory(self.root)

    def remove(self, slot: str) -> None:
        """Delete a slot: renamed out of the way first, so a crash never leaves a partial slot under its name."""
        path = self.path(slot)
        if path.exists():
            trash = self.root / f".trash-{slot}"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(path, trash)
            fsync_directory(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def mark_committed(self, slot: str) -> None:
        meta = self.info(slot)
        if meta is None:
            raise SlotError(f"slot {slot} is empty")
        if not meta.get("committed"):
            write_private_json(self.path(slot) / SLOT_FILE, dict(meta, committed=True))

    def clean_temp(self) -> None:
        """Remove what a crash left of a slot being written or deleted."""
        for slot in SLOTS:
            for name in (f".install-{slot}", f".trash-{slot}"):
                shutil.rmtree(self.root / name, ignore_errors=True)

    def load(self, slot: str) -> ActiveModel:
        """The slot as an ActiveModel, its package verified again (signature, hashes) and its sha256 checked."""
        meta = self.info(slot)
        if meta is None:
            raise SlotError(f"slot {slot} is empty")
        path = self.path(slot)
        package = None
        if meta.get("package_sha256"):
            try:
                data = (path / PACKAGE_FILE).read_bytes()
            except OSError as error:
                raise SlotError(f"slot {slot}: cannot read its package: {error}") from None
            if hashlib.sha256(data).hexdigest() != meta["package_sha256"]:
                raise SlotError(f"slot {slot}: the package on disk is not the one installed (sha256 mismatch)")
            try:
                package = read_package(data, self.trusted_keys)
            except PackageError as error:
                raise SlotError(f"slot {slot}: its package no longer verifies: {error}") from None
        try:
            scene_configs = parse_scene_configs(json.loads((path / SCENES_FILE).read_text()))
        except (OSError, ValueError) as error:
            raise SlotError(f"slot {slot}: unreadable scene configs: {error}") from None
        return ActiveModel(
            slot=slot,
            model=meta.get("model", ""),
            version=int(meta.get("version", 0)),
            package=package,
            runtime=meta.get("runtime", ""),
            scene_configs=scene_configs,
            scene_version=int(meta.get("scene_version", 0)),
        )

    def package_bytes(self, slot: str) -> bytes | None:
        meta = self.info(slot)
        if meta is None or not meta.get("package_sha256"):
            return None
        return (self.path(slot) / PACKAGE_FILE).read_bytes()
