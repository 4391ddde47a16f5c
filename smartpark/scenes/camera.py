"""A pinhole camera over the ground plane: world metres (x right, y away, z up) to image pixels."""

import math
from dataclasses import dataclass

import numpy as np

NEAR_M = 0.5  # geometry closer than this to the lens is clipped away


@dataclass(frozen=True)
class Camera:
    x: float  # position in metres
    y: float
    height: float
    yaw: float  # radians, 0 looks along +y
    pitch: float  # radians below the horizon
    focal_px: float
    width: int
    height_px: int

    def __post_init__(self):
        right, up, forward = self._axes()
        # Rows map a world offset to camera right, down and depth; cached because rendering projects a lot.
        object.__setattr__(self, "_rotation", np.stack([right, -up, forward]))
        object.__setattr__(self, "_position", np.array([self.x, self.y, self.height]))

    def _axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sy, cy, sp, cp = math.sin(self.yaw), math.cos(self.yaw), math.sin(self.pitch), math.cos(self.pitch)
        forward = np.array([sy * cp, cy * cp, -sp])
        right = np.array([cy, -sy, 0.0])
        up = np.array([sy * sp, cy * sp, cp])
        return right, up, forward

    @property
    def position(self) -> np.ndarray:
        return self._position

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points to (N, 3) camera coordinates: right, down, forward (depth)."""
        return (np.asarray(points, np.float64) - self._position) @ self._rotation.T

    def project_camera(self, cam: np.ndarray) -> np.ndarray:
        """Camera coordinates (depth > 0) to pixel coordinates."""
        return cam[:, :2] * (self.focal_px / cam[:, 2:3]) + (self.width / 2, self.height_px / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (all in front of the camera) to pixels."""
        return self.project_camera(self.to_camera(points))

    def depth(self, point) -> float:
        return float(self.to_camera(np.asarray([point]))[0, 2])

    def project_polygon(self, polygon: np.ndarray) -> np.ndarray | None:
        """A world polygon clipped at the near plane, in pixels; None if it lies behind the camera."""
        cam = self.to_camera(polygon)
        clipped = cam if (cam[:, 2] >= NEAR_M).all() else _clip_near(cam)
        if len(clipped) < 3:
            return None
        return self.project_camera(clipped)

    def ground_point(self, u: float, v: float) -> tuple[float, float] | None:
        """The ground-plane point seen at pixel (u, v), or None above the horizon."""
        right, up, forward = self._axes()
        ray = forward + right * (u - self.width / 2) / self.focal_px - up * (v - self.height_px / 2) / self.focal_px
        if ray[2] >= -1e-6:
            return None
        s = -self.height / ray[2]
        return self.x + s * ray[0], self.y + s * ray[1]

    def horizon_v(self) -> float:
        """Image row of the horizon (may be above the frame)."""
        return self.height_px / 2 - self.focal_px * math.tan(self.pitch)


def _clip_near(cam: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against the plane depth = NEAR_M."""
    out = []
    n = len(cam)
    for i in range(n):
        current, following = cam[i], cam[(i + 1) % n]
        current_in, following_in = current[2] >= NEAR_M, following[2] >= NEAR_M
        if current_in:
            out.append(current)
        if current_in != following_in:
            t = (NEAR_M - current[2]) / (following[2] - current[2])
            out.append(current + t * (following - current))
    return np.asarray(out) if out else np.zeros((0, 3))


def random_camera(rng: np.random.Generator, width: int, height: int, target: tuple[float, float]) -> Camera:
    """A pole- or wall-mounted park camera looking at ``target`` on the ground, from varied heights and angles."""
    mount = float(rng.uniform(4.0, 11.0))
    distance = float(rng.uniform(10.0, 24.0))  # horizontal distance to the point the camera aims at
    yaw = float(rng.uniform(-0.45, 0.45))
    hfov = float(rng.uniform(math.radians(55), math.radians(85)))
    focal = (width / 2) / math.tan(hfov / 2)
    pitch = math.atan2(mount, distance) + float(rng.uniform(-0.06, 0.06))
    x = target[0] - distance * math.sin(yaw)
    y = target[1] - distance * math.cos(yaw)
    return Camera(x=x, y=y, height=mount, yaw=yaw, pitch=pitch, focal_px=focal, width=width, height_px=height)
