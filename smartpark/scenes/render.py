"""Rendering a park camera's frame: painter's algorithm with OpenCV polygons, lighting per condition,
sensor noise, blur and JPEG artifacts; and the ground-truth boxes of what the frame shows.

The static part of a view (sky, ground, markings, far buildings) is drawn once per scene; each
frame adds shadows, the objects in depth order (occluders included), the condition's light and
the camera's imperfections. A half-resolution id buffer drawn in the same order tells how much of
each object is visible, so boxes of mostly hidden or cut-off objects are marked ``ignore``.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from smartpark.detections import PERSON, VEHICLE
from smartpark.scenes.camera import Camera
from smartpark.scenes.world import ParkLayout, Pedestrian, Pole, Tree, Vehicle, rect_polygon

CONDITIONS = ("day", "dusk", "night", "rain")

# Below this a person or vehicle is not something a detector can be asked to find.
MIN_BOX_HEIGHT_PX = {VEHICLE: 7.0, PERSON: 9.0}
MIN_VISIBLE_FRACTION = 0.4


@dataclass(frozen=True)
class Lighting:
    condition: str
    brightness: float
    tint: tuple[float, float, float]
    sun: tuple[float, float, float] | None  # unit vector towards the sun; None at night
    shadow_strength: float
    noise_sigma: float
    blur_sigma: float
    jpeg_quality: int
    rain: float  # streak density, 0 when dry
    lights_on: float  # probability that a vehicle has its lights on


def random_lighting(rng: np.random.Generator, condition: str) -> Lighting:
    azimuth = float(rng.uniform(0, 2 * math.pi))

    def sun(elevation_deg: float) -> tuple[float, float, float]:
        e = math.radians(elevation_deg)
        return (math.cos(e) * math.cos(azimuth), math.cos(e) * math.sin(azimuth), math.sin(e))

    if condition == "day":
        return Lighting(condition, float(rng.uniform(0.9, 1.15)), (1.0, 1.0, 1.0), sun(rng.uniform(30, 70)),
                        float(rng.uniform(0.35, 0.55)), float(rng.uniform(1.5, 4)), float(rng.uniform(0, 0.6)),
                        int(rng.integers(45, 95)), 0.0, 0.05)  # fmt: skip
    if condition == "dusk":
        return Lighting(condition, float(rng.uniform(0.5, 0.75)), (1.08, 0.9, 0.75), sun(rng.uniform(6, 18)),
                        float(rng.uniform(0.2, 0.35)), float(rng.uniform(3, 6)), float(rng.uniform(0, 0.8)),
                        int(rng.integers(40, 90)), 0.0, 0.5)  # fmt: skip
    if condition == "night":
        return Lighting(condition, float(rng.uniform(0.16, 0.3)), (0.85, 0.9, 1.1), None, 0.0,
                        float(rng.uniform(4, 9)), float(rng.uniform(0.3, 1.0)), int(rng.integers(35, 85)),
                        0.0, 0.9)  # fmt: skip
    if condition == "rain":
        return Lighting(condition, float(rng.uniform(0.45, 0.7)), (0.92, 0.96, 1.02), sun(rng.uniform(25, 60)),
                        float(rng.uniform(0.0, 0.12)), float(rng.uniform(3, 7)), float(rng.uniform(0.5, 1.2)),
                        int(rng.integers(35, 85)), float(rng.uniform(0.6, 1.0)), 0.6)  # fmt: skip
    raise ValueError(f"unknown condition {condition!r}; use one of {', '.join(CONDITIONS)}")


@dataclass(frozen=True)
class RenderedObject:
    kind: int  # VEHICLE or PERSON
    box: tuple[float, float, float, float]
    ignore: bool
    visible_fraction: float


_NOISE_BANK_SHAPE = (4, 256, 336, 3)
_noise_bank: np.ndarray | None = None


def _noise(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Unit Gaussian noise: a random window of a fixed bank (drawing fresh normals per frame costs more
    than the rest of the frame; a window at a random offset is just as unpredictable to a detector)."""
    global _noise_bank
    if _noise_bank is None:
        _noise_bank = np.random.default_rng(12345).standard_normal(_NOISE_BANK_SHAPE, dtype=np.float32)
    h, w, _ = shape
    k = int(rng.integers(_NOISE_BANK_SHAPE[0]))
    dy, dx = int(rng.integers(_NOISE_BANK_SHAPE[1] - h + 1)), int(rng.integers(_NOISE_BANK_SHAPE[2] - w + 1))
    return _noise_bank[k, dy : dy + h, dx : dx + w]


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points * 4).astype(np.int32).reshape(-1, 1, 2)  # 2 fractional bits


def _fill(img: np.ndarray, points: np.ndarray, color) -> None:
    cv2.fillPoly(img, [_poly(points)], color, lineType=cv2.LINE_AA, shift=2)


class SceneRenderer:
    """Renders one camera's view of one park under one lighting; frames differ by their objects."""

    def __init__(
        self,
        layout: ParkLayout,
        camera: Camera,
        lighting: Lighting,
        *,
        trees: list[Tree],
        poles: list[Pole],
        texture_seed: int,
    ):
        self.layout = layout
        self.camera = camera
        self.lighting = lighting
        self.trees = trees
        self.poles = poles
        self.size = (camera.height_px, camera.width)
        rng = np.random.default_rng(texture_seed)
        self.background = self._render_background(rng)
        self.light_pools = self._light_pools()

    # --- static part ---------------------------------------------------------------------------

    def _ground(self, img: np.ndarray, rect, color) -> None:
        pts = self.camera.project_polygon(rect_polygon(rect))
        if pts is not None:
            _fill(img, pts, color)

    def _render_background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        cam, layout = self.camera, self.layout
        img = np.zeros((h, w, 3), np.float32)
        horizon = cam.horizon_v()
        sky_top, sky_bottom = np.array([120, 160, 215], np.float32), np.array([200, 215, 230], np.float32)
        rows = np.clip((np.arange(h, dtype=np.float32) + 40) / max(horizon + 40, 1), 0, 1)[:, None, None]
        img[:] = sky_top * (1 - rows) + sky_bottom * rows
        grass = np.array([70, 110, 55], np.float32) * float(rng.uniform(0.8, 1.15))
        self._ground(img, (cam.x - 200, cam.y, cam.x + 200, cam.y + 400), grass.tolist())
        asphalt = float(rng.uniform(70, 115))
        tone = (asphalt, asphalt * float(rng.uniform(0.97, 1.02)), asphalt * float(rng.uniform(0.98, 1.06)))
        x0, x1 = layout.lot_x0, layout.lot_x1
        self._ground(img, (x0 - 30, layout.road[1], x1 + 10, layout.far_row[3] + 2.5), tone)
        self._ground(img, (x0 - 30, layout.aisle[1], x1 + 10, layout.aisle[3]), tone)
        self._ground(img, layout.sidewalk, (150, 148, 140))
        # Painted fire lane: red or yellow with white hatching.
        paint = (170, 40, 35) if rng.random() < 0.6 else (205, 170, 40)
        self._ground(img, layout.fire_lane, paint)
        fx0, fy0, fx1, fy1 = layout.fire_lane
        step = 2.0
        for hx in np.arange(fx0, fx1 - 1.0, step):
            stripe = np.array([[hx, fy0, 0], [hx + 0.35, fy0, 0], [hx + 1.35, fy1, 0], [hx + 1.0, fy1, 0]], float)
            pts = cam.project_polygon(stripe)
            if pts is not None:
                _fill(img, pts, (225, 225, 220))
        # Restricted area: grass or gravel with a yellow-black border.
        rx0, ry0, rx1, ry1 = layout.restricted
        self._ground(img, (rx0 - 0.3, ry0 - 0.3, rx1 + 0.3, ry1 + 0.3), (215, 180, 30))
        self._ground(img, layout.restricted, (85, 125, 60) if rng.random() < 0.5 else (150, 140, 120))
        # Space dividers.
        colour = layout.line_color
        for _, (sx0, sy0, sx1, sy1) in layout.spaces():
            for lx in (sx0, sx1):
                self._ground(img, (lx - 0.06, sy0, lx + 0.06, sy1), colour)
        for row in (layout.near_row, layout.far_row):
            self._ground(img, (row[0], row[1] - 0.06, row[2], row[1] + 0.06), colour)
        # Buildings along the far edge give the background some structure.
        for _ in range(int(rng.integers(2, 6))):
            bx = float(rng.uniform(x0 - 25, x1 + 20))
            by = layout.far_row[3] + float(rng.uniform(8, 30))
            bw, bd, bh = float(rng.uniform(8, 25)), float(rng.uniform(6, 15)), float(rng.uniform(4, 14))
            shade = float(rng.uniform(90, 190))
            wall = (shade, shade * float(rng.uniform(0.85, 1.0)), shade * float(rng.uniform(0.75, 1.0)))
            self._draw_box(img, bx, by, bw, bd, bh, wall)
        # Low-frequency texture and grain, so surfaces are never flat colour.
        blotches = cv2.resize(
            rng.uniform(0.85, 1.15, (12, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
        )
        img *= blotches[:, :, None]
        img += _noise(rng, img.shape) * 4.0
        return img

    def _draw_box(self, img, cx, cy, width, depth, height, color) -> None:
        from smartpark.scenes.world import _box_faces

        for face in _box_faces(cx, cy, 0.0, width, depth, 0.0, height, color):
            self._draw_face(img, face.polygon, face.normal, color, glass=False)

    def _light_pools(self) -> np.ndarray | None:
        """Additive light of the lamp poles at night (and under dark rain)."""
        if self.lighting.condition not in ("night", "rain", "dusk"):
            return None
        h, w = self.size
        # Soft light needs no detail: draw and blur at a quarter of the size, then scale up.
        pools = np.zeros((h // 4, w // 4), np.float32)
        for pole in self.poles:
            centre = self.camera.to_camera(np.array([[pole.x, pole.y, 0.0]]))[0]
            if centre[2] < 1:
                continue
            u, v = self.camera.project_camera(centre[None])[0] / 4
            radius = self.camera.focal_px * 4.5 / centre[2] / 4
            axes = (max(int(radius * 1.3), 1), max(int(radius * 0.6), 1))
            cv2.ellipse(pools, (int(u), int(v)), axes, 0, 0, 360, 1.0, -1)
        pools = cv2.resize(cv2.GaussianBlur(pools, (0, 0), 2.5), (w, h), interpolation=cv2.INTER_LINEAR)
        strength = {"night": 95.0, "rain": 35.0, "dusk": 25.0}[self.lighting.condition]
        return pools[:, :, None] * np.array([1.0, 0.92, 0.75], np.float32) * strength

    # --- shading ---------------------------------------------------------------------------------

    def _shade(self, normal: np.ndarray, color, glass: bool) -> tuple[float, float, float]:
        sun = self.lighting.sun
        light = 0.62 + 0.38 * max(0.0, float(np.dot(normal, sun))) if sun is not None else 0.75 + 0.2 * normal[2]
        if glass:
            return (38 * light + 20, 48 * light + 22, 58 * light + 26)
        return tuple(float(c) * light for c in color)

    def _draw_face(self, img, polygon: np.ndarray, normal: np.ndarray, color, glass: bool) -> np.ndarray | None:
        to_camera = self.camera.position - polygon[0]
        if float(np.dot(normal, to_camera)) <= 0:
            return None  # facing away
        pts = self.camera.project_polygon(polygon)
        if pts is not None:
            _fill(img, pts, self._shade(normal, color, glass))
        return pts

    # --- per frame ----------------------------------------------------------------------------------

    def render(
        self, vehicles: list[Vehicle], pedestrians: list[Pedestrian], rng: np.random.Generator
    ) -> tuple[np.ndarray, list[RenderedObject]]:
        """The frame (uint8 RGB) and one RenderedObject per vehicle, then per pedestrian, in input order."""
        img = self.background.copy()
        self._draw_shadows(img, vehicles, pedestrians)
        h, w = self.size
        ids = np.zeros((h // 2, w // 2), np.uint16)
        items: list[tuple[float, str, object]] = []
        for i, vehicle in enumerate(vehicles):
            items.append((self.camera.depth((vehicle.x, vehicle.y, 0.0)), "vehicle", i))
        for i, person in enumerate(pedestrians):
            items.append((self.camera.depth((person.x, person.y, 0.0)), "person", i))
        for i, tree in enumerate(self.trees):
            items.append((self.camera.depth((tree.x, tree.y, 0.0)), "tree", i))
        for i, pole in enumerate(self.poles):
            items.append((self.camera.depth((pole.x, pole.y, 0.0)), "pole", i))
        booth = self.layout.booth
        items.append((self.camera.depth(((booth[0] + booth[2]) / 2, (booth[1] + booth[3]) / 2, 0.0)), "booth", 0))
        items.sort(key=lambda item: -item[0])

        hulls: dict[tuple[str, int], np.ndarray] = {}
        lamps = []
        for order, (depth, kind, index) in enumerate(items, start=1):
            if depth < 1.0:
                continue
            if kind == "vehicle":
                hull = self._draw_vehicle(img, vehicles[index])
                if vehicles[index].lights_on:
                    lamps.append(vehicles[index])
            elif kind == "person":
                hull = self._draw_person(img, pedestrians[index], depth)
            elif kind == "tree":
                hull = self._draw_tree(img, self.trees[index])
            elif kind == "pole":
                hull = self._draw_pole(img, self.poles[index])
            else:
                hull = self._draw_booth(img)
            if hull is not None:
                hulls[(kind, index)] = hull
                cv2.fillPoly(ids, [_poly(hull / 2)], order, shift=2)

        visible = np.bincount(ids.ravel(), minlength=len(items) + 1)
        order_of = {(kind, index): order for order, (_, kind, index) in enumerate(items, start=1)}
        objects = [self._ground_truth(hulls.get(("vehicle", i)), visible[order_of[("vehicle", i)]], VEHICLE)
                   for i in range(len(vehicles))]  # fmt: skip
        objects += [self._ground_truth(hulls.get(("person", i)), visible[order_of[("person", i)]], PERSON)
                    for i in range(len(pedestrians))]  # fmt: skip
        return self._finish(img, lamps, rng), objects

    def _ground_truth(self, hull: np.ndarray | None, visible_px: int, kind: int) -> RenderedObject:
        h, w = self.size
        if hull is None:
            return RenderedObject(kind, (0.0, 0.0, 0.0, 0.0), True, 0.0)
        x0, y0 = hull.min(axis=0)
        x1, y1 = hull.max(axis=0)
        box = (float(np.clip(x0, 0, w)), float(np.clip(y0, 0, h)), float(np.clip(x1, 0, w)), float(np.clip(y1, 0, h)))
        area = max(cv2.contourArea(hull.astype(np.float32)) / 4.0, 1.0)
        fraction = float(min(1.0, visible_px / area))
        too_small = (box[3] - box[1]) < MIN_BOX_HEIGHT_PX[kind] or (box[2] - box[0]) < 3
        return RenderedObject(kind, box, bool(too_small or fraction < MIN_VISIBLE_FRACTION), fraction)

    def _draw_shadows(self, img, vehicles, pedestrians) -> None:
        sun, strength = self.lighting.sun, self.lighting.shadow_strength
        if sun is None or strength <= 0:
            return
        h, w = self.size
        mask = np.zeros((h, w), np.uint8)
        reach = 1.0 / max(math.tan(math.asin(sun[2])), 0.25)
        offset = -np.array([sun[0], sun[1]]) / max(math.hypot(sun[0], sun[1]), 1e-6) * reach

        def cast(footprint: np.ndarray, height: float) -> None:
            moved = footprint.copy()
            moved[:, :2] += offset * height
            ground = np.concatenate([footprint, moved])[:, :2].astype(np.float32)
            hull = cv2.convexHull(ground).reshape(-1, 2)
            pts = self.camera.project_polygon(np.column_stack([hull, np.zeros(len(hull))]))
            if pts is not None:
                cv2.fillPoly(mask, [_poly(pts)], 255, lineType=cv2.LINE_AA, shift=2)

        for vehicle in vehicles:
            cast(vehicle.footprint(), vehicle.total_height)
        for person in pedestrians:
            r = person.width / 2
            feet = np.array([[-r, -0.15, 0], [r, -0.15, 0], [r, 0.15, 0], [-r, 0.15, 0]]) + [person.x, person.y, 0]
            cast(feet, person.height)
        for tree in self.trees:
            r = tree.crown_radius
            cast(np.array([[tree.x - r, tree.y - r, 0], [tree.x + r, tree.y - r, 0], [tree.x + r, tree.y + r, 0],
                           [tree.x - r, tree.y + r, 0]]), tree.trunk_height + r)  # fmt: skip
        mask = cv2.GaussianBlur(mask, (5, 5), 0)
        img *= (1.0 - strength * mask.astype(np.float32) / 255.0)[:, :, None]

    def _draw_vehicle(self, img, vehicle: Vehicle) -> np.ndarray | None:
        pts = self.camera.project_polygon(vehicle.silhouette_points()[:4])
        if pts is None:
            return None
        for face in vehicle.faces():
            self._draw_face(img, face.polygon, face.normal, face.color, face.glass)
        # Wheels: dark patches low on the visible sides.
        ch, sh = math.cos(vehicle.heading), math.sin(vehicle.heading)
        for along in (0.32, -0.32):
            for across in (1, -1):
                wx = vehicle.x + along * vehicle.length * ch - across * (vehicle.width / 2 + 0.01) * sh
                wy = vehicle.y + along * vehicle.length * sh + across * (vehicle.width / 2 + 0.01) * ch
                normal = np.array([-sh * across, ch * across, 0.0])
                half = 0.33
                wheel = np.array([
                    [wx - half * ch, wy - half * sh, 0.0], [wx + half * ch, wy + half * sh, 0.0],
                    [wx + half * ch, wy + half * sh, 0.62], [wx - half * ch, wy - half * sh, 0.62],
                ])  # fmt: skip
                self._draw_face(img, wheel, normal, (22, 22, 24), glass=False)
        hull_points = self.camera.to_camera(vehicle.silhouette_points())
        if (hull_points[:, 2] < 0.6).any():
            return None
        projected = self.camera.project_camera(hull_points).astype(np.float32)
        return cv2.convexHull(projected).reshape(-1, 2)

    def _person_frame(self, person: Pedestrian, depth: float):
        base = self.camera.project(np.array([[person.x, person.y, 0.0]]))[0]
        top = self.camera.project(np.array([[person.x, person.y, person.height]]))[0]
        scale = self.camera.focal_px / depth  # pixels per metre at the person's distance
        return base, top, scale

    def _draw_person(self, img, person: Pedestrian, depth: float) -> np.ndarray:
        base, top, scale = self._person_frame(person, depth)
        axis = top - base

        def at(fraction: float, across_m: float) -> np.ndarray:
            return base + axis * fraction + np.array([across_m * scale, 0.0])

        half = person.width / 2
        swing = 0.16 * math.sin(person.stride_phase)
        shade = 0.85 if self.lighting.sun is None else 0.75 + 0.25 * max(0.0, self.lighting.sun[2])
        pants = tuple(c * shade for c in person.pants)
        shirt = tuple(c * shade for c in person.shirt)
        skin = tuple(c * shade for c in person.skin)
        for side, phase in ((-1, 1), (1, -1)):
            foot = side * 0.1 + phase * swing
            leg = np.array(
                [
                    at(0.47, side * 0.02),
                    at(0.47, side * half * 0.75),
                    at(0.0, foot + side * 0.07),
                    at(0.0, foot - side * 0.05),
                ]
            )
            _fill(img, leg, pants)
        torso = np.array([at(0.45, -half * 0.78), at(0.45, half * 0.78), at(0.82, half), at(0.82, -half)])
        _fill(img, torso, shirt)
        for side, phase in ((-1, -1), (1, 1)):
            hand = side * (half + 0.02) + phase * swing * 0.6
            arm = np.array(
                [at(0.81, side * half), at(0.81, side * (half - 0.09)), at(0.5, hand - side * 0.08), at(0.5, hand)]
            )
            _fill(img, arm, shirt)
        head_centre = at(0.9, 0.0)
        radius = max(0.11 * scale, 0.8)
        cv2.circle(img, tuple(np.round(head_centre * 4).astype(int)), round(radius * 4), skin, -1, cv2.LINE_AA, 2)
        head_top = at(1.0, 0.0)
        return np.array(
            [at(0.0, -half - 0.12), at(0.0, half + 0.12), head_top + [half * scale, 0], head_top - [half * scale, 0]],
            np.float32,
        )

    def _draw_tree(self, img, tree: Tree) -> np.ndarray | None:
        cam = self.camera
        depth = cam.depth((tree.x, tree.y, 0.0))
        if depth < 1.0:
            return None
        base = cam.project(np.array([[tree.x, tree.y, 0.0]]))[0]
        crown = cam.project(np.array([[tree.x, tree.y, tree.trunk_height + tree.crown_radius * 0.8]]))[0]
        scale = cam.focal_px / depth
        trunk_w = 0.18 * scale
        trunk = np.array(
            [base - [trunk_w, 0], base + [trunk_w, 0], crown + [trunk_w * 0.7, 0], crown - [trunk_w * 0.7, 0]]
        )
        _fill(img, trunk, (70, 52, 38))
        r = tree.crown_radius * scale
        axes = (max(int(r * 4), 1), max(int(r * 0.9 * 4), 1))
        shade = tuple(float(c) for c in tree.shade)
        cv2.ellipse(img, tuple(np.round(crown * 4).astype(int)), axes, 0, 0, 360, shade, -1, cv2.LINE_AA, 2)
        darker = tuple(c * 0.7 for c in shade)
        cv2.ellipse(img, tuple(np.round((crown + [r * 0.25, r * 0.3]) * 4).astype(int)),
                    (max(axes[0] // 2, 1), max(axes[1] // 2, 1)), 0, 0, 360, darker, -1, cv2.LINE_AA, 2)  # fmt: skip
        return np.array([base - [trunk_w, 0], base + [trunk_w, 0], crown + [r, 0], crown + [r, -r * 0.9],
                         crown + [-r, -r * 0.9], crown - [r, 0]], np.float32)  # fmt: skip

    def _draw_pole(self, img, pole: Pole) -> np.ndarray | None:
        cam = self.camera
        depth = cam.depth((pole.x, pole.y, 0.0))
        if depth < 1.0:
            return None
        base = cam.project(np.array([[pole.x, pole.y, 0.0]]))[0]
        top = cam.project(np.array([[pole.x, pole.y, pole.height]]))[0]
        half = max(0.07 * cam.focal_px / depth, 0.5)
        outline = np.array([base - [half, 0], base + [half, 0], top + [half, 0], top - [half, 0]], np.float32)
        _fill(img, outline, (95, 98, 104))
        lamp = top + np.array([3 * half, 0])
        cv2.circle(
            img, tuple(np.round(lamp * 4).astype(int)), int(max(half * 2.2, 1) * 4), (200, 200, 190), -1, cv2.LINE_AA, 2
        )
        return outline

    def _draw_booth(self, img) -> np.ndarray | None:
        from smartpark.scenes.world import _box_faces

        bx0, by0, bx1, by1 = self.layout.booth
        faces = _box_faces((bx0 + bx1) / 2, (by0 + by1) / 2, 0.0, bx1 - bx0, by1 - by0, 0.0, 2.5, (205, 200, 185))
        corners = np.concatenate([f.polygon for f in faces])
        cam_points = self.camera.to_camera(corners)
        if (cam_points[:, 2] < 0.6).any():
            return None
        for face in faces:
            self._draw_face(img, face.polygon, face.normal, face.color, glass=False)
        return cv2.convexHull(self.camera.project_camera(cam_points).astype(np.float32)).reshape(-1, 2)

    # --- light and the camera's imperfections ---------------------------------------------------------

    def _finish(self, img: np.ndarray, lamps: list[Vehicle], rng: np.random.Generator) -> np.ndarray:
        light = self.lighting
        img *= light.brightness
        img *= np.array(light.tint, np.float32)
        if light.condition == "rain":
            grey = img.mean(axis=2, keepdims=True)
            img[:] = grey + 0.6 * (img - grey)
        if self.light_pools is not None:
            img += self.light_pools
        if lamps:
            glow = np.zeros_like(img)
            for vehicle in lamps:
                heads, tails = vehicle.lamp_points()
                facing = math.cos(vehicle.heading) * (self.camera.x - vehicle.x) + math.sin(vehicle.heading) * (
                    self.camera.y - vehicle.y
                )
                # Only the lamps on the side the camera sees: headlights when the vehicle faces it.
                for points, colour in [(heads, (255, 250, 225))] if facing > 0 else [(tails, (255, 40, 30))]:
                    cam_points = self.camera.to_camera(points)
                    if (cam_points[:, 2] < 1).any():
                        continue
                    for u, v in self.camera.project_camera(cam_points):
                        radius = max(0.12 * self.camera.focal_px / cam_points[0, 2], 0.7)
                        cv2.circle(glow, (int(u * 4), int(v * 4)), int(radius * 4), colour, -1, cv2.LINE_AA, 2)
            img += cv2.GaussianBlur(glow, (0, 0), 2.5) * 1.6 + glow * 0.6
        if light.rain > 0:
            streaks = np.zeros(self.size, np.float32)
            count = int(250 * light.rain)
            xs, ys = rng.uniform(0, self.size[1], count), rng.uniform(-20, self.size[0], count)
            lengths, slant = rng.uniform(6, 16, count), rng.uniform(-0.25, 0.1)
            for x, y, length in zip(xs, ys, lengths, strict=True):
                cv2.line(streaks, (int(x), int(y)), (int(x + slant * length), int(y + length)), 1.0, 1, cv2.LINE_AA)
            img += streaks[:, :, None] * 55.0
        if light.blur_sigma > 0.15:
            img = cv2.GaussianBlur(img, (0, 0), light.blur_sigma)
        img += _noise(rng, img.shape) * light.noise_sigma
        frame = np.clip(img, 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, light.jpeg_quality])
        if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
            return frame
        return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
