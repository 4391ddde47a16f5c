"""Running commands from the platform: decode, refuse what is invalid or stale, run, acknowledge.

Commands arrive at least once (QoS 1, redelivery after reconnects); handled ids are remembered
on disk so a repeat is answered with its earlier outcome instead of being run twice.

Long commands (a model update takes minutes) are registered as ``background``: they run one at a
time on a worker thread, in arrival order, while the agent's main loop keeps answering pings and
sending telemetry.
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fleet_protocol as fp
from edge_agent.files import read_json, write_private_json

logger = logging.getLogger(__name__)

HANDLED_FILE = "handled_commands.json"
_REMEMBERED = 500


@dataclass(frozen=True)
class Outcome:
    """What a handler returns when its command ends in another state than ``done`` (e.g. ``healthy``)."""

    state: fp.AckState
    reason: str = ""
    # The handler already sent this final ack itself (the update machine reports its own outcome).
    acknowledged: bool = False


class CommandRunner:
    def __init__(self, state_dir: Path, ack: Callable[[fp.CommandAckBody], None]):
        self._path = state_dir / HANDLED_FILE
        self._ack = ack
        self._handled: OrderedDict[str, list[str]] = OrderedDict(read_json(self._path, default={}))
        self._handlers: dict[type, Callable[[fp.CommandBody], str | Outcome]] = {}
        self._background: set[type] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None

    def register(
        self, command_type: type, handler: Callable[[fp.CommandBody], str | Outcome], *, background: bool = False
    ) -> None:
        """``handler`` runs the command and returns a note or an ``Outcome`` for the final ack, or raises."""
        self._handlers[command_type] = handler
        if background:
            self._background.add(command_type)

    def remember(self, command_id: str, state: fp.AckState, reason: str = "", *, ack: bool = True) -> None:
        """Record (and with ``ack`` report) the outcome of a command finished outside ``handle`` (after a restart)."""
        self._finish(command_id, state, reason, ack=ack)

    def submit(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the background worker, in turn with the long commands (e.g. finishing an update a
        restart interrupted, before the next update command starts)."""
        self._background_worker().submit(self._run_logged, work)

    @staticmethod
    def _run_logged(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            logger.exception("background work %s failed", getattr(work, "__name__", work))

    def _background_worker(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commands")
            return self._worker

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def shutdown(self, wait: bool = False) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=wait, cancel_futures=True)

    def handle(self, payload: bytes) -> None:
        try:
            message = fp.decode_for_channel(fp.Channel.CMD, payload)
        except fp.ProtocolError as exc:
            command_id = fp.peek_command_id(payload)
            logger.warning("refused a command (%s): %s", command_id or "no id", exc.reason)
            if command_id and command_id not in self._handled:
                self._finish(command_id, fp.AckState.FAILED, f"invalid command: {exc.reason}"[:500])
            return
        command = message.body
        with self._lock:
            if command.command_id in self._running:
                return  # a redelivery of a command still running: its own acks answer it
            finished = self._handled.get(command.command_id)
        if finished is not None:
            state, reason = finished
            self._ack(fp.CommandAckBody(command_id=command.command_id, state=fp.AckState(state), reason=reason))
            return
        if command.expires_at is not None and command.expires_at < time.time():
            self._finish(command.command_id, fp.AckState.FAILED, "expired before it reached the device")
            return
        handler = self._handlers.get(type(command))
        if handler is None:
            self._finish(command.command_id, fp.AckState.FAILED, f"this agent cannot run {type(command).__name__}")
            return
        with self._lock:
            self._running.add(command.command_id)
        self._ack(fp.CommandAckBody(command_id=command.command_id, state=fp.AckState.RECEIVED))
        if type(command) in self._background:
            self._background_worker().submit(self._run, handler, command)
        else:
            self._run(handler, command)

    def _run(self, handler, command) -> None:
        try:
            result = handler(command)
        except Exception as exc:  # a failing command is reported, never crashes the agent
            logger.exception("command %s failed", command.command_id)
            self._finish(command.command_id, fp.AckState.FAILED, f"{type(exc).__name__}: {exc}"[:500])
            return
        outcome = result if isinstance(result, Outcome) else Outcome(fp.AckState.DONE, str(result))
        self._finish(command.command_id, outcome.state, outcome.reason[:500], ack=not outcome.acknowledged)

    def _finish(self, command_id: str, state: fp.AckState, reason: str, *, ack: bool = True) -> None:
        with self._lock:
            self._handled[command_id] = [state.value, reason]
            self._running.discard(command_id)
            while len(self._handled) > _REMEMBERED:
                self._handled.popitem(last=False)
            write_private_json(self._path, self._handled)
        if ack:
            self._ack(fp.CommandAckBody(command_id=command_id, state=state, reason=reason))
