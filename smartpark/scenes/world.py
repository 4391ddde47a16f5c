"""The world of a synthetic park, in metres: the lot's layout and the things in it.

Layout: a sidewalk and the duty post near the camera, a painted fire lane along it, a near and a
far row of marked spaces with an aisle between, an entry on the left crossed by the entry line,
and a restricted area beyond the right end of the rows. Things: vehicles (cars, SUVs, vans,
trucks), pedestrians, trees, lamp poles and the guard's booth, each able to give its faces or
silhouette as world polygons.
"""

import math
from dataclasses import dataclass, field

import numpy as np

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 on the ground


def rect_polygon(rect: Rect, z: float = 0.0) -> np.ndarray:
    x0, y0, x1, y1 = rect
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float)


@dataclass(frozen=True)
class ParkLayout:
    space_width: float
    space_depth: float
    spaces_per_row: int
    sidewalk: Rect
    road: Rect  # the driving lane along the near row; part of it is the fire lane
    fire_lane: Rect
    near_row: Rect
    aisle: Rect
    far_row: Rect
    restricted: Rect
    duty_post: Rect
    booth: Rect
    entry_x: float  # the entry line runs across the aisle at this x
    line_color: tuple[int, int, int]

    @property
    def lot_x0(self) -> float:
        return self.near_row[0]

    @property
    def lot_x1(self) -> float:
        return self.near_row[2]

    def spaces(self) -> list[tuple[str, Rect]]:
        """Named spaces: N1.. along the near row (nose towards the aisle), F1.. along the far row."""
        out = []
        for prefix, row in (("N", self.near_row), ("F", self.far_row)):
            for i in range(self.spaces_per_row):
                x0 = row[0] + i * self.space_width
                out.append((f"{prefix}{i + 1}", (x0, row[1], x0 + self.space_width, row[3])))
        return out

    def aisle_y(self) -> float:
        return (self.aisle[1] + self.aisle[3]) / 2

    def target(self) -> tuple[float, float]:
        return (self.lot_x0 + self.lot_x1) / 2, self.aisle_y()


def random_layout(rng: np.random.Generator, spaces_per_row: tuple[int, int] = (5, 10)) -> ParkLayout:
    width = float(rng.uniform(2.4, 2.8))
    depth = float(rng.uniform(4.8, 5.4))
    count = int(rng.integers(*spaces_per_row))
    x0 = -count * width / 2
    x1 = x0 + count * width
    lane = float(rng.uniform(3.0, 4.0))
    aisle = float(rng.uniform(6.0, 7.5))
    sidewalk = (x0 - 9, -2.5, x1 + 8, 0.0)
    # The painted fire lane is a stretch of the road along the near row, in front of an entrance.
    lane_length = float(rng.uniform(9.0, 13.0))
    lane_start = float(rng.uniform(x0, max(x0, x1 - lane_length)))
    road = (x0 - 9, 0.0, x1 + 8, lane)
    fire_lane = (lane_start, 0.0, lane_start + lane_length, lane)
    near_row = (x0, lane + 0.8, x1, lane + 0.8 + depth)
    aisle_rect = (x0 - 9, near_row[3], x1 + 8, near_row[3] + aisle)
    far_row = (x0, aisle_rect[3], x1, aisle_rect[3] + depth)
    # A fenced-off area past the right end of the far row (a loading dock, a green) is out of bounds for people.
    restricted = (x1 + 1.0, far_row[1] - 1.0, x1 + float(rng.uniform(5.0, 6.5)), far_row[3])
    # The guard's post is by the entrance, at the left end of the near row.
    duty_post = (x0 - 6.5, near_row[1], x0 - 2.5, near_row[3])
    booth = (x0 - 6.3, near_row[1] + 0.2, x0 - 4.8, near_row[1] + 1.7)
    white = rng.random() < 0.75
    return ParkLayout(
        space_width=width,
        space_depth=depth,
        spaces_per_row=count,
        sidewalk=sidewalk,
        road=road,
        fire_lane=fire_lane,
        near_row=near_row,
        aisle=aisle_rect,
        far_row=far_row,
        restricted=restricted,
        duty_post=duty_post,
        booth=booth,
        entry_x=x0 - 2.0,
        line_color=(235, 235, 228) if white else (230, 200, 60),
    )


# --- things ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Face:
    polygon: np.ndarray  # (4, 3) world
    normal: np.ndarray
    color: tuple[float, float, float]
    glass: bool = False


def _box_faces(cx, cy, heading, length, width, z0, z1, color, glass_sides=False, glass_ends=False) -> list[Face]:
    """The five faces (no bottom) of an oriented box; sides run along ``heading``."""
    ch, sh = math.cos(heading), math.sin(heading)
    fwd, side = np.array([ch, sh, 0.0]), np.array([-sh, ch, 0.0])
    centre = np.array([cx, cy, 0.0])
    hl, hw = length / 2, width / 2

    def corner(a, b, z):
        return centre + fwd * a + side * b + np.array([0, 0, z])

    front = [corner(hl, -hw, z0), corner(hl, hw, z0), corner(hl, hw, z1), corner(hl, -hw, z1)]
    back = [corner(-hl, hw, z0), corner(-hl, -hw, z0), corner(-hl, -hw, z1), corner(-hl, hw, z1)]
    left = [corner(-hl, hw, z0), corner(hl, hw, z0), corner(hl, hw, z1), corner(-hl, hw, z1)]
    right = [corner(hl, -hw, z0), corner(-hl, -hw, z0), corner(-hl, -hw, z1), corner(hl, -hw, z1)]
    top = [corner(-hl, -hw, z1), corner(hl, -hw, z1), corner(hl, hw, z1), corner(-hl, hw, z1)]
    return [
        Face(np.array(front), fwd, color, glass_ends),
        Face(np.array(back), -fwd, color, glass_ends),
        Face(np.array(left), side, color, glass_sides),
        Face(np.array(right), -side, color, glass_sides),
        Face(np.array(top), np.array([0, 0, 1.0]), color),
    ]


VEHICLE_KINDS = ("car", "suv", "van", "truck")
_VEHICLE_SIZES = {  # length, width, body height range (m)
    "car": ((3.9, 4.9), (1.7, 1.85), (0.95, 1.05)),
    "suv": ((4.4, 5.0), (1.8, 1.95), (1.05, 1.2)),
    "van": ((4.9, 6.0), (1.9, 2.05), (1.9, 2.3)),
    "truck": ((6.0, 7.8), (2.2, 2.45), (2.6, 3.2)),
}
_PAINTS = [
    (200, 200, 205), (30, 30, 34), (240, 240, 240), (150, 20, 25), (25, 50, 120), (90, 95, 100),
    (130, 135, 140), (20, 80, 40), (210, 160, 30), (110, 70, 40), (60, 110, 160), (230, 110, 20),
]  # fmt: skip


@dataclass
class Vehicle:
    x: float
    y: float
    heading: float
    kind: str
    length: float
    width: float
    body_height: float
    color: tuple[int, int, int]
    lights_on: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator, x: float, y: float, heading: float) -> "Vehicle":
        kind = VEHICLE_KINDS[int(rng.choice(4, p=[0.55, 0.22, 0.15, 0.08]))]
        (l0, l1), (w0, w1), (h0, h1) = _VEHICLE_SIZES[kind]
        paint = _PAINTS[int(rng.integers(len(_PAINTS)))]
        jitter = rng.integers(-18, 19, 3)
        color = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(paint, jitter, strict=True))
        return cls(
            x, y, heading, kind, float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)),
            float(rng.uniform(h0, h1)), color,
        )  # fmt: skip

    @property
    def total_height(self) -> float:
        return self.body_height + (0.5 if self.kind in ("car", "suv") else 0.0)

    def faces(self) -> list[Face]:
        color = tuple(float(c) for c in self.color)
        clearance = 0.28
        if self.kind in ("car", "suv"):
            body = _box_faces(self.x, self.y, self.heading, self.length, self.width, clearance, self.body_height, color)
            # The cabin sits a little back of centre, narrower, all glass but its roof.
            shift = -0.08 * self.length
            cx = self.x + shift * math.cos(self.heading)
            cy = self.y + shift * math.sin(self.heading)
            cabin = _box_faces(
                cx, cy, self.heading, self.length * 0.5, self.width * 0.86, self.body_height,
                self.total_height, color, glass_sides=True, glass_ends=True,
            )  # fmt: skip
            return body + cabin
        if self.kind == "van":
            return _box_faces(
                self.x,
                self.y,
                self.heading,
                self.length,
                self.width,
                clearance,
                self.body_height,
                color,
                glass_ends=True,
            )
        # Truck: a cab in front of a taller cargo box.
        cab_len = 1.9
        ch, sh = math.cos(self.heading), math.sin(self.heading)
        cab_off = self.length / 2 - cab_len / 2
        box_len = self.length - cab_len - 0.2
        box_off = -(self.length / 2 - box_len / 2)
        cargo_color = (225.0, 225.0, 220.0) if self.color[0] > 100 else color
        cab = _box_faces(
            self.x + cab_off * ch, self.y + cab_off * sh, self.heading, cab_len, self.width * 0.96, clearance + 0.2,
            self.body_height * 0.8, color, glass_ends=True,
        )  # fmt: skip
        cargo = _box_faces(
            self.x + box_off * ch, self.y + box_off * sh, self.heading, box_len, self.width, clearance + 0.3,
            self.body_height, cargo_color,
        )  # fmt: skip
        return cargo + cab

    def footprint(self) -> np.ndarray:
        ch, sh = math.cos(self.heading), math.sin(self.heading)
        hl, hw = self.length / 2, self.width / 2
        return np.array(
            [
                [self.x + a * ch - b * sh, self.y + a * sh + b * ch, 0.0]
                for a, b in ((hl, hw), (hl, -hw), (-hl, -hw), (-hl, hw))
            ]
        )

    def silhouette_points(self) -> np.ndarray:
        foot = self.footprint()
        top = foot.copy()
        top[:, 2] = self.total_height
        return np.concatenate([foot, top])

    def lamp_points(self) -> tuple[np.ndarray, np.ndarray]:
        """World positions of the two headlights and the two tail lights."""
        ch, sh = math.cos(self.heading), math.sin(self.heading)
        hl, hw, z = self.length / 2 + 0.02, self.width / 2 - 0.25, 0.7

        def at(a, b):
            return [self.x + a * ch - b * sh, self.y + a * sh + b * ch, z]

        return np.array([at(hl, hw), at(hl, -hw)]), np.array([at(-hl, hw), at(-hl, -hw)])


_SHIRTS = [(200, 40, 40), (40, 60, 160), (235, 235, 235), (30, 30, 30), (60, 140, 70), (230, 180, 40), (120, 80, 150)]
_PANTS = [(30, 35, 60), (40, 40, 40), (90, 80, 70), (20, 20, 25), (130, 120, 100)]
_SKIN = [(230, 190, 160), (190, 140, 110), (140, 95, 70), (90, 60, 45)]
GUARD_SHIRT = (35, 45, 80)


@dataclass
class Pedestrian:
    x: float
    y: float
    height: float
    heading: float
    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    skin: tuple[int, int, int]
    stride_phase: float = 0.0  # 0 when standing; grows with distance walked
    width: float = 0.5

    @classmethod
    def random(cls, rng: np.random.Generator, x: float, y: float, heading: float = 0.0, guard: bool = False):
        return cls(
            x, y, float(rng.uniform(1.55, 1.92)), heading,
            GUARD_SHIRT if guard else _SHIRTS[int(rng.integers(len(_SHIRTS)))],
            (25, 30, 45) if guard else _PANTS[int(rng.integers(len(_PANTS)))],
            _SKIN[int(rng.integers(len(_SKIN)))], 0.0, float(rng.uniform(0.45, 0.58)),
        )  # fmt: skip

    def silhouette_points(self) -> np.ndarray:
        r = self.width / 2
        return np.array([[self.x - r, self.y, 0.0], [self.x + r, self.y, 0.0], [self.x, self.y, self.height]])


@dataclass
class Tree:
    x: float
    y: float
    trunk_height: float
    crown_radius: float
    shade: tuple[int, int, int]


@dataclass
class Pole:
    x: float
    y: float
    height: float


@dataclass
class SceneObjects:
    vehicles: list[Vehicle] = field(default_factory=list)
    pedestrians: list[Pedestrian] = field(default_factory=list)
