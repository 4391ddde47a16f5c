"""Synthetic park scenes: seeded, deterministic camera views and scripted sequences with ground truth.

No public parking data can be fetched here, so the project makes its own: perspective views of
parking lots from varied camera heights and angles, vehicles of many shapes, sizes and colours,
pedestrians, shadows, trees and poles that occlude, day / dusk / night / rain, sensor noise, blur
and JPEG artifacts. ``render_training_sample`` gives single annotated frames for training and
evaluating the detector; ``smartpark.scenes.sequences`` gives timed sequences with a ground-truth
event log for scoring the whole pipeline. Held-out seeds start at ``HELDOUT_SEED_BASE``.
"""

from dataclasses import dataclass

import numpy as np

from smartpark.scenes.camera import Camera, random_camera
from smartpark.scenes.coco import export_coco
from smartpark.scenes.render import CONDITIONS, SceneRenderer, random_lighting
from smartpark.scenes.world import ParkLayout, Pedestrian, Pole, Tree, Vehicle, random_layout

FRAME_WIDTH, FRAME_HEIGHT = 320, 240
HELDOUT_SEED_BASE = 1_000_000_000

__all__ = [
    "CONDITIONS",
    "FRAME_HEIGHT",
    "FRAME_WIDTH",
    "HELDOUT_SEED_BASE",
    "Annotated",
    "export_coco",
    "heldout_seed",
    "render_training_sample",
]


@dataclass(frozen=True)
class Annotated:
    """One frame and what is in it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2 pixels
    labels: np.ndarray  # (N,) int64: 0 vehicle, 1 person
    ignore: np.ndarray  # (N,) bool: too small or too hidden to demand a detection
    condition: str
    seed: int


def heldout_seed(index: int) -> int:
    """Seeds for evaluation; training never uses a seed at or above HELDOUT_SEED_BASE."""
    return HELDOUT_SEED_BASE + index


def random_view(rng: np.random.Generator, condition: str) -> tuple[ParkLayout, Camera, SceneRenderer]:
    """A park, a camera looking at part of it, its lighting, and its static occluders.

    Two views in three are close-ups of part of a lot from varied heights and angles; one in three
    is the high, wide view of a whole small lot.
    """
    from smartpark.scenes.sequences import whole_lot_camera

    if rng.random() < 0.35:
        layout = random_layout(rng, spaces_per_row=(4, 7))
        camera = whole_lot_camera(rng, layout, FRAME_WIDTH, FRAME_HEIGHT)
    else:
        layout = random_layout(rng)
        tx, ty = layout.target()
        spread = (layout.lot_x1 - layout.lot_x0) / 4
        target = (tx + float(rng.uniform(-spread, spread)), ty + float(rng.uniform(-3.0, 3.0)))
        camera = random_camera(rng, FRAME_WIDTH, FRAME_HEIGHT, target)
    trees, poles = _random_static(rng, layout)
    renderer = SceneRenderer(
        layout, camera, random_lighting(rng, condition), trees=trees, poles=poles,
        texture_seed=int(rng.integers(2**31)),
    )  # fmt: skip
    return layout, camera, renderer


def _random_static(rng: np.random.Generator, layout: ParkLayout) -> tuple[list[Tree], list[Pole]]:
    trees, poles = [], []
    for _ in range(int(rng.integers(0, 4))):
        # Trees stand on the margins: the sidewalk, beyond the rows, by the restricted area.
        spot = int(rng.integers(3))
        if spot == 0:
            x, y = float(rng.uniform(layout.sidewalk[0], layout.sidewalk[2])), float(rng.uniform(-2.3, -1.0))
        elif spot == 1:
            x, y = (
                float(rng.uniform(layout.lot_x0 - 6, layout.lot_x1 + 6)),
                layout.far_row[3] + float(rng.uniform(1, 4)),
            )
        else:
            x, y = (
                layout.lot_x1 + float(rng.uniform(0.3, 1.0)),
                float(rng.uniform(layout.near_row[1], layout.near_row[3])),
            )
        green = (int(rng.integers(35, 80)), int(rng.integers(80, 130)), int(rng.integers(30, 70)))
        trees.append(Tree(x, y, float(rng.uniform(1.8, 3.2)), float(rng.uniform(1.2, 2.4)), green))
    for _ in range(int(rng.integers(1, 5))):
        x = float(rng.uniform(layout.lot_x0 - 4, layout.lot_x1 + 4))
        y = float(rng.choice([layout.sidewalk[1] + 0.5, layout.far_row[3] + 0.6]))
        poles.append(Pole(x, y, float(rng.uniform(5.5, 8.5))))
    return trees, poles


def _walkable_point(rng: np.random.Generator, layout: ParkLayout) -> tuple[float, float]:
    area = int(rng.choice(6, p=[0.3, 0.2, 0.15, 0.12, 0.13, 0.1]))
    rect = [layout.aisle, layout.sidewalk, layout.road, layout.restricted, layout.near_row, layout.duty_post][area]
    return float(rng.uniform(rect[0], rect[2])), float(rng.uniform(rect[1], rect[3]))


def random_objects(
    rng: np.random.Generator, layout: ParkLayout, lights_on: float
) -> tuple[list[Vehicle], list[Pedestrian]]:
    vehicles = []
    occupancy = float(rng.uniform(0.2, 0.95))
    for _, (x0, y0, x1, y1) in layout.spaces():
        if rng.random() < occupancy:
            heading = float(rng.choice([np.pi / 2, -np.pi / 2]) + rng.normal(0, 0.05))
            x = (x0 + x1) / 2 + float(rng.normal(0, 0.12))
            y = (y0 + y1) / 2 + float(rng.normal(0, 0.15))
            vehicles.append(Vehicle.random(rng, x, y, heading))
    for _ in range(int(rng.integers(0, 4))):
        lane = layout.aisle if rng.random() < 0.65 else layout.road
        x = float(rng.uniform(lane[0] + 2, lane[2] - 2))
        y = (lane[1] + lane[3]) / 2 + float(rng.normal(0, 0.4))
        vehicles.append(Vehicle.random(rng, x, y, float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.08))))
    vehicles = _without_overlaps(vehicles)
    for vehicle in vehicles:
        vehicle.lights_on = bool(rng.random() < lights_on)
    pedestrians = []
    for _ in range(int(rng.integers(1, 11))):
        x, y = _walkable_point(rng, layout)
        person = Pedestrian.random(rng, x, y, float(rng.uniform(0, 2 * np.pi)), guard=rng.random() < 0.1)
        person.stride_phase = float(rng.uniform(0, 2 * np.pi)) if rng.random() < 0.7 else 0.0
        pedestrians.append(person)
    return vehicles, pedestrians


def _without_overlaps(vehicles: list[Vehicle]) -> list[Vehicle]:
    kept: list[Vehicle] = []
    for vehicle in vehicles:
        if all(
            np.hypot(vehicle.x - other.x, vehicle.y - other.y) > (vehicle.length + other.length) / 2.2 for other in kept
        ):
            kept.append(vehicle)
    return kept


def render_training_sample(seed: int, condition: str | None = None) -> Annotated:
    """A random annotated frame, the same bytes for the same seed (and condition)."""
    rng = np.random.default_rng([seed, 7])
    chosen = condition or CONDITIONS[int(rng.integers(len(CONDITIONS)))]
    if chosen not in CONDITIONS:
        raise ValueError(f"unknown condition {chosen!r}; use one of {', '.join(CONDITIONS)}")
    layout, _, renderer = random_view(rng, chosen)
    vehicles, pedestrians = random_objects(rng, layout, renderer.lighting.lights_on)
    image, objects = renderer.render(vehicles, pedestrians, rng)
    kept = [o for o in objects if o.box[2] - o.box[0] >= 1 and o.box[3] - o.box[1] >= 1]
    return Annotated(
        image=image,
        boxes=np.array([o.box for o in kept], np.float32).reshape(-1, 4),
        labels=np.array([o.kind for o in kept], np.int64),
        ignore=np.array([o.ignore for o in kept], bool),
        condition=chosen,
        seed=seed,
    )
