"""The update state machine's states, its one transition table, and its persisted record.

Every edge of the machine is in ``TRANSITIONS``: (state, outcome of that state's work) -> next state. The
updater (``edge_agent.update.updater``) does a state's work and asks ``next_state`` where to go; nothing else
decides a transition. Every failure edge leads to ``ROLLBACK`` (once the new slot may have been activated) or to
``FAILURE`` (before, when the running model was never touched).

The record (``update.json`` in the state directory) is written by write-temp + fsync + atomic rename BEFORE a
state's work starts, so after a crash the record names the state whose work may be half done.
"""

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from edge_agent.files import read_json, write_private_json

RECORD_FILE = "update.json"


class State(StrEnum):
    IDLE = "idle"
    DOWNLOAD = "download"
    VERIFY = "verify"
    DECRYPT = "decrypt"
    INSTALL = "install"
    SELFTEST = "selftest"
    ACTIVATE = "activate"
    OBSERVE = "observe"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    FAILURE = "failure"


class Outcome(StrEnum):
    """What a state's work (or, in IDLE, the command that arrived) says about where to go next."""

    DEPLOY = "deploy"  # IDLE: a DeployCommand arrived
    SCENE_CONFIG = "scene_config"  # IDLE: a SceneConfigCommand arrived
    ROLLBACK_COMMAND = "rollback_command"  # IDLE: a RollbackCommand arrived
    OK = "ok"
    SCENE_ONLY = "scene_only"  # a scene-config update: no blob to decrypt, no new model to self-test
    FAIL = "fail"


S, On = State, Outcome

# The whole machine. Read a row as: "in <state>, when the work ends with <outcome>, go to <next state>".
TRANSITIONS: dict[tuple[State, Outcome], State] = {
    (S.IDLE, On.DEPLOY): S.DOWNLOAD,
    (S.IDLE, On.SCENE_CONFIG): S.VERIFY,
    (S.IDLE, On.ROLLBACK_COMMAND): S.ROLLBACK,
    (S.DOWNLOAD, On.OK): S.VERIFY,
    (S.DOWNLOAD, On.FAIL): S.FAILURE,
    (S.VERIFY, On.OK): S.DECRYPT,
    (S.VERIFY, On.SCENE_ONLY): S.INSTALL,
    (S.VERIFY, On.FAIL): S.FAILURE,
    (S.DECRYPT, On.OK): S.INSTALL,
    (S.DECRYPT, On.FAIL): S.FAILURE,
    (S.INSTALL, On.OK): S.SELFTEST,
    (S.INSTALL, On.SCENE_ONLY): S.ACTIVATE,
    (S.INSTALL, On.FAIL): S.FAILURE,
    (S.SELFTEST, On.OK): S.ACTIVATE,
    (S.SELFTEST, On.FAIL): S.FAILURE,  # the new slot was never active: discard it, the old model runs on
    (S.ACTIVATE, On.OK): S.OBSERVE,
    (S.ACTIVATE, On.FAIL): S.ROLLBACK,
    (S.OBSERVE, On.OK): S.COMMIT,
    (S.OBSERVE, On.FAIL): S.ROLLBACK,
    (S.COMMIT, On.OK): S.IDLE,
    (S.COMMIT, On.FAIL): S.ROLLBACK,  # the commit could not be written: the new slot is not confirmed
    (S.ROLLBACK, On.OK): S.IDLE,
    (S.ROLLBACK, On.FAIL): S.FAILURE,  # a rollback command with no previous slot, or an unreadable previous slot
    (S.FAILURE, On.OK): S.IDLE,
}

# Where a restart finds the machine -> what resume() does (see docs/agent-updates.md).
BEFORE_ACTIVATE = frozenset({S.DOWNLOAD, S.VERIFY, S.DECRYPT, S.INSTALL, S.SELFTEST})
NEEDS_ROLLBACK = frozenset({S.ACTIVATE, S.OBSERVE})


class TransitionError(RuntimeError):
    """A (state, outcome) pair that is not in the table: a bug in the updater, never a device condition."""


def next_state(state: State, outcome: Outcome) -> State:
    try:
        return TRANSITIONS[(State(state), Outcome(outcome))]
    except (KeyError, ValueError):
        raise TransitionError(f"no transition from {state} on {outcome}") from None


@dataclass(frozen=True)
class Record:
    """The machine's persisted state: what it is doing, for which command, and which slots are involved."""

    state: State = State.IDLE
    command: dict | None = None  # the command being run (msgspec.to_builtins, with its "name" tag)
    target: str | None = None  # the slot being installed (deploy, scene config)
    previous: str | None = None  # the slot that was active when the command started
    rollback_to: str | None = None  # ROLLBACK: the slot to switch back to (None: no model at all)
    reason: str = ""  # why the machine is in ROLLBACK or FAILURE
    blob_path: str | None = None  # the downloaded ciphertext
    runtime: str = ""  # the runtime chosen at DECRYPT
    target_written: bool = False  # INSTALL started: the target slot's old content is gone
    # The final outcome of the last command: {"command_id", "state" (ack), "reason", "reported"}.
    last: dict | None = field(default=None)

    @property
    def command_id(self) -> str | None:
        return None if self.command is None else self.command.get("command_id")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Record":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**known, "state": State(known.get("state", State.IDLE))})

    def evolve(self, **changes) -> "Record":
        return replace(self, **changes)


def load_record(state_dir: Path) -> Record:
    data = read_json(state_dir / RECORD_FILE)
    return Record() if data is None else Record.from_dict(data)


def save_record(state_dir: Path, record: Record) -> None:
    """Atomically replace the record (temp file, fsync, rename, fsync of the directory)."""
    write_private_json(state_dir / RECORD_FILE, record.to_dict())
