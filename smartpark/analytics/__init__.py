"""Per-camera smart-park analytics: detections → tracks → rule events. Numpy only, so the edge agent runs it."""

from datetime import datetime

from smartpark.analytics.rules import DEFAULT_VEHICLE_LIFT, RuleConfigError, SceneRule, build_rules, footprint
from smartpark.analytics.tracker import Track, Tracker, TrackerParams, TrackSample
from smartpark.detections import Detections
from smartpark.events import Event
from smartpark.geometry import SceneConfig

__all__ = [
    "DEFAULT_VEHICLE_LIFT",
    "RuleConfigError",
    "SceneAnalytics",
    "Track",
    "TrackSample",
    "Tracker",
    "TrackerParams",
    "footprint",
]


class SceneAnalytics:
    """One camera's pipeline: feed it every frame's detections in time order, collect the events.

    `clock_start` is the wall-clock time of t=0, used for duty hours (None: always on duty);
    `vehicle_lift` raises vehicle footprints by that fraction of their box height.
    """

    def __init__(
        self,
        config: SceneConfig,
        *,
        clock_start: datetime | None = None,
        vehicle_lift: float = DEFAULT_VEHICLE_LIFT,
        tracker_params: TrackerParams | None = None,
    ):
        self.config = config
        self.tracker = Tracker(tracker_params)
        self.rules: list[SceneRule] = build_rules(
            config.camera,
            config.zones,
            config.lines,
            clock_start=clock_start,
            vehicle_lift=vehicle_lift,
            frame_width=config.width,
        )

    def update(self, t: float, detections: Detections) -> list[Event]:
        """Events emitted at this frame (t in seconds on the sequence clock): new ones and ones that just ended."""
        tracks = self.tracker.update(t, detections)
        for rule in self.rules:
            rule.observe(detections)
        return [event for rule in self.rules for event in rule.update(t, tracks)]

    def finish(self, t: float) -> list[Event]:
        """Close what is still open at the end of the sequence (end=t) and count crossings still settling."""
        return [event for rule in self.rules for event in rule.finish(t)]
