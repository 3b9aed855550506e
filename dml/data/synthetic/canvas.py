"""Drawing primitives of the synthetic dataset: one :class:`Canvas` per image size holds the
pixel grids and draws backgrounds (a colour with a brightness gradient), clutter, shape masks
and pattern textures; ``finish`` turns a drawing into PNG bytes. Shapes are drawn at twice the
size and box-downsampled, so edges are antialiased. What to draw, and in which order the random
draws come, is the renderers' business (``render``)."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from dml.data.synthetic.shapes import place


def hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """RGB in 0..255 (float32) of a hue in degrees (any value: taken modulo 360), saturation
    and value in 0..1."""
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v), dtype=np.float32) * 255.0


class Canvas:
    """Pixel grids for one image size, rendered at twice the size and box-downsampled."""

    def __init__(self, image_size: int) -> None:
        self.size = image_size
        self.big = 2 * image_size
        coords = np.arange(self.big, dtype=np.float32) + 0.5
        self.xs, self.ys = np.meshgrid(coords, coords)
        self.cx = self.xs / self.big - 0.5  # centred coordinates in [-0.5, 0.5]
        self.cy = self.ys / self.big - 0.5

    def background(self, rng: np.random.Generator, dark: bool) -> Image.Image:
        value = rng.uniform(0.05, 0.35) if dark else rng.uniform(0.6, 0.95)
        colour = hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.5), value)
        direction = rng.uniform(0, 2 * np.pi)
        strength = rng.uniform(-0.35, 0.35)
        # A linear brightness ramp across the image, centred on 1.
        ramp = 1.0 + strength * (self.cx * np.cos(direction) + self.cy * np.sin(direction))
        pixels = np.clip(ramp[..., None] * colour, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    def clutter(self, rng: np.random.Generator, image: Image.Image, count: int) -> None:
        draw = ImageDraw.Draw(image)
        big = self.big
        for _ in range(count):
            colour = tuple(int(x) for x in hsv(rng.uniform(0, 360), rng.uniform(0.2, 1.0),
                                               rng.uniform(0.15, 1.0)))
            if rng.random() < 0.5:
                x0, y0, x1, y1 = rng.uniform(0, big, 4)
                draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(2, 5)))
            else:
                cx, cy = rng.uniform(0, big, 2)
                rx, ry = rng.uniform(0.03, 0.09, 2) * big
                draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)

    def mask(self, parts: list[tuple[np.ndarray, bool]], aspect: float, angle: float,
             radius: float, centre: tuple[float, float], *, outline_width: int = 0) -> Image.Image:
        """Mask ("L") at the big size; with ``outline_width`` only a band along the outline,
        inside the shape (the 'outline' pattern)."""
        placed = [([tuple(p) for p in place(points, aspect, angle, radius, centre)], add)
                  for points, add in parts]
        fill = Image.new("L", (self.big, self.big), 0)
        draw = ImageDraw.Draw(fill)
        for xy, add in placed:
            draw.polygon(xy, fill=255 if add else 0)
        if not outline_width:
            return fill
        band = Image.new("L", (self.big, self.big), 0)
        draw = ImageDraw.Draw(band)
        for xy, _ in placed:
            draw.line(xy + [xy[0]], fill=255, width=2 * outline_width, joint="curve")
        return ImageChops.multiply(fill, band)

    def texture(self, rng: np.random.Generator, pattern: str, colour: np.ndarray, angle: float,
                centre: tuple[float, float]) -> Image.Image:
        """The object's surface colours for ``pattern`` ("RGB", big size)."""
        shade = colour * rng.uniform(0.25, 0.45)
        if pattern in ("solid", "outline"):
            return Image.new("RGB", (self.big, self.big), tuple(int(x) for x in colour))
        c, s = np.cos(angle), np.sin(angle)
        u = (self.xs - centre[0]) * c + (self.ys - centre[1]) * s
        if pattern == "striped":
            on = np.floor(u / (self.big / 14.0)) % 2 == 0
        else:  # checkered
            v = (self.ys - centre[1]) * c - (self.xs - centre[0]) * s
            cell = self.big / 9.0
            on = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
        pixels = np.where(on[..., None], colour, shade).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    def finish(self, rng: np.random.Generator, image: Image.Image, noise: float) -> bytes:
        """Downsample by two (box filter), add Gaussian pixel noise, encode as PNG."""
        small = np.asarray(image.reduce(2), dtype=np.float32)
        if noise > 0:
            small = small + noise * rng.standard_normal(small.shape, dtype=np.float32)
        return encode_png(np.clip(np.rint(small), 0, 255).astype(np.uint8))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] or [H, W, 3] array (deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
