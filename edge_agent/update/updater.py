"""The agent's update state machine at work: deploy, scene-config update and rollback commands, crash-safe.

``Updater.handle(command)`` drives the machine of ``edge_agent.update.machine`` from IDLE back to IDLE, doing
each state's work against the two slots of ``edge_agent.update.slots`` and reporting progress and the final
outcome through ``report`` (cmd/ack bodies: downloading(%), verifying, installed, then one of healthy, failed,
rolled_back). Before each state's work the machine's record is persisted atomically, so ``resume()`` after a
crash knows what may be half done:

* DOWNLOAD .. SELFTEST (nothing switched yet; the old model kept running and still does): start the command
  again from its first state: the download continues from the chunks on disk, verification, decryption,
  installation into the inactive slot (rewritten from scratch) and the self-test are repeated. A command
  that expired meanwhile ends in FAILURE ("interrupted by a restart in <state>; the command has expired").
* ACTIVATE, OBSERVE (the new slot may be running, its health never confirmed): ROLLBACK to the previous slot.
* COMMIT, ROLLBACK, FAILURE: redo that state's work (each is idempotent) and finish.
* IDLE: report the last command's final outcome again if it may not have been sent.

Fault injection, for tests only: with ``EDGE_AGENT_UPDATE_PAUSE_IN=<state>`` (a ``State`` value such as
``observe``) the updater persists that state, writes the same text to ``<state_dir>/paused`` and then sleeps for
ever, so a test can SIGKILL it exactly there; ``EDGE_AGENT_UPDATE_PAUSE_IN=<state>:done`` pauses after that
state's work and before the next state is persisted. Unset (always, outside tests) it does nothing.
"""

import base64
import binascii
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

import fleet_protocol as fp
from edge_agent.files import ensure_private_dir, write_private
from edge_agent.runtimes import RuntimeUnavailable, choose_runtime, create_runtime
from edge_agent.runtimes.selftest import run_selftest
from edge_agent.update.machine import (
    BEFORE_ACTIVATE,
    NEEDS_ROLLBACK,
    Outcome,
    Record,
    State,
    load_record,
    next_state,
    save_record,
)
from edge_agent.update.slots import SLOTS, ActiveModel, SlotError, SlotStore, other_slot, parse_scene_configs
from model_store.crypto import CryptoError, decrypt_package, unwrap_content_key
from model_store.package import PackageError, check_agent_version, check_version, read_package
from smartpark.geometry import GeometryError, SceneConfig

logger = logging.getLogger(__name__)

PAUSE_ENV = "EDGE_AGENT_UPDATE_PAUSE_IN"
PAUSED_FILE = "paused"
_PROGRESS_STEP = 5.0  # percent between two downloading acks


_KINDS = {
    fp.DeployCommand: Outcome.DEPLOY,
    fp.SceneConfigCommand: Outcome.SCENE_CONFIG,
    fp.RollbackCommand: Outcome.ROLLBACK_COMMAND,
}


class UpdateFailed(Exception):
    """A state's work failed for a reason the platform should read (it becomes the ack's reason)."""


class Updater:
    """Runs update commands one at a time against the slots under ``state_dir`` (see the module docstring).

    ``fetch(command, progress)`` downloads the command's blob and returns the path of the complete ciphertext
    (``progress(done_bytes, total_bytes)`` as it goes; raise on failure); the file stays the caller's.
    ``report(ack)`` sends a cmd/ack body. ``activate(model)`` makes the camera pipeline run ``model`` (None: no
    model) and raises if it cannot. ``health()`` returns the pipeline's counters since start-up, e.g.
    ``{"fps": 9.5, "errors": 0, "frames": 1200, "detections": 340}``; the observe window fails when the fps of
    its last sample is below ``min_fps``, when ``errors`` grows, or when ``frames`` does not grow.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        device_id: str,
        device_private_key,
        trusted_keys: dict,
        agent_version: str,
        fetch: Callable[[fp.DeployCommand, Callable[[int, int], None]], Path],
        report: Callable[[fp.CommandAckBody], None],
        activate: Callable[[ActiveModel | None], None],
        health: Callable[[], dict],
        preferred_runtimes: Sequence[str] = (),
        default_observe_s: float = 30.0,
        min_fps: float = 0.5,
        selftest_tolerance_lsb: int | None = None,
        observe_poll_s: float = 1.0,
    ):
        self.state_dir = ensure_private_dir(Path(state_dir))
        self.device_id = device_id
        self.device_private_key = device_private_key
        self.trusted_keys = trusted_keys
        self.agent_version = agent_version
        self._fetch = fetch
        self._report = report
        self._activate = activate
        self._health = health
        self.preferred_runtimes = list(preferred_runtimes)
        self.default_observe_s = default_observe_s
        self.min_fps = min_fps
        self.selftest_tolerance_lsb = selftest_tolerance_lsb
        self.observe_poll_s = observe_poll_s
        self._store = SlotStore(self.state_dir, trusted_keys)
        self._record = load_record(self.state_dir)
        self._busy = threading.Lock()
        # What DECRYPT and VERIFY hand to INSTALL within one run (a restart never resumes before ACTIVATE).
        self._staged_tar: bytes | None = None
        self._staged_scenes: dict[str, SceneConfig] | None = None
        self._staged_scene_version = 0
        self._active = self._load_pointed()

    # --- what the agent reads -------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._record.state.value

    @property
    def command_id(self) -> str | None:
        return self._record.command_id

    @property
    def outcome(self) -> tuple[fp.AckState, str] | None:
        """The last command's final ack state and reason (for the command runner's final ack), if any."""
        last = self._record.last
        return None if last is None else (fp.AckState(last["state"]), last["reason"])

    @property
    def last_command_id(self) -> str | None:
        """The command ``outcome`` belongs to (after resume(): the command a restart interrupted, if any)."""
        last = self._record.last
        return None if last is None else last["command_id"]

    def active(self) -> ActiveModel | None:
        return self._active

    def slots(self) -> list[fp.ModelSlot]:
        active, _ = self._store.pointer()
        result = []
        for slot in SLOTS:
            meta = self._store.info(slot)
            if meta is not None:
                result.append(
                    fp.ModelSlot(
                        slot=slot,
                        model=str(meta.get("model", ""))[:128],
                        version=int(meta.get("version", 0)),
                        active=slot == active,
                    )
                )
        return result

    # --- commands -------------------------------------------------------------------------------

    def resume(self) -> None:
        """At start-up: finish or roll back whatever the persisted record says was under way."""
        with self._busy:
            self._resume()

    def handle(self, command) -> str:
        """Run one DeployCommand, SceneConfigCommand or RollbackCommand to its end; returns the final ack's note.

        Progress and the final ack (healthy, failed or rolled_back) go to ``report``; ``outcome`` holds the final
        state and reason afterwards. Blocks until the command is final; one command at a time.
        """
        if type(command) not in _KINDS:
            raise TypeError(
                f"the updater runs deploy, scene_config and rollback commands, not {type(command).__name__}"
            )
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("another update command is running")
        try:
            if self._record.state != State.IDLE:
                self._resume()
            active, previous = self._store.pointer()
            record = Record(
                state=State.IDLE, command=msgspec.to_builtins(command), previous=active, last=self._record.last
            )
            if isinstance(command, fp.RollbackCommand):
                reason = f"rollback command: {command.reason}" if command.reason else "rollback command"
                record = record.evolve(rollback_to=previous, reason=reason)
            else:
                record = record.evolve(target=other_slot(active), rollback_to=active)
            self._staged_tar = self._staged_scenes = None
            self._drive(record, next_state(State.IDLE, _KINDS[type(command)]))
            return self._record.last["reason"]
        finally:
            self._staged_tar = self._staged_scenes = None
            self._busy.release()

    # --- the machine ----------------------------------------------------------------------------

    def _drive(self, record: Record, state: State) -> None:
        """Persist each state, then do its work, then follow the table, until IDLE; then send the final ack."""
        while True:
            record = record.evolve(state=state)
            if state == State.INSTALL:
                record = record.evolve(target_written=True)
            if state == State.IDLE:
                record = record.evolve(command=None, target=None, previous=None, rollback_to=None, reason="")
                record = record.evolve(blob_path=None, runtime="", target_written=False)
            self._persist(record)
            self._pause(state.value)
            if state == State.IDLE:
                break
            outcome, record = self._work(state, record)
            self._pause(f"{state.value}:done")
            state = next_state(state, outcome)
        self._report_last()

    def _work(self, state: State, record: Record) -> tuple[Outcome, Record]:
        handlers = {
            State.DOWNLOAD: self._download,
            State.VERIFY: self._verify,
            State.DECRYPT: self._decrypt,
            State.INSTALL: self._install,
            State.SELFTEST: self._selftest,
            State.ACTIVATE: self._activate_target,
            State.OBSERVE: self._observe,
            State.COMMIT: self._commit,
            State.ROLLBACK: self._rollback,
            State.FAILURE: self._failure,
        }
        try:
            return handlers[state](record)
        except UpdateFailed as failure:
            reason = str(failure)
        except Exception as error:  # any other error in a state is a failure edge too, never a crash
            logger.exception("update: %s failed", state)
            reason = f"{state}: {type(error).__name__}: {error}"
        if state == State.FAILURE:
            # FAILURE's work is cleanup; even if it fails the command ends here, consistently failed.
            return Outcome.OK, record.evolve(last=self._last(record, fp.AckState.FAILED, record.reason))
        logger.warning("update %s: %s failed: %s", record.command_id, state, reason)
        return Outcome.FAIL, record.evolve(reason=reason[:500])

    def _resume(self) -> None:
        self._store.clean_temp()
        record = self._record
        state = record.state
        if state == State.IDLE:
            if record.last is not None and not record.last.get("reported"):
                self._report_last()
            return
        reason = f"interrupted by a restart in {state}"
        logger.warning("update %s: %s", record.command_id, reason)
        if state in BEFORE_ACTIVATE:
            command = self._command(record)
            if command.expires_at is not None and command.expires_at < time.time():
                self._drive(record.evolve(reason=f"{reason}; the command has expired"), State.FAILURE)
                return
            # Nothing before ACTIVATE touched the running model, and every step is repeatable: start the
            # command again from its first state. The download continues from the chunks already on disk.
            logger.info("update %s: continuing after the restart", record.command_id)
            first = next_state(State.IDLE, _KINDS[type(command)])
            self._drive(record.evolve(blob_path=None, runtime=""), first)
        elif state in NEEDS_ROLLBACK:
            self._drive(record.evolve(reason=reason, rollback_to=record.previous), State.ROLLBACK)
        else:  # COMMIT, ROLLBACK, FAILURE: each state's work is idempotent; redo it and finish
            self._drive(record, state)

    def _persist(self, record: Record) -> None:
        save_record(self.state_dir, record)
        self._record = record

    def _pause(self, label: str) -> None:
        if os.environ.get(PAUSE_ENV) == label:
            write_private(self.state_dir / PAUSED_FILE, label.encode())
            while True:
                time.sleep(3600)

    # --- each state's work ----------------------------------------------------------------------

    def _download(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        sent = [-_PROGRESS_STEP]

        def progress(done: int, total: int) -> None:
            percent = min(100.0, 100.0 * done / max(total or command.blob_size, 1))
            if percent - sent[0] >= _PROGRESS_STEP or (percent == 100.0 and sent[0] < 100.0):
                sent[0] = percent
                self._send(record.command_id, fp.AckState.DOWNLOADING, progress=round(percent, 1))

        progress(0, command.blob_size)
        try:
            path = Path(self._fetch(command, progress))
        except Exception as error:
            raise UpdateFailed(f"download: {type(error).__name__}: {error}") from None
        return Outcome.OK, record.evolve(blob_path=str(path))

    def _verify(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        self._send(record.command_id, fp.AckState.VERIFYING)
        current = self._active
        try:
            new_configs = parse_scene_configs(command.scene_configs)
        except GeometryError as error:
            raise UpdateFailed(f"verify: {error}") from None
        self._staged_scenes = {**(current.scene_configs if current else {}), **new_configs}
        current_scene_version = current.scene_version if current else 0
        if isinstance(command, fp.SceneConfigCommand):
            if command.version < current_scene_version:
                raise UpdateFailed(
                    f"verify: scene version {command.version} is lower than the installed {current_scene_version}"
                )
            self._staged_scene_version = command.version
            return Outcome.SCENE_ONLY, record
        self._staged_scene_version = max([current_scene_version, *(c.version for c in new_configs.values())])
        path = Path(record.blob_path or "")
        digest, size = hashlib.sha256(), 0
        try:
            with path.open("rb") as blob:
                while chunk := blob.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as error:
            raise UpdateFailed(f"verify: cannot read the downloaded blob: {error}") from None
        if size != command.blob_size:
            raise UpdateFailed(f"verify: blob is {size} bytes, the command says {command.blob_size}")
        if digest.hexdigest() != command.blob_sha256:
            raise UpdateFailed("verify: blob sha256 mismatch: the download is not the blob the command names")
        return Outcome.OK, record

    def _decrypt(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        try:
            wrapped = base64.b64decode(command.wrapped_key, validate=True)
        except (binascii.Error, ValueError):
            raise UpdateFailed("decrypt: wrapped_key is not base64") from None
        try:
            content_key = unwrap_content_key(wrapped, self.device_private_key, self.device_id)
            tar = decrypt_package(Path(record.blob_path).read_bytes(), content_key)
        except CryptoError as error:
            raise UpdateFailed(f"decrypt: {error}") from None
        try:
            package = read_package(tar, self.trusted_keys)
        except PackageError as error:
            raise UpdateFailed(f"verify: {error}") from None
        manifest = package.manifest
        if (manifest.name, manifest.version) != (command.model, command.version):
            raise UpdateFailed(
                f"verify: the package is {manifest.name} v{manifest.version}, the command names "
                f"{command.model} v{command.version}"
            )
        current = self._active
        installed = current.version if current and current.package and current.model == manifest.name else None
        try:
            check_version(manifest.version, installed)
            check_agent_version(manifest.min_agent_version, self.agent_version)
        except PackageError as error:
            raise UpdateFailed(f"verify: {error}") from None
        try:
            runtime = choose_runtime(manifest.runtimes, self.preferred_runtimes)
        except RuntimeUnavailable as error:
            raise UpdateFailed(f"runtime: {error}") from None
        self._staged_tar = tar
        return Outcome.OK, record.evolve(runtime=runtime)

    def _install(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        if self._staged_scenes is None:
            raise UpdateFailed("install: nothing verified to install")
        active, previous = self._store.pointer()
        target = record.target
        if target == active:
            raise UpdateFailed(f"install: slot {target} is the active slot")
        if previous == target:
            self._store.set_pointer(active, None)  # the rollback target is about to be overwritten
        meta = {
            "command_id": record.command_id,
            "scene_version": self._staged_scene_version,
            "installed_at": time.time(),
        }
        if isinstance(command, fp.SceneConfigCommand):
            current = self._active
            tar = self._store.package_bytes(current.slot) if current and current.package else None
            if current and current.package:
                meta.update(model=current.model, version=current.version, runtime=current.runtime)
            else:
                meta.update(model="", version=0, runtime="")
            outcome = Outcome.SCENE_ONLY
        else:
            if self._staged_tar is None:
                raise UpdateFailed("install: nothing verified to install")
            tar = self._staged_tar
            meta.update(model=command.model, version=command.version, runtime=record.runtime)
            outcome = Outcome.OK
        self._store.write(target, tar, self._staged_scenes, meta)
        self._send(record.command_id, fp.AckState.INSTALLED)
        return outcome, record

    def _selftest(self, record: Record) -> tuple[Outcome, Record]:
        try:
            model = self._store.load(record.target)
        except SlotError as error:
            raise UpdateFailed(f"selftest: {error}") from None
        try:
            runtime = create_runtime(model.runtime)
        except RuntimeUnavailable as error:
            raise UpdateFailed(f"selftest: {error}") from None
        try:
            runtime.load(model.package)
            result = run_selftest(runtime, model.package, self.selftest_tolerance_lsb)
        finally:
            runtime.close()
        if not result.passed:
            raise UpdateFailed(f"selftest on {model.runtime}: {result.reason}")
        return Outcome.OK, record

    def _activate_target(self, record: Record) -> tuple[Outcome, Record]:
        try:
            model = self._store.load(record.target)
        except SlotError as error:
            raise UpdateFailed(f"activate: {error}") from None
        self._store.set_pointer(record.target, record.previous)
        self._active = model
        try:
            self._activate(model)
        except Exception as error:
            raise UpdateFailed(
                f"activate: the pipeline refused the new slot: {type(error).__name__}: {error}"
            ) from None
        return Outcome.OK, record

    def _observe(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        window = self.default_observe_s if command.observe_s is None else command.observe_s
        if window <= 0:
            return Outcome.OK, record.evolve(reason="committed without an observe window")
        first = self._sample()
        deadline = time.monotonic() + window
        last = first
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self.observe_poll_s, left))
            last = self._sample()
            if last["errors"] > first["errors"]:
                raise UpdateFailed(
                    f"observe: {last['errors'] - first['errors']:g} errors within the {window:g} s health window"
                )
        frames = last["frames"] - first["frames"]
        if frames <= 0:
            raise UpdateFailed(f"observe: no frames processed within the {window:g} s health window")
        if last["fps"] < self.min_fps:
            raise UpdateFailed(f"observe: {last['fps']:.2f} fps is below the minimum of {self.min_fps:g}")
        detections = last["detections"] - first["detections"]
        note = f"healthy over {window:g} s: {last['fps']:.1f} fps, {frames:g} frames, {detections:g} detections"
        return Outcome.OK, record.evolve(reason=note)

    def _sample(self) -> dict:
        try:
            sample = self._health()
            return {key: float(sample.get(key, 0)) for key in ("fps", "errors", "frames", "detections")}
        except Exception as error:
            raise UpdateFailed(f"observe: the health check failed: {type(error).__name__}: {error}") from None

    def _commit(self, record: Record) -> tuple[Outcome, Record]:
        self._store.mark_committed(record.target)
        self._store.set_pointer(record.target, record.previous)
        if self._active is None or self._active.slot != record.target:
            self._active = self._store.load(record.target)
        model = self._active
        what = f"{model.model} v{model.version}" if model.package else f"scene version {model.scene_version}"
        note = f"{what} committed in slot {record.target}; {record.reason or 'healthy'}"
        return Outcome.OK, record.evolve(last=self._last(record, fp.AckState.HEALTHY, note))

    def _rollback(self, record: Record) -> tuple[Outcome, Record]:
        command = self._command(record)
        to = record.rollback_to
        explicit = isinstance(command, fp.RollbackCommand)
        if explicit:
            if to is None:
                raise UpdateFailed("rollback: no previous committed slot to roll back to")
            if not (self._store.info(to) or {}).get("committed"):
                raise UpdateFailed(f"rollback: slot {to} holds no committed model")
        try:
            model = None if to is None else self._store.load(to)
        except SlotError as error:
            raise UpdateFailed(f"rollback: {error}") from None
        self._store.set_pointer(to, None)
        if not explicit and record.target and record.target != to:
            self._store.remove(record.target)  # the failed slot: never committed, never a rollback target
        self._active = model
        reason = record.reason
        try:
            self._activate(model)
        except Exception as error:
            reason = f"{reason}; activating the previous slot failed too: {type(error).__name__}: {error}"
        where = f"slot {to} ({model.model} v{model.version})" if model else "no model"
        reason = f"{reason}; back to {where}"
        return Outcome.OK, record.evolve(last=self._last(record, fp.AckState.ROLLED_BACK, reason))

    def _failure(self, record: Record) -> tuple[Outcome, Record]:
        active, _ = self._store.pointer()
        if record.target_written and record.target and record.target != active:
            self._store.remove(record.target)  # half installed or self-test failed: never ran
        self._store.clean_temp()
        return Outcome.OK, record.evolve(last=self._last(record, fp.AckState.FAILED, record.reason))

    # --- helpers --------------------------------------------------------------------------------

    def _command(self, record: Record):
        return msgspec.convert(record.command, fp.CommandBody)

    @staticmethod
    def _last(record: Record, state: fp.AckState, reason: str) -> dict:
        return {"command_id": record.command_id, "state": state.value, "reason": reason[:500], "reported": False}

    def _report_last(self) -> None:
        last = self._record.last
        if last is None or last.get("reported"):
            return
        if self._send(last["command_id"], fp.AckState(last["state"]), reason=last["reason"]):
            self._persist(self._record.evolve(last=dict(last, reported=True)))

    def _send(self, command_id: str, state: fp.AckState, progress: float | None = None, reason: str = "") -> bool:
        try:
            self._report(fp.CommandAckBody(command_id=command_id, state=state, progress=progress, reason=reason[:500]))
            return True
        except Exception:  # a lost ack must not break the update; the final one is re-sent by resume()
            logger.exception("update: could not report %s for %s", state, command_id)
            return False

    def _load_pointed(self) -> ActiveModel | None:
        slot, _ = self._store.pointer()
        if slot is None:
            return None
        try:
            return self._store.load(slot)
        except SlotError:
            logger.exception("update: the active slot %s cannot be loaded", slot)
            return None
