"""The agent's update state machine (Mender style): A/B slots, one transition table, crash-safe, every failure
ending in a rollback to the last good slot or a clean failure, each reported with a reason.

`Updater` runs deploy, scene-config and rollback commands (`updater`); `machine` holds the states, the transition
table and the persisted record; `slots` the two slots and the atomic `active` pointer. docs/agent-updates.md
describes the machine and what a restart does in each state.
"""

from edge_agent.update.machine import TRANSITIONS, Outcome, State, next_state
from edge_agent.update.slots import ActiveModel, SlotError, SlotStore, parse_scene_configs, scene_config_from_dict
from edge_agent.update.updater import PAUSE_ENV, UpdateFailed, Updater

__all__ = [
    "PAUSE_ENV",
    "TRANSITIONS",
    "ActiveModel",
    "Outcome",
    "SlotError",
    "SlotStore",
    "State",
    "UpdateFailed",
    "Updater",
    "next_state",
    "parse_scene_configs",
    "scene_config_from_dict",
]
