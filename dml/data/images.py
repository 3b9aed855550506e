"""Encoded image bytes -> what the manifest stores, and stored bytes -> RGB pixels.

Ingest stores every image at the size training can use (the shorter side at most
``short_side`` pixels, never enlarged), upright and opaque (transparent pixels composited onto
a background colour): an epoch then decodes small files, and clip art on a transparent
background is not shown on black. An image that needs none of that keeps its original bytes.

PIL's decompression-bomb *error* stays a hard stop (ingest reports the file); its warning,
and its palette-transparency warning, never reach the console. numpy is imported where it is
used, so that checking a colour in params.yaml does not pay for it.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, NamedTuple

from PIL import Image, ImageColor, ImageOps

from dml.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)

#: Formats re-encoded as JPEG (quality ``JPEG_QUALITY``) when an image changes; others as PNG.
JPEG_FORMATS = ("JPEG", "MPO")
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # lossless either way; the fastest level, as ingest encodes many images

_ORIENTATION_TAG = 0x0112  # EXIF orientation: 1 upright, 2..8 flipped and/or rotated
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_GREY = ("1", "I", "F", *_SIXTEEN_BIT)
_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


class StoredImage(NamedTuple):
    """What :func:`store_image` made of an encoded image."""

    data: bytes  # the bytes to store: the original ones when nothing had to change
    width: int  # the source image's size, upright (after its EXIF orientation)
    height: int
    resized: bool  # its shorter side was reduced to ``short_side``
    flattened: bool  # its transparency was composited onto the background


def parse_colour(value: str, where: str) -> RGB:
    """``value`` (a colour name such as "white", or "#rrggbb") as (r, g, b); a ConfigError
    naming the key ``where`` if it is not a colour."""
    try:
        red, green, blue, *_ = ImageColor.getrgb(value)
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"{where}: {value!r} is not a colour (a name such as 'white', or "
                          "'#rrggbb')") from None
    return red, green, blue


def _sixteen_to_eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image as 8-bit L (LA when it names a transparent grey): PIL's own
    conversion clips every value above 255 to white."""
    import numpy as np

    values = np.asarray(image, dtype=np.uint32)
    grey = Image.fromarray(((values + 128) // 257).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        grey.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8)))
    return grey


def has_transparency(image: Image.Image) -> bool:
    """Whether ``image`` has an alpha channel, a palette with alpha or a transparent colour
    (``Image.has_transparency_data`` of Pillow >= 10.1)."""
    if image.mode in _ALPHA or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")


def _with_alpha(image: Image.Image) -> Image.Image:
    """``image`` as L or RGB, or as LA or RGBA when it has any transparency (kept as an alpha
    channel, so that it can still be resized before it is composited)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Palette images with Transparency expressed in bytes"
        if image.mode in _SIXTEEN_BIT:
            image = _sixteen_to_eight_bit(image)
        if has_transparency(image):
            if image.mode == "La":  # premultiplied; PIL converts it only to LA
                image = image.convert("LA")
            return image if image.mode in ("LA", "RGBA") else image.convert("RGBA")
        if image.mode in ("RGB", "L"):
            return image
        return image.convert("L" if image.mode in _GREY else "RGB")


def _opaque(image: Image.Image, background: RGB) -> Image.Image:
    """``image`` (as :func:`_with_alpha` gives it) as L or RGB: transparency composited onto
    ``background`` (RGB then)."""
    if image.mode not in ("LA", "RGBA"):
        return image
    base = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def flatten(image: Image.Image, background: RGB) -> Image.Image:
    """``image`` as RGB, any alpha channel or transparent colour composited onto
    ``background`` (a plain RGB conversion would show transparent pixels black)."""
    image = _opaque(_with_alpha(image), background)
    return image if image.mode == "RGB" else image.convert("RGB")


def _reduced_size(size: tuple[int, int], short_side: int) -> tuple[int, int] | None:
    """``size`` scaled so that its shorter side is ``short_side``; None when it is not larger."""
    width, height = size
    shorter = min(width, height)
    if shorter <= short_side:
        return None
    scale = short_side / shorter
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of ``image`` (1..8; 1 when absent, unknown or unreadable: broken
    metadata must not lose a picture that decodes)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # PIL's EXIF parser raises many types for broken metadata
        return 1
    return value if value in range(1, 9) else 1


def store_image(data: bytes, *, short_side: int, background: RGB) -> StoredImage:
    """Decode ``data`` once and return what the manifest stores.

    The shorter side is reduced to ``short_side`` (aspect kept, never enlarged; a JPEG is
    decoded at a reduced scale first), the EXIF orientation applied and transparency
    composited onto ``background``. When none of that applies and the image is already RGB
    or L, the original bytes are returned unchanged; otherwise JPEGs are re-encoded as JPEG
    (quality 95) and everything else as PNG (lossless). Decoding errors propagate, PIL's
    ``Image.DecompressionBombError`` included; no warning escapes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning; the error still raises
        with Image.open(io.BytesIO(data)) as image:
            source_format = image.format
            width, height = image.size
            draft = _reduced_size(image.size, short_side)
            if draft is not None and source_format in JPEG_FORMATS:
                image.draft("RGB", draft)  # decodes at 1/2, 1/4 or 1/8 scale, still >= draft
            image.load()
            orientation = _orientation(image)  # after load: a PNG's EXIF may follow its pixels
            turned = orientation != 1
            if orientation in (5, 6, 7, 8):  # turned a quarter
                width, height = height, width
            target = _reduced_size((width, height), short_side)
            flattened = has_transparency(image)
            if target is None and not flattened and not turned and image.mode in ("RGB", "L"):
                return StoredImage(data, width, height, resized=False, flattened=False)
            picture = _with_alpha(ImageOps.exif_transpose(image) if turned else image)
    if target is not None:  # before compositing: the full-size image is touched only once
        # (PIL resizes an alpha channel premultiplied: no dark fringes at transparent edges)
        picture = picture.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    picture = _opaque(picture, background)
    buffer = io.BytesIO()
    if source_format in JPEG_FORMATS:
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return StoredImage(buffer.getvalue(), width, height, resized=target is not None,
                       flattened=flattened)


def open_rgb(data: bytes, background: RGB = WHITE) -> Image.Image:
    """The RGB picture of encoded ``data`` (stored images are already opaque; any other
    transparency is composited onto ``background``), decoded without PIL's warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return flatten(image, background)


def decode_rgb(data: bytes, background: RGB = WHITE) -> np.ndarray:
    """:func:`open_rgb` as a uint8 array [H, W, 3]."""
    import numpy as np

    return np.array(open_rgb(data, background), dtype=np.uint8)
