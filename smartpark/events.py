"""The smart-park event record shared by the rules, the ground truth of synthetic sequences and scoring."""

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class Rule(StrEnum):
    OCCUPANCY = "occupancy"  # a parking space became occupied or free (attributes: state)
    FIRE_LANE = "fire_lane"  # a vehicle dwelt in the fire lane longer than allowed (start, end)
    INTRUSION = "intrusion"  # a person inside a restricted zone (start, end)
    LINE_COUNT = "line_count"  # an object crossed an entry line (attributes: direction, label)
    OFF_DUTY = "off_duty"  # the duty post was empty too long during duty hours (start, end)
    INACTIVITY = "inactivity"  # a person at the duty post did not move for too long (start, end)


@dataclass(frozen=True)
class Event:
    """One smart-park event. Times are seconds on the sequence's (or camera's) clock.

    ``start`` is when the condition began (back-dated past any confirmation delay); ``end`` is
    None while it lasts, and for instantaneous events (occupancy changes, line crossings).
    """

    rule: Rule
    camera: str
    zone: str
    start: float
    end: float | None = None
    confidence: float = 1.0
    attributes: dict = field(default_factory=dict, compare=False, hash=False)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict:
        return {
            "event_id": self.event_id,
            "rule": self.rule.value,
            "camera": self.camera,
            "zone": self.zone,
            "start": self.start,
            "end": self.end,
            "confidence": self.confidence,
            "attributes": self.attributes,
        }
