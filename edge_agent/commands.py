"""Running commands from the platform: decode, refuse what is invalid or stale, run, acknowledge.

Commands arrive at least once (QoS 1, redelivery after reconnects); handled ids are remembered
on disk so a repeat is answered with its earlier outcome instead of being run twice.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import fleet_protocol as fp
from edge_agent.files import read_json, write_private_json

logger = logging.getLogger(__name__)

HANDLED_FILE = "handled_commands.json"
_REMEMBERED = 500


class CommandRunner:
    def __init__(self, state_dir: Path, ack: Callable[[fp.CommandAckBody], None]):
        self._path = state_dir / HANDLED_FILE
        self._ack = ack
        self._handled: OrderedDict[str, list[str]] = OrderedDict(read_json(self._path, default={}))
        self._handlers: dict[type, Callable[[fp.CommandBody], str]] = {}

    def register(self, command_type: type, handler: Callable[[fp.CommandBody], str]) -> None:
        """``handler`` runs the command and returns a note for the ack, or raises to fail it."""
        self._handlers[command_type] = handler

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
        if command.command_id in self._handled:
            state, reason = self._handled[command.command_id]
            self._ack(fp.CommandAckBody(command_id=command.command_id, state=fp.AckState(state), reason=reason))
            return
        if command.expires_at is not None and command.expires_at < time.time():
            self._finish(command.command_id, fp.AckState.FAILED, "expired before it reached the device")
            return
        handler = self._handlers.get(type(command))
        if handler is None:
            self._finish(command.command_id, fp.AckState.FAILED, f"this agent cannot run {type(command).__name__}")
            return
        self._ack(fp.CommandAckBody(command_id=command.command_id, state=fp.AckState.RECEIVED))
        try:
            note = handler(command)
        except Exception as exc:  # a failing command is reported, never crashes the agent
            logger.exception("command %s failed", command.command_id)
            self._finish(command.command_id, fp.AckState.FAILED, f"{type(exc).__name__}: {exc}"[:500])
            return
        self._finish(command.command_id, fp.AckState.DONE, note[:500])

    def _finish(self, command_id: str, state: fp.AckState, reason: str) -> None:
        self._handled[command_id] = [state.value, reason]
        while len(self._handled) > _REMEMBERED:
            self._handled.popitem(last=False)
        write_private_json(self._path, self._handled)
        self._ack(fp.CommandAckBody(command_id=command_id, state=state, reason=reason))
