"""The agent process: one MQTT connection thread, and a main loop that runs commands and sends telemetry."""

import contextlib
import logging
import os
import queue
import threading
import time
from pathlib import Path

import fleet_protocol as fp
from edge_agent import __version__
from edge_agent.commands import CommandRunner
from edge_agent.connection import AgentConnection
from edge_agent.files import read_json, write_private_json
from edge_agent.identity import DeviceIdentity
from edge_agent.telemetry import TelemetryCollector, hardware_info

logger = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"  # what `edge-agent status` reads about the running process
SETTINGS_FILE = "settings.json"  # what commands changed (telemetry interval), kept across restarts
_RUNTIME_WRITE_EVERY_S = 60.0


class Agent:
    def __init__(
        self,
        identity: DeviceIdentity,
        state_dir: Path,
        *,
        keepalive_s: int | None = None,
        telemetry_interval_s: float | None = None,
        reconnect_max_s: float = 60.0,
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
        self.connection = AgentConnection(
            identity,
            status=self._status_body,
            on_command=self._enqueue_command,
            keepalive_s=self.keepalive_s,
            reconnect_max_s=reconnect_max_s,
        )
        self.runner = CommandRunner(state_dir, ack=self._ack)
        self.runner.register(fp.PingCommand, lambda command: "pong")
        self.runner.register(fp.SetTelemetryIntervalCommand, self._set_telemetry_interval)

    def _status_body(self, state: str) -> fp.StatusBody:
        return fp.StatusBody(
            state=state,
            agent_version=__version__,
            kind=self.identity.kind,
            runtimes=[],
            hardware=fp.HardwareInfo(**self._hardware),
            keepalive_s=self.keepalive_s,
            telemetry_interval_s=self.telemetry_interval_s,
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
                "updated_at": time.time(),
                **extra,
            },
        )
        self._runtime_written_at = time.monotonic()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        network = threading.Thread(target=self.connection.run, name="mqtt", daemon=True)
        network.start()
        self._write_runtime(started_at=time.time())
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
                        body = self._telemetry.collect(queues={"commands": self._commands.qsize()})
                        self.connection.publish(fp.Channel.TELEMETRY, fp.envelope(body), qos=0)
                if connected != was_connected or time.monotonic() - self._runtime_written_at > _RUNTIME_WRITE_EVERY_S:
                    self._write_runtime()
                    was_connected = connected
        finally:
            self.connection.stop()
            network.join(timeout=5)
            self._write_runtime(stopped_at=time.time())
