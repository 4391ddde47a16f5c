"""Zones and lines of a camera view, in image pixels, and the scene-config schema that validates them.

Every check a user's polygon can fail names the zone, so an operator drawing on a snapshot knows
which shape to fix. Pure numpy/python: the agent imports this.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

Point = tuple[float, float]


class ZoneKind(StrEnum):
    PARKING_SPACE = "parking_space"
    FIRE_LANE = "fire_lane"
    RESTRICTED = "restricted"
    DUTY_POST = "duty_post"


class GeometryError(ValueError):
    """A zone or line that cannot be used; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Zone:
    name: str
    kind: ZoneKind
    polygon: tuple[Point, ...]
    # Rule settings for this zone (seconds, duty hours, ...); defaults live with each rule.
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def contains(self, point: Point) -> bool:
        return point_in_polygon(point, self.polygon)


@dataclass(frozen=True)
class Line:
    """A directed line a→b: crossing from its left to its right (image coordinates, y down) is 'in'."""

    name: str
    a: Point
    b: Point
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def side(self, point: Point) -> float:
        """> 0 on the left of a→b as seen on screen (y grows downwards), < 0 on the right."""
        (ax, ay), (bx, by), (px, py) = self.a, self.b, point
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@dataclass(frozen=True)
class SceneConfig:
    """What one camera watches: its frame size, its zones and its counting lines."""

    camera: str
    width: int
    height: int
    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()
    version: int = 1

    def zones_of(self, kind: ZoneKind) -> tuple[Zone, ...]:
        return tuple(zone for zone in self.zones if zone.kind == kind)

    def to_dict(self) -> dict:
        return {
            "camera": self.camera,
            "width": self.width,
            "height": self.height,
            "version": self.version,
            "zones": [
                {"name": z.name, "kind": z.kind.value, "polygon": [list(p) for p in z.polygon], "params": z.params}
                for z in self.zones
            ],
            "lines": [{"name": ln.name, "a": list(ln.a), "b": list(ln.b), "params": ln.params} for ln in self.lines],
        }


# --- geometry primitives -----------------------------------------------------------------------


def polygon_area(polygon: Sequence[Point]) -> float:
    """Signed area (shoelace); positive when the vertices run clockwise on screen (y down)."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        total += x1 * y2 - x2 * y1
    return total / 2


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule; points on an edge count as inside only by chance, which rules never rely on."""
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < cross_x:
                inside = not inside
    return inside


def _orientation(p: Point, q: Point, r: Point) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Proper or touching intersection of segments p1p2 and q1q2."""
    d1, d2 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    d3, d4 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True

    def on_segment(a: Point, b: Point, c: Point) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return (
        (d1 == 0 and on_segment(q1, q2, p1))
        or (d2 == 0 and on_segment(q1, q2, p2))
        or (d3 == 0 and on_segment(p1, p2, q1))
        or (d4 == 0 and on_segment(p1, p2, q2))
    )


def is_simple_polygon(polygon: Sequence[Point]) -> bool:
    """No two non-adjacent edges touch (O(n²), fine for hand-drawn zones)."""
    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if segments_intersect(*edges[i], *edges[j]):
                return False
    return True


# --- validation of user input ---------------------------------------------------------------------

MIN_ZONE_AREA_PX = 16.0
MAX_VERTICES = 64


def _point(value, where: str) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise GeometryError(f"{where}: a point is [x, y], got {value!r}")
    x, y = value
    if not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in (x, y)):
        raise GeometryError(f"{where}: coordinates must be finite numbers, got {value!r}")
    return float(x), float(y)


def _in_frame(point: Point, width: int, height: int) -> bool:
    return 0 <= point[0] <= width and 0 <= point[1] <= height


def validate_zone(raw: dict, width: int, height: int) -> Zone:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise GeometryError(f"a zone needs a name of 1-64 characters, got {name!r}")
    where = f"zone {name!r}"
    try:
        kind = ZoneKind(raw.get("kind"))
    except ValueError:
        kinds = ", ".join(k.value for k in ZoneKind)
        raise GeometryError(f"{where}: kind must be one of {kinds}, got {raw.get('kind')!r}") from None
    vertices = raw.get("polygon")
    if not isinstance(vertices, list | tuple) or not 3 <= len(vertices) <= MAX_VERTICES:
        raise GeometryError(f"{where}: a polygon needs 3 to {MAX_VERTICES} points")
    polygon = tuple(_point(v, where) for v in vertices)
    outside = [p for p in polygon if not _in_frame(p, width, height)]
    if outside:
        raise GeometryError(f"{where}: point {outside[0]} lies outside the {width}x{height} frame")
    if len(set(polygon)) != len(polygon):
        raise GeometryError(f"{where}: the polygon repeats a point")
    # Self-intersection first: a bow-tie's signed area cancels out and would read as "degenerate".
    if not is_simple_polygon(polygon):
        raise GeometryError(f"{where}: the polygon intersects itself; draw its points in order around the zone")
    if abs(polygon_area(polygon)) < MIN_ZONE_AREA_PX:
        raise GeometryError(f"{where}: the polygon is degenerate (area below {MIN_ZONE_AREA_PX:g} px²)")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise GeometryError(f"{where}: params must be an object")
    return Zone(name=name, kind=kind, polygon=polygon, params=dict(params))


def validate_line(raw: dict, width: int, height: int) -> Line:
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise GeometryError(f"a line needs a name of 1-64 characters, got {name!r}")
    where = f"line {name!r}"
    a, b = _point(raw.get("a"), where), _point(raw.get("b"), where)
    for p in (a, b):
        if not _in_frame(p, width, height):
            raise GeometryError(f"{where}: point {p} lies outside the {width}x{height} frame")
    if math.dist(a, b) < 4:
        raise GeometryError(f"{where}: the line is degenerate (its ends are less than 4 px apart)")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise GeometryError(f"{where}: params must be an object")
    return Line(name=name, a=a, b=b, params=dict(params))


def validate_scene_config(raw: dict) -> SceneConfig:
    """Parse and check a scene config (JSON-like dict); raise GeometryError naming the bad part."""
    if not isinstance(raw, dict):
        raise GeometryError("a scene config is an object")
    camera = raw.get("camera")
    if not isinstance(camera, str) or not camera:
        raise GeometryError("a scene config names its camera")
    width, height = raw.get("width"), raw.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 8192 for v in (width, height)):
        raise GeometryError(f"frame size must be whole pixels between 16 and 8192, got {width}x{height}")
    zones = tuple(validate_zone(z, width, height) for z in _items(raw.get("zones", []), "zones"))
    lines = tuple(validate_line(ln, width, height) for ln in _items(raw.get("lines", []), "lines"))
    names = [z.name for z in zones] + [ln.name for ln in lines]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GeometryError(f"zone and line names must be unique; repeated: {', '.join(duplicates)}")
    version = raw.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise GeometryError("version must be a positive integer")
    return SceneConfig(camera=camera, width=width, height=height, zones=zones, lines=lines, version=version)


def _items(value, what: str) -> Iterable[dict]:
    if not isinstance(value, list):
        raise GeometryError(f"{what} must be a list")
    for item in value:
        if not isinstance(item, dict):
            raise GeometryError(f"each of {what} is an object, got {item!r}")
        yield item
