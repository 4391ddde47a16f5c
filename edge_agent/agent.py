"""The agent process: the MQTT connection thread, the camera pipeline, the event publisher, the update
worker, and a main loop that runs commands and sends telemetry.

    cameras ─► Pipeline (runtime ─► decode ─► tracker ─► rules) ─► EventOutbox (SQLite) ─► EventPublisher ─► events
    cmd ─► CommandRunner ─► deploy / scene_config / rollback ─► Updater (download over blob/req ─► … ─► commit)
                                                                  └─► activate: Pipeline.activate(model, zones)
"""

import contextlib
import logging
import os
import queue
import threading
import time
from pathlib import Path

import fleet_protocol as fp
from edge_agent import __version__
from edge_agent.commands import CommandRunner, Outcome
from edge_agent.connection import AgentConnection
from edge_agent.download import BlobDownloader
from edge_agent.event_publisher import EventPublisher
from edge_agent.files import read_json, write_private_json
from edge_agent.identity import DeviceIdentity, load_device_key
from edge_agent.outbox import EventOutbox
from edge_agent.pipeline import Pipeline
from edge_agent.runtimes import available_runtimes
from edge_agent.telemetry import TelemetryCollector, hardware_info
from edge_agent.update import ActiveModel, Updater
from edge_agent.video import VideoSource
from model_store.crypto import import_public_keys

logger = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"  # what `edge-agent status` reads about the running process
SETTINGS_FILE = "settings.json"  # what commands changed (telemetry interval), kept across restarts
_RUNTIME_WRITE_EVERY_S = 60.0
DEFAULT_OBSERVE_S = 30.0
# The fastest engine first; `reference` (the numpy golden model) only when a package supports nothing else.
DEFAULT_RUNTIME_PREFERENCE = ("cpu-int8", "reference")


class Agent:
    def __init__(
        self,
        identity: DeviceIdentity,
        state_dir: Path,
        *,
        keepalive_s: int | None = None,
        telemetry_interval_s: float | None = None,
        reconnect_max_s: float = 60.0,
        cameras: dict[str, VideoSource] | None = None,
        preferred_runtimes: tuple[str, ...] = DEFAULT_RUNTIME_PREFERENCE,
        runtime_threads: int | None = None,
        observe_s: float = DEFAULT_OBSERVE_S,
        min_fps: float = 0.5,
    ):
        self.identity = identity
        self.state_dir = state_dir
        self.stop_event = threading.Event()
        saved = read_json(state_dir / SETTINGS_FILE, default={})
        self.telemetry_interval_s = float(
            telemetry_interval_s or saved.get("telemetry_interval_s") or identity.telemetry_interval_s
        )
        self.keepalive_s = int(keepalive_s or identity.keepalive_s)
        self._hardware = hardware_info()
        self._commands: queue.Queue[bytes] = queue.Queue(maxsize=1000)
        self._telemetry = TelemetryCollector(state_dir)
        self._runtime_written_at = 0.0
        self.downloader = BlobDownloader(state_dir / "downloads", self._send_blob_request)
        self.outbox = EventOutbox(state_dir / "outbox.sqlite")
        self.publisher = EventPublisher(self.outbox, self._publish_event, lambda: self.connection.connected)
        runtime_options = {"cpu-int8": {"threads": runtime_threads}} if runtime_threads else {}
        self.pipeline = Pipeline(cameras or {}, self.outbox, runtime_options=runtime_options)
        self.updater = Updater(
            state_dir / "update",
            device_id=identity.device_id,
            device_private_key=load_device_key(state_dir),
            trusted_keys=import_public_keys(identity.signing_keys),
            agent_version=__version__,
            fetch=self._fetch,
            report=self._ack,
            activate=self._activate,
            health=self.pipeline.health,
            preferred_runtimes=preferred_runtimes,
            default_observe_s=observe_s,
            min_fps=min_fps if cameras else 0.0,
        )
        # Built last: its Last Will needs the status, which reads the updater's slots.
        self.connection = AgentConnection(
            identity,
            status=self._status_body,
            on_command=self._enqueue_command,
            on_blob=self.downloader.on_chunk,
            # In-flight chunks die with a broker connection: ask for them again at once.
            on_connected=self.downloader.resend_outstanding,
            keepalive_s=self.keepalive_s,
            reconnect_max_s=reconnect_max_s,
        )
        self.runner = CommandRunner(state_dir, ack=self._ack)
        self.runner.register(fp.PingCommand, lambda command: "pong")
        self.runner.register(fp.SetTelemetryIntervalCommand, self._set_telemetry_interval)
        for update_command in (fp.DeployCommand, fp.SceneConfigCommand, fp.RollbackCommand):
            self.runner.register(update_command, self._update, background=True)

    # --- the update machine's hooks ---

    def _fetch(self, command: fp.DeployCommand, progress) -> Path:
        # A download the platform stops serving must not hold the update worker for ever: give up when the
        # command expires (the platform marks it expired then, too).
        timeout_s = None if command.expires_at is None else max(60.0, command.expires_at - time.time())
        return self.downloader.download(command, progress=progress, stop=self.stop_event, timeout_s=timeout_s)

    def _send_blob_request(self, body: fp.BlobRequestBody) -> None:
        self.connection.publish(fp.Channel.BLOB_REQ, fp.envelope(body), qos=1)

    def _activate(self, active: ActiveModel | None) -> None:
        """Run ``active`` on the cameras (raises when it cannot load: the update machine then rolls back)."""
        if active is None or active.package is None:
            self.pipeline.activate(None, "", {})
        else:
            # A deployment may carry the zones of a whole park; this device analyses its own cameras.
            mine = {
                camera: config for camera, config in active.scene_configs.items() if camera in self.pipeline.readers
            }
            self.pipeline.activate(
                active.package,
                active.runtime,
                mine,
                model=active.model,
                model_version=active.version,
                scene_version=active.scene_version,
            )
        if self.connection.connected:
            self.connection.publish_status()

    def _update(self, command) -> Outcome:
        """Run an update command through the state machine; it sends its own progress and final acks."""
        try:
            self.updater.handle(command)
        finally:
            if isinstance(command, fp.DeployCommand):
                self.downloader.discard(command.blob_sha256)  # installed (or refused): the ciphertext is spent
        state, reason = self.updater.outcome
        self.connection.publish_status()
        return Outcome(state, reason, acknowledged=True)

    def _resume_update(self) -> None:
        """Finish or roll back an update a crash interrupted, and remember its outcome against redelivery."""
        self.updater.resume()
        if self.updater.last_command_id and self.updater.outcome is not None:
            state, reason = self.updater.outcome
            self.runner.remember(self.updater.last_command_id, state, reason, ack=False)
        if self.connection.connected:
            self.connection.publish_status()  # slots and update state as the resumed update left them

    def _publish_event(self, payload: bytes):
        return self.connection.client.publish(self.connection.topic(fp.Channel.EVENTS), payload, qos=1)

    # --- status, commands, telemetry ---

    def _status_body(self, state: str) -> fp.StatusBody:
        active = self.updater.active()
        return fp.StatusBody(
            state=state,
            agent_version=__version__,
            kind=self.identity.kind,
            runtimes=available_runtimes(),
            models=self.updater.slots(),
            hardware=fp.HardwareInfo(**self._hardware),
            keepalive_s=self.keepalive_s,
            telemetry_interval_s=self.telemetry_interval_s,
            update_state=self.updater.state,
            update_command_id=self.updater.command_id,
            scene_version=active.scene_version if active else 0,
        )

    def _enqueue_command(self, payload: bytes) -> None:
        try:
            self._commands.put_nowait(payload)
        except queue.Full:
            # Not acknowledged to the platform; it redelivers pending commands when we reconnect.
            logger.error("command queue full; dropped a command")

    def _ack(self, body: fp.CommandAckBody) -> None:
        self.connection.publish(fp.Channel.CMD_ACK, fp.envelope(body), qos=1)

    def _set_telemetry_interval(self, command: fp.SetTelemetryIntervalCommand) -> str:
        self.telemetry_interval_s = command.interval_s
        write_private_json(self.state_dir / SETTINGS_FILE, {"telemetry_interval_s": command.interval_s})
        self.connection.publish_status()
        return f"telemetry every {command.interval_s:g} s"

    def _telemetry_body(self) -> fp.TelemetryBody:
        pipeline = self.pipeline.telemetry()
        queues = {"commands": self._commands.qsize(), "outbox": self.outbox.depth(), **pipeline.get("queues", {})}
        return self._telemetry.collect(
            queues=queues, cameras=pipeline.get("cameras", []), runtimes=pipeline.get("runtimes", [])
        )

    def _write_runtime(self, **extra) -> None:
        write_private_json(
            self.state_dir / RUNTIME_FILE,
            {
                "pid": os.getpid(),
                "agent_version": __version__,
                "connected": self.connection.connected,
                "broker": self.connection.address.url(),
                "connect_count": self.connection.connect_count,
                "last_error": self.connection.last_error,
                "telemetry_interval_s": self.telemetry_interval_s,
                "update_state": self.updater.state,
                "active_model": self._active_model_text(),
                "outbox_depth": self.outbox.depth(),
                "updated_at": time.time(),
                **extra,
            },
        )
        self._runtime_written_at = time.monotonic()

    def _active_model_text(self) -> str:
        active = self.updater.active()
        if active is None or active.package is None:
            return ""
        return (
            f"{active.model} v{active.version} on {active.runtime} (slot {active.slot}, zones v{active.scene_version})"
        )

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        network = threading.Thread(target=self.connection.run, name="mqtt", daemon=True)
        network.start()
        self._write_runtime(started_at=time.time())
        # Run whatever the slots say is active, then let the update worker carry on (or roll back) an update a
        # crash interrupted: it may need the cameras running (observe) and the broker (download).
        try:
            self._activate(self.updater.active())
        except Exception:  # a committed model that no longer loads must not keep the agent from serving
            logger.exception("the active model does not load; running without a model until the next update")
        self.pipeline.start()
        self.publisher.start()
        self.runner.submit(self._resume_update)
        next_telemetry = time.monotonic()
        was_connected = False
        try:
            while not self.stop_event.is_set():
                wait = max(0.0, min(1.0, next_telemetry - time.monotonic()))
                with contextlib.suppress(queue.Empty):
                    self.runner.handle(self._commands.get(timeout=wait))
                connected = self.connection.connected
                if time.monotonic() >= next_telemetry:
                    next_telemetry = time.monotonic() + self.telemetry_interval_s
                    if connected:
                        self.connection.publish(fp.Channel.TELEMETRY, fp.envelope(self._telemetry_body()), qos=0)
                if connected != was_connected or time.monotonic() - self._runtime_written_at > _RUNTIME_WRITE_EVERY_S:
                    self._write_runtime()
                    was_connected = connected
        finally:
            self.runner.shutdown()
            self.pipeline.stop()
            self.publisher.stop()
            self.connection.stop()
            network.join(timeout=5)
            self._write_runtime(stopped_at=time.time())
