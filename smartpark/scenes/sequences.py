"""Timed sequences of a park camera with scripted behaviour and the ground-truth event log.

Actors follow piecewise-linear paths in world metres: vehicles arrive, park and leave across the
entry line, stop in the fire lane for a scripted time, people walk into the restricted area and
cross the entry line both ways, and the guard leaves the duty post or stands motionless at it.
The event log is computed from those paths with the same thresholds the scene config gives the
rules, so scoring compares like with like.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import cv2
import numpy as np

from smartpark.detections import PERSON, VEHICLE
from smartpark.events import Event, Rule
from smartpark.geometry import Line, SceneConfig, Zone, ZoneKind, polygon_area
from smartpark.scenes.camera import Camera
from smartpark.scenes.render import CONDITIONS, SceneRenderer, random_lighting
from smartpark.scenes.world import ParkLayout, Pedestrian, Rect, Vehicle, random_layout, rect_polygon

# Thresholds handed to the rules through the scene config (and used for the ground truth).
SPACE_PARAMS = {"on_s": 3.0, "off_s": 5.0}
FIRE_LANE_PARAMS = {"dwell_s": 10.0}
RESTRICTED_PARAMS = {"min_s": 1.0}
# A guard is ~12-16 px tall in these views: "still" allows a few pixels of detector jitter.
DUTY_PARAMS = {"empty_s": 20.0, "still_s": 20.0, "still_frac": 0.3, "smooth_s": 2.0, "duty_hours": [["06:00", "22:00"]]}

VEHICLE_SPEED = (4.0, 6.5)  # m/s in the lot
WALK_SPEED = (1.0, 1.5)


@dataclass
class Path:
    """Waypoints (t, x, y); position is interpolated, heading follows the motion unless pinned."""

    points: list[tuple[float, float, float]]
    headings: dict[int, float] = field(default_factory=dict)  # segment index -> fixed heading (reversing)

    def start(self) -> float:
        return self.points[0][0]

    def end(self) -> float:
        return self.points[-1][0]

    def then(self, duration: float, x: float, y: float, heading: float | None = None) -> "Path":
        t, _, _ = self.points[-1]
        if heading is not None:
            self.headings[len(self.points) - 1] = heading
        self.points.append((t + max(duration, 1e-3), x, y))
        return self

    def go(self, x: float, y: float, speed: float, heading: float | None = None) -> "Path":
        _, px, py = self.points[-1]
        return self.then(math.hypot(x - px, y - py) / speed, x, y, heading)

    def wait(self, duration: float) -> "Path":
        _, x, y = self.points[-1]
        return self.then(duration, x, y)

    def state(self, t: float) -> tuple[float, float, float | None, bool]:
        """(x, y, heading or None when standing, moving) at time t (clamped to the path)."""
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1], pts[0][2], None, False
        for i in range(len(pts) - 1):
            t0, x0, y0 = pts[i]
            t1, x1, y1 = pts[i + 1]
            if t <= t1:
                f = (t - t0) / (t1 - t0)
                moving = (x0, y0) != (x1, y1)
                heading = self.headings.get(i, math.atan2(y1 - y0, x1 - x0) if moving else None)
                return x0 + f * (x1 - x0), y0 + f * (y1 - y0), heading, moving
        return pts[-1][1], pts[-1][2], None, False


@dataclass
class Actor:
    kind: int  # VEHICLE or PERSON
    path: Path
    body: Vehicle | Pedestrian
    appear: float = 0.0
    vanish: float = math.inf
    guard: bool = False
    role: str = ""  # what the script made it do, for debugging and tests

    def present(self, t: float) -> bool:
        return self.appear <= t < self.vanish

    def posed(self, t: float):
        """The body placed at time t (heading kept when standing still)."""
        x, y, heading, moving = self.path.state(t)
        self.body.x, self.body.y = x, y
        if heading is not None:
            self.body.heading = heading
        if isinstance(self.body, Pedestrian):
            self.body.stride_phase = (t * 5.5) if moving else 0.0
        return self.body


@dataclass(frozen=True)
class SequenceFrame:
    t: float
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    track_ids: np.ndarray


@dataclass
class Sequence:
    seed: int
    condition: str
    view: str
    fps: float
    duration_s: float
    config: SceneConfig
    clock_start: datetime
    events: list[Event]
    renderer: SceneRenderer
    actors: list[Actor]
    layout: ParkLayout

    def frames(self) -> Iterator[SequenceFrame]:
        rng = np.random.default_rng([self.seed, 11])
        for index in range(round(self.duration_s * self.fps)):
            t = index / self.fps
            present = [(i, a) for i, a in enumerate(self.actors) if a.present(t)]
            vehicles = [(i, a.posed(t)) for i, a in present if a.kind == VEHICLE]
            people = [(i, a.posed(t)) for i, a in present if a.kind == PERSON]
            image, objects = self.renderer.render([v for _, v in vehicles], [p for _, p in people], rng)
            ids = [i for i, _ in vehicles] + [i for i, _ in people]
            keep = [k for k, o in enumerate(objects) if o.box[2] - o.box[0] >= 1 and o.box[3] - o.box[1] >= 1]
            yield SequenceFrame(
                t=t,
                image=image,
                boxes=np.array([objects[k].box for k in keep], np.float32).reshape(-1, 4),
                labels=np.array([objects[k].kind for k in keep], np.int64),
                ignore=np.array([objects[k].ignore for k in keep], bool),
                track_ids=np.array([ids[k] for k in keep], np.int64),
            )


# --- the view -----------------------------------------------------------------------------------------


def whole_lot_camera(rng: np.random.Generator, layout: ParkLayout, width: int, height: int) -> Camera:
    """A high, wide camera that takes in a whole small lot: rows, fire lane, entry, duty post, restricted area.

    People are 11-16 px tall in it; the training views include it (a third of them).
    """
    tx = (layout.duty_post[0] + layout.restricted[2]) / 2 + float(rng.uniform(-1, 1))
    ty = layout.near_row[3] - 2.0 + float(rng.uniform(-0.5, 0.5))
    mount = float(rng.uniform(9.0, 11.5))
    distance = float(rng.uniform(14.0, 17.0))
    yaw = float(rng.uniform(-0.1, 0.1))
    focal = (width / 2) / math.tan(math.radians(float(rng.uniform(80, 86))) / 2)
    pitch = math.atan2(mount, distance) + float(rng.uniform(-0.02, 0.02))
    x, y = tx - distance * math.sin(yaw), ty - distance * math.cos(yaw)
    return Camera(x=x, y=y, height=mount, yaw=yaw, pitch=pitch, focal_px=focal, width=width, height_px=height)


CAMERA_VIEWS = ("gate", "lot")


def view_camera(rng: np.random.Generator, layout: ParkLayout, view: str, width: int, height: int) -> Camera:
    """The camera of a sequence, as a park installs them: one per area, close enough to see people.

    ``gate`` watches the entrance: the entry line, the guard's post and the first spaces; ``lot``
    watches the rows, the fire lane and the restricted area past the far row's end.
    """
    if view == "gate":
        tx = layout.duty_post[0] + float(rng.uniform(7.0, 9.0))
        ty = layout.near_row[3] + float(rng.uniform(-1.5, 0.0))
        distance, mount = float(rng.uniform(9.0, 11.5)), float(rng.uniform(6.5, 8.5))
        hfov = float(rng.uniform(68, 76))
    elif view == "lot":
        tx = (layout.lot_x0 + layout.restricted[2]) / 2 + float(rng.uniform(-1, 1))
        ty = layout.near_row[3] + float(rng.uniform(-2.0, -0.5))
        distance, mount = float(rng.uniform(11.0, 13.5)), float(rng.uniform(7.5, 9.5))
        hfov = float(rng.uniform(76, 84))
    else:
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(CAMERA_VIEWS)}")
    yaw = float(rng.uniform(-0.1, 0.1))
    focal = (width / 2) / math.tan(math.radians(hfov) / 2)
    pitch = math.atan2(mount, distance) + float(rng.uniform(-0.02, 0.02))
    x, y = tx - distance * math.sin(yaw), ty - distance * math.cos(yaw)
    return Camera(x=x, y=y, height=mount, yaw=yaw, pitch=pitch, focal_px=focal, width=width, height_px=height)


# What each view must show for its scripted events to be scored.
_REQUIRED = {"gate": {ZoneKind.DUTY_POST}, "lot": {ZoneKind.FIRE_LANE, ZoneKind.RESTRICTED}}


def _clip_to_frame(points: np.ndarray, width: int, height: int) -> np.ndarray:
    clipped = cv2.intersectConvexConvex(
        points.astype(np.float32), np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    )[1]
    return clipped.reshape(-1, 2) if clipped is not None else np.zeros((0, 2))


def _image_zone(camera: Camera, rect: Rect, min_fraction: float = 0.85) -> tuple[tuple[float, float], ...] | None:
    """A ground rectangle as an image polygon, if (almost) all of it is in the frame."""
    pts = camera.project_polygon(rect_polygon(rect))
    if pts is None:
        return None
    full = abs(polygon_area([tuple(p) for p in pts]))
    clipped = _clip_to_frame(pts, camera.width, camera.height_px)
    if len(clipped) < 3 or full < 60:
        return None
    if abs(polygon_area([tuple(p) for p in clipped])) < min_fraction * full:
        return None
    return tuple((round(float(x), 2), round(float(y), 2)) for x, y in clipped)


def _scene_config(camera: Camera, layout: ParkLayout, name: str) -> SceneConfig:
    zones = []
    for space_name, rect in layout.spaces():
        polygon = _image_zone(camera, rect)
        if polygon is not None:
            zones.append(Zone(space_name, ZoneKind.PARKING_SPACE, polygon, dict(SPACE_PARAMS)))
    for zone_name, kind, rect, params in (
        ("fire-lane", ZoneKind.FIRE_LANE, layout.fire_lane, FIRE_LANE_PARAMS),
        ("restricted", ZoneKind.RESTRICTED, layout.restricted, RESTRICTED_PARAMS),
        ("duty-post", ZoneKind.DUTY_POST, layout.duty_post, DUTY_PARAMS),
    ):
        polygon = _image_zone(camera, rect, min_fraction=0.95)
        if polygon is not None:
            zones.append(Zone(zone_name, kind, polygon, dict(params)))
    lines = []
    a = camera.project(np.array([[layout.entry_x, layout.aisle[1] + 0.3, 0.0]]))[0]
    b = camera.project(np.array([[layout.entry_x, layout.aisle[3] - 0.3, 0.0]]))[0]
    if all(0 <= p[0] <= camera.width and 0 <= p[1] <= camera.height_px for p in (a, b)):
        line = Line("entry", (float(a[0]), float(a[1])), (float(b[0]), float(b[1])))
        outside = camera.project(np.array([[layout.entry_x - 2.0, layout.aisle_y(), 0.0]]))[0]
        if line.side((float(outside[0]), float(outside[1]))) < 0:  # outside must be on the left: crossing it is 'in'
            line = Line("entry", line.b, line.a)
        lines.append(line)
    return SceneConfig(camera=name, width=camera.width, height=camera.height_px, zones=tuple(zones), lines=tuple(lines))


# --- scripting ------------------------------------------------------------------------------------------


def _inside(rect: Rect, x: float, y: float) -> bool:
    return rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3]


class _Script:
    def __init__(self, rng: np.random.Generator, layout: ParkLayout, duration: float, lights_on: float):
        self.rng = rng
        self.layout = layout
        self.duration = duration
        self.lights_on = lights_on
        self.actors: list[Actor] = []
        self.free_spaces = [(n, r) for n, r in layout.spaces()]

    def uniform(self, a: float, b: float) -> float:
        # Short sequences squeeze the scripted windows; an empty window means "at its start".
        return float(self.rng.uniform(a, max(a, b)))

    def vehicle(self, x: float, y: float, heading: float) -> Vehicle:
        body = Vehicle.random(self.rng, x, y, heading)
        # Long vans and trucks do not fit a space's script; the lot's scripted traffic is cars and vans.
        if body.kind == "truck":
            body = Vehicle.random(self.rng, x, y, heading)
        body.lights_on = bool(self.rng.random() < self.lights_on)
        return body

    def take_space(self, row: str | None = None) -> tuple[str, Rect] | None:
        choices = [s for s in self.free_spaces if row is None or s[0].startswith(row)]
        if not choices:
            return None
        picked = choices[int(self.rng.integers(len(choices)))]
        self.free_spaces.remove(picked)
        return picked

    def parked(self, occupancy: float) -> list[Actor]:
        parked = []
        for space in list(self.free_spaces):
            if self.rng.random() < occupancy:
                self.free_spaces.remove(space)
                name, (x0, y0, x1, y1) = space
                heading = float(self.rng.choice([math.pi / 2, -math.pi / 2]))
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                actor = Actor(VEHICLE, Path([(0.0, cx, cy)]), self.vehicle(cx, cy, heading), role=f"parked:{name}")
                self.actors.append(actor)
                parked.append(actor)
        return parked

    def arrival(self, start: float) -> None:
        space = self.take_space()
        if space is None:
            return
        name, (x0, y0, x1, y1) = space
        layout = self.layout
        speed = self.uniform(*VEHICLE_SPEED)
        aisle_y = layout.aisle_y() + self.uniform(-0.5, 0.5)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        near = y1 <= layout.aisle[1] + 0.01  # near row: turn towards the camera
        edge = layout.aisle[1] + 1.0 if near else layout.aisle[3] - 1.0
        path = Path([(start, layout.aisle[0] - 4.0, aisle_y)])
        path.go(cx - 3.0, aisle_y, speed)
        path.go(cx, edge, 2.5)
        path.go(cx, cy, 1.5)
        body = self.vehicle(path.points[0][1], aisle_y, 0.0)
        self.actors.append(Actor(VEHICLE, path, body, appear=start, role=f"arrive:{name}"))

    def departure(self, actor: Actor, start: float) -> None:
        layout = self.layout
        _, cx, cy = actor.path.points[0]
        heading = actor.body.heading
        aisle_y = layout.aisle_y()
        path = Path([(0.0, cx, cy)])
        path.then(start, cx, cy)
        path.go(cx, aisle_y, 1.3, heading=heading)  # reverse out, nose still pointing into the space
        path.wait(0.8)
        path.go(cx - 3.0, aisle_y, 3.0)
        path.go(layout.aisle[0] - 4.0, aisle_y, self.uniform(*VEHICLE_SPEED))
        actor.path = path
        actor.vanish = path.end()
        actor.role = actor.role.replace("parked", "leave")

    def fire_lane_stop(self, start: float, stop_s: float) -> None:
        layout = self.layout
        lane = layout.fire_lane
        y = (layout.road[1] + layout.road[3]) / 2 + self.uniform(-0.3, 0.3)
        stop_x = self.uniform(lane[0] + 3.0, lane[2] - 3.0)
        speed = self.uniform(*VEHICLE_SPEED)
        path = Path([(start, layout.road[2] + 3.0, y)])
        path.go(stop_x, y, speed)
        path.wait(stop_s)
        path.go(layout.road[0] - 3.0, y, speed)
        body = self.vehicle(path.points[0][1], y, math.pi)
        self.actors.append(Actor(VEHICLE, path, body, appear=start, vanish=path.end(), role=f"fire-lane:{stop_s:.0f}s"))

    def intruder(self, start: float, stay_s: float) -> None:
        layout = self.layout
        rx0, ry0, rx1, ry1 = layout.restricted
        speed = self.uniform(*WALK_SPEED)
        # Along the aisle from the lot, then into the fenced area past the end of the far row.
        from_x, from_y = layout.lot_x1 - self.uniform(2.0, 5.0), layout.aisle_y() + self.uniform(-1, 1)
        inside = (self.uniform(rx0 + 1.0, rx1 - 1.0), self.uniform(ry0 + 1.0, ry1 - 1.0))
        path = Path([(start, from_x, from_y)])
        path.go(*inside, speed)
        path.wait(stay_s * 0.4)
        path.go(inside[0] + self.uniform(-0.8, 0.8), inside[1] + self.uniform(-0.8, 0.8), 0.6)
        path.wait(stay_s * 0.4)
        path.go(from_x - self.uniform(0, 3), from_y + self.uniform(-1, 1), speed)
        self.person(path, role=f"intrude:{stay_s:.0f}s", vanish=path.end())

    def line_walker(self, start: float, inward: bool) -> None:
        layout = self.layout
        y = layout.aisle_y() + self.uniform(-2.0, 2.0)
        outside, inside = layout.entry_x - self.uniform(5, 8), layout.entry_x + self.uniform(5, 8)
        path = Path([(start, outside if inward else inside, y)])
        path.go(inside if inward else outside, y + self.uniform(-1, 1), self.uniform(*WALK_SPEED))
        self.person(path, role="walk-in" if inward else "walk-out", vanish=path.end())

    def wanderer(self) -> None:
        layout = self.layout
        y = layout.aisle_y() + self.uniform(-2.5, 2.5)
        # Strolls along the aisle inside the lot, away from the entry line and the restricted area.
        x0 = self.uniform(layout.lot_x0 + 1, layout.lot_x1 - 1)
        x1 = self.uniform(layout.lot_x0 + 1, layout.lot_x1 - 1)
        path = Path([(self.uniform(0, self.duration / 2), x0, y)])
        path.go(x1, y + self.uniform(-1, 1), self.uniform(*WALK_SPEED) * 0.7)
        self.person(path, role="wander", vanish=path.end())

    def person(self, path: Path, role: str, vanish: float = math.inf, guard: bool = False) -> Actor:
        _, x, y = path.points[0]
        body = Pedestrian.random(self.rng, x, y, guard=guard)
        actor = Actor(PERSON, path, body, appear=path.start(), vanish=vanish, guard=guard, role=role)
        self.actors.append(actor)
        return actor

    def _pace(self, path: Path, until: float) -> None:
        """Walk between spots of the post (beside the booth) with short stops, until ``until``."""
        px0, py0, px1, py1 = self.layout.duty_post
        while path.end() < until:
            target = (self.uniform(px0 + 2.2, px1 - 0.4), self.uniform(py0 + 0.5, py1 - 0.5))
            path.go(*target, 0.9)
            path.wait(self.uniform(0.5, 2.5))

    def guard(self, scenario: str) -> Actor:
        """The guard at the duty post: leaves it for a while, paces at it, dozes at it (from the start or later).

        Only ``doze`` and ``doze_later`` stand still for long; a guard back from a round paces, so
        no inactivity starts too close to the end of a sequence to be confirmed.
        """
        px0, py0, px1, py1 = self.layout.duty_post
        # Beside the booth (it fills the post's front left corner), where the camera sees the guard.
        post = (self.uniform(px0 + 2.3, px1 - 0.6), self.uniform(py0 + 0.6, py1 - 1.0))
        path = Path([(0.0, *post)])
        if scenario == "leave":
            away_s = self.uniform(28, 36) if self.rng.random() < 0.75 else self.uniform(6, 12)
            # Away from the lot (not across the entry line), to the left along the near row.
            away = (px0 - self.uniform(4, 7), (py0 + py1) / 2 + self.uniform(-1.5, 1.5))
            self._pace(path, self.uniform(4, 12))
            walk = math.hypot(away[0] - path.points[-1][1], away[1] - path.points[-1][2]) / 1.3
            path.go(*away, 1.3)
            path.wait(max(away_s - 2 * walk, 1.0))
            path.go(*post, 1.3)
            self._pace(path, self.duration)
        elif scenario == "pace":
            self._pace(path, self.duration)
        elif scenario == "doze_later":
            self._pace(path, self.uniform(6, 14))
        return self.person(path, role=f"guard:{scenario}", guard=True)


# --- ground truth ---------------------------------------------------------------------------------------


def _sample_times(duration: float, step: float = 0.05) -> np.ndarray:
    return np.arange(0.0, duration + 1e-9, step)


def _intervals(mask: np.ndarray, times: np.ndarray) -> list[tuple[float, float | None]]:
    """Runs of True as (start, end); end is None when the run lasts to the end."""
    out, start = [], None
    for t, flag in zip(times, mask, strict=True):
        if flag and start is None:
            start = float(t)
        elif not flag and start is not None:
            out.append((start, float(t)))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def _on_duty(clock: datetime, hours: list[list[str]]) -> bool:
    minutes = clock.hour * 60 + clock.minute
    for begin, end in hours:
        b = int(begin[:2]) * 60 + int(begin[3:])
        e = int(end[:2]) * 60 + int(end[3:])
        if (b <= minutes < e) if b <= e else (minutes >= b or minutes < e):
            return True
    return False


def ground_truth(
    actors: list[Actor], layout: ParkLayout, config: SceneConfig, duration: float, clock_start: datetime
) -> list[Event]:
    times = _sample_times(duration)
    camera = config.camera
    zone_names = {z.name for z in config.zones}
    events: list[Event] = []

    def positions(actor: Actor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        xs, ys, moving = np.empty(len(times)), np.empty(len(times)), np.zeros(len(times), bool)
        for k, t in enumerate(times):
            xs[k], ys[k], _, moving[k] = actor.path.state(float(t))
        present = np.array([actor.present(float(t)) for t in times])
        return xs, ys, moving, present

    tracks = {id(a): (a, *positions(a)) for a in actors}
    vehicles = [v for v in tracks.values() if v[0].kind == VEHICLE]
    people = [p for p in tracks.values() if p[0].kind == PERSON]

    for name, rect in layout.spaces():
        if name not in zone_names:
            continue
        occupied = np.zeros(len(times), bool)
        for _, xs, ys, _, present in vehicles:
            occupied |= present & (xs >= rect[0]) & (xs <= rect[2]) & (ys >= rect[1]) & (ys <= rect[3])
        for start, end in _intervals(occupied, times):
            events.append(Event(Rule.OCCUPANCY, camera, name, start, attributes={"state": "occupied"}))
            if end is not None and duration - end >= SPACE_PARAMS["off_s"]:
                events.append(Event(Rule.OCCUPANCY, camera, name, end, attributes={"state": "free"}))

    if "fire-lane" in zone_names:
        lane = layout.fire_lane
        for _, xs, ys, _, present in vehicles:
            inside = present & (xs >= lane[0]) & (xs <= lane[2]) & (ys >= lane[1]) & (ys <= lane[3])
            for start, end in _intervals(inside, times):
                if (end if end is not None else duration) - start > FIRE_LANE_PARAMS["dwell_s"]:
                    events.append(Event(Rule.FIRE_LANE, camera, "fire-lane", start, end))

    if "restricted" in zone_names:
        area = layout.restricted
        for _, xs, ys, _, present in people:
            inside = present & (xs >= area[0]) & (xs <= area[2]) & (ys >= area[1]) & (ys <= area[3])
            for start, end in _intervals(inside, times):
                if (end if end is not None else duration) - start >= RESTRICTED_PARAMS["min_s"]:
                    events.append(Event(Rule.INTRUSION, camera, "restricted", start, end))

    if config.lines:
        aisle = layout.aisle
        for actor, xs, ys, _, present in tracks.values():
            side = xs >= layout.entry_x
            for k in range(1, len(times)):
                # The same stretch as the image line: across the aisle, 0.3 m short of each edge.
                on_line = aisle[1] + 0.3 <= ys[k] <= aisle[3] - 0.3
                if present[k] and present[k - 1] and side[k] != side[k - 1] and on_line:
                    direction = "in" if side[k] else "out"
                    label = "vehicle" if actor.kind == VEHICLE else "person"
                    events.append(
                        Event(
                            Rule.LINE_COUNT,
                            camera,
                            "entry",
                            float(times[k]),
                            attributes={"direction": direction, "label": label},
                        )
                    )

    if "duty-post" in zone_names:
        post = layout.duty_post
        staffed = np.zeros(len(times), bool)
        for _, xs, ys, _, present in people:
            staffed |= present & (xs >= post[0]) & (xs <= post[2]) & (ys >= post[1]) & (ys <= post[3])
        on_duty = np.array(
            [_on_duty(clock_start + timedelta(seconds=float(t)), DUTY_PARAMS["duty_hours"]) for t in times]
        )
        for start, end in _intervals(~staffed & on_duty, times):
            if (end if end is not None else duration) - start > DUTY_PARAMS["empty_s"]:
                events.append(Event(Rule.OFF_DUTY, camera, "duty-post", start, end))
        for _, xs, ys, moving, present in people:
            inside = present & (xs >= post[0]) & (xs <= post[2]) & (ys >= post[1]) & (ys <= post[3])
            for start, end in _intervals(inside & ~moving, times):
                if (end if end is not None else duration) - start > DUTY_PARAMS["still_s"]:
                    events.append(Event(Rule.INACTIVITY, camera, "duty-post", start, end))
    return sorted(events, key=lambda e: (e.start, e.rule.value, e.zone))


# --- the public entry point ---------------------------------------------------------------------------


def generate_sequence(
    seed: int,
    *,
    duration_s: float = 60.0,
    fps: float = 5.0,
    condition: str | None = None,
    view: str | None = None,
    camera: str = "cam-1",
) -> Sequence:
    """A scripted sequence; the same seed gives the same frames and the same event log."""
    from smartpark.scenes import FRAME_HEIGHT, FRAME_WIDTH, _random_static

    rng = np.random.default_rng([seed, 13])
    chosen = condition or CONDITIONS[int(rng.integers(len(CONDITIONS)))]
    chosen_view = view or CAMERA_VIEWS[int(rng.integers(len(CAMERA_VIEWS)))]
    for _ in range(100):
        layout = random_layout(rng, spaces_per_row=(4, 7))
        cam = view_camera(rng, layout, chosen_view, FRAME_WIDTH, FRAME_HEIGHT)
        config = _scene_config(cam, layout, camera)
        kinds = {z.kind for z in config.zones}
        if _REQUIRED[chosen_view] <= kinds and (config.lines or chosen_view != "gate"):
            break
    else:  # pragma: no cover - the camera ranges make this practically impossible
        raise RuntimeError(f"no {chosen_view} view found for seed {seed}")
    lighting = random_lighting(rng, chosen)
    trees, poles = _random_static(rng, layout)
    # Trees only behind the lot: one in front of a zone would hide it for the whole sequence.
    trees = [t for t in trees if t.y > layout.far_row[3]]
    renderer = SceneRenderer(layout, cam, lighting, trees=trees, poles=poles, texture_seed=int(rng.integers(2**31)))

    hour = {"day": (8, 16), "dusk": (18, 20), "rain": (7, 18), "night": (22, 28)}[chosen]
    clock_start = datetime(2026, 6, 1) + timedelta(hours=float(rng.uniform(*hour)))

    script = _Script(rng, layout, duration_s, lighting.lights_on)
    parked = script.parked(float(rng.uniform(0.35, 0.75)))
    for _ in range(int(rng.integers(1, 3))):
        script.arrival(script.uniform(0, duration_s * 0.6))
    if parked:
        for actor in rng.choice(parked, size=min(len(parked), int(rng.integers(1, 3))), replace=False):
            script.departure(actor, script.uniform(2, duration_s * 0.55))
    if rng.random() < 0.9:
        stop = script.uniform(14, 32) if rng.random() < 0.7 else script.uniform(2, 5)
        script.fire_lane_stop(script.uniform(0, max(duration_s - stop - 12, 1)), stop)
    if rng.random() < 0.9:
        script.intruder(script.uniform(2, duration_s * 0.35), script.uniform(3, 8))
        if rng.random() < 0.4:
            script.intruder(script.uniform(duration_s * 0.6, duration_s * 0.75), script.uniform(3, 6))
    for _ in range(int(rng.integers(1, 4))):
        script.line_walker(script.uniform(0, duration_s * 0.75), inward=bool(rng.random() < 0.5))
    for _ in range(int(rng.integers(0, 3))):
        script.wanderer()
    script.guard(str(rng.choice(["leave", "doze", "pace", "doze_later"], p=[0.45, 0.2, 0.15, 0.2])))

    events = ground_truth(script.actors, layout, config, duration_s, clock_start)
    return Sequence(
        seed=seed, condition=chosen, view=chosen_view, fps=fps, duration_s=duration_s, config=config,
        clock_start=clock_start, events=events, renderer=renderer, actors=script.actors, layout=layout,
    )  # fmt: skip
