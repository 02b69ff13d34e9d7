"""Image files into prepared pixels: any image Pillow opens safely (PIL_FORMATS, at most
MAX_PIXELS, read from its header before decoding) becomes upright 8-bit RGB, its shorter side
shrunk to a maximum, or a _Bad(reason) to skip and count. Used by the image_text builder (which
stores JPEG bytes: to_jpeg), its Beam pipeline, and the WebDataset shard reader (prepared_image).

Modes: RGB_MODES convert directly; ALPHA_MODES are composited over white; WIDE_MODES go to 8 bits
first (I;16 shifted right by 8, I and F stretched from their minimum to their maximum; a 16-bit
PNG, which Pillow opens as I, is shifted); anything else is skipped as unsupported_mode.
"""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageOps

PIL_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # never EPS, PDF, ...
MAX_PIXELS = 89_478_485  # Pillow's DecompressionBombWarning threshold; 0.27 GB as RGB
RGB_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")  # Pillow's convert
ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa")  # composited over white
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # to 8 bits first: _to_8bit


class _Bad(Exception):
  """A sample to skip, for `reason`."""


def _stretch(values: np.ndarray) -> np.ndarray:
  """uint8 of values scaled from their finite min..max to 0..255."""
  finite = values[np.isfinite(values)].astype(np.float64)
  lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
  values = np.clip(np.nan_to_num(values.astype(np.float64), nan=lo), lo, hi) - lo
  return np.rint(values * (255 / (hi - lo) if hi > lo else 0.0)).astype(np.uint8)


def _to_8bit(image: Image.Image, sixteen_bit: bool) -> Image.Image:
  """A WIDE_MODES image as L (LA if it marks a value transparent). 16-bit values (I;16*, or I from a
  PNG, as older Pillow opens them) keep the high byte, v >> 8 (the inverse of 8 -> 16 bit, v * 257);
  I and F are stretched from their finite min..max to 0..255 (constant: black; NaN, -inf: min)."""
  values = np.asarray(image)
  grey = (values.astype(np.uint16) >> 8).astype(np.uint8) if sixteen_bit else _stretch(values)
  clear = image.info.get("transparency")
  if isinstance(clear, (int, float)):  # PNG tRNS of 16-bit grey
    return Image.fromarray(np.dstack([grey, np.where(values == clear, 0, 255).astype(np.uint8)]))
  return Image.fromarray(grey)


def _to_rgb(image: Image.Image, sixteen_bit: bool = False) -> Image.Image:
  """8-bit RGB, transparency over white; _Bad("unsupported_mode") for a mode it cannot convert."""
  if image.mode in WIDE_MODES:
    image = _to_8bit(image, sixteen_bit or image.mode.startswith("I;16"))
  if image.mode == "RGB":
    return image
  if image.mode not in RGB_MODES + ALPHA_MODES:  # LAB, HSV, La, ...
    raise _Bad("unsupported_mode")
  if image.mode in ALPHA_MODES or "transparency" in image.info:
    image = image.convert("RGBA")
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background
  return image.convert("RGB")


@functools.cache
def _pil_formats() -> tuple[str, ...]:
  """PIL_FORMATS that this Pillow can open (all plugins registered first)."""
  Image.init()
  return tuple(f for f in PIL_FORMATS if f in Image.OPEN)


def prepared_image(data: bytes, max_size: int | None, max_pixels: int | None = MAX_PIXELS):
  """(image, as_is): `data` decoded (raising _Bad on any failure; an image over max_pixels is
  never decoded) to upright 8-bit RGB with the shorter side <= max_size (bicubic; a larger JPEG
  decoded at the smallest DCT scale that stays >= max_size); as_is: `data` already was such a JPEG."""
  try:
    image = Image.open(io.BytesIO(data), formats=_pil_formats())  # reads the header only
    if max_pixels is not None and image.width * image.height > max_pixels:
      raise _Bad("too_many_pixels")
    shrink = max_size is not None and min(image.size) > max_size
    if shrink:  # Pillow reduces by the largest s with min(w, h) / s >= max_size
      image.draft("RGB", (max_size, max_size))
    image.load()
    upright = image.getexif().get(0x0112, 1) in (0, 1)
    if not shrink and upright and image.format == "JPEG" and image.mode == "RGB":
      return image, True
    sixteen_bit = image.mode == "I" and image.format == "PNG"
    image = _to_rgb(image if upright else ImageOps.exif_transpose(image), sixteen_bit)
    if shrink:
      scale = max_size / min(image.size)
      size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
      image = image.resize(size, Image.BICUBIC)
    return image, False
  except _Bad:
    raise
  except Image.DecompressionBombError as e:  # over Pillow's own limit, whatever max_pixels says
    raise _Bad("too_many_pixels") from e
  except Exception as e:  # noqa: BLE001 - whatever the decoder says, the image is unusable
    raise _Bad("undecodable_image") from e


def to_jpeg(data: bytes, max_size: int | None, quality: int = 95,
            max_pixels: int | None = MAX_PIXELS) -> bytes:
  """prepared_image as JPEG bytes: `data` itself when it already is such a JPEG."""
  image, as_is = prepared_image(data, max_size, max_pixels)
  if as_is:
    return data
  out = io.BytesIO()
  image.save(out, "JPEG", quality=quality)
  return out.getvalue()
