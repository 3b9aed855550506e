"""Shape geometry of the synthetic dataset: each middle type's outline as points in about the
unit disc (``SHAPES``), and ``place``, which stretches, rotates, scales and moves an outline
into pixel coordinates. Plain numpy, no pixels: the photo mask and the sketch strokes both
start from these points."""

from __future__ import annotations

import numpy as np


def _circle(n: int = 40, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _regular(n: int) -> np.ndarray:
    a = -np.pi / 2 + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def _star(n: int, inner: float) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _crescent() -> np.ndarray:
    # Unit circle minus the circle of radius 0.8 centred at (0.5, 0); they meet at x = 0.61.
    outer = np.linspace(np.deg2rad(52.4), np.deg2rad(307.6), 28)
    inner = np.linspace(np.deg2rad(277.9), np.deg2rad(82.1), 20)
    a = np.stack([np.cos(outer), np.sin(outer)], 1)
    b = np.stack([0.5 + 0.8 * np.cos(inner), 0.8 * np.sin(inner)], 1)
    pts = np.concatenate([a, b])
    return pts + np.array([0.3, 0.0])


def _semicircle() -> np.ndarray:
    a = np.linspace(np.pi, 2 * np.pi, 24)
    return np.stack([np.cos(a), np.sin(a) + 0.42], 1)


def _poly(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


#: shape -> list of (outline points in about the unit disc, True to add / False to cut out)
SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "triangle": [(_regular(3) + [0, 0.2], True)],
    "square": [(_regular(4) * 1.05, True)],
    "pentagon": [(_regular(5), True)],
    "hexagon": [(_regular(6), True)],
    "circle": [(_circle(), True)],
    "semicircle": [(_semicircle(), True)],
    "ring": [(_circle(), True), (_circle(r=0.55), False)],
    "crescent": [(_crescent(), True)],
    "star4": [(_star(4, 0.38), True)],
    "star5": [(_star(5, 0.45), True)],
    "star6": [(_star(6, 0.5), True)],
    "star8": [(_star(8, 0.55), True)],
    "plus": [(_poly([(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                     (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)]), True)],
    "arrow": [(_poly([(-1, -.24), (.15, -.24), (.15, -.65), (1, 0), (.15, .65), (.15, .24),
                      (-1, .24)]), True)],
    "tee": [(_poly([(-.9, -.85), (.9, -.85), (.9, -.4), (.24, -.4), (.24, .95), (-.24, .95),
                    (-.24, -.4), (-.9, -.4)]), True)],
    "ell": [(_poly([(-.65, -.95), (-.2, -.95), (-.2, .5), (.75, .5), (.75, .95), (-.65, .95)]),
             True)],
}


def place(points: np.ndarray, aspect: float, angle: float, radius: float,
          centre: tuple[float, float]) -> np.ndarray:
    """Scale y by ``aspect``, rotate by ``angle`` (radians), scale to ``radius`` px, move."""
    p = points * np.array([1.0, aspect])
    c, s = np.cos(angle), np.sin(angle)
    p = p @ np.array([[c, s], [-s, c]])
    return p * radius + np.asarray(centre)
