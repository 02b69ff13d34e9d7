"""Image decoding for the input pipeline: crop window first, reduced-size JPEG decode, one resize.

    window = crop_window(h, w, rng)                        # (top, left, height, width), pixels
    image = decode_crop(jpeg_bytes, window, 224)           # (224, 224, 3) uint8
    image = decode_random_crop(jpeg_bytes, 224, rng)       # the same, window drawn from the header
    image = decode_center(jpeg_bytes, 224)                 # evaluation: OpenCLIP's resize + crop

Training takes a random resized crop: the window is drawn from the image size alone (the JPEG
header), so libjpeg-turbo (through simplejpeg) can decode at 1/2, 1/4 or 1/8 of the size (DCT
scaling) whenever that reduced image still covers the window with at least `size` pixels a side;
then one OpenCV resize (bilinear) maps the window to size x size. A 1024 px photo decodes at 1/4 (16x fewer
pixels to transform and convert; entropy decoding still reads the whole file), a 256 px one at full
size. Why these libraries (measured per image on one core, 256 px JPEG): decoding 0.36-0.46 ms with
simplejpeg against 0.51-0.74 ms with Pillow, a 256 -> 224 resize 0.08-0.10 ms with OpenCV against
0.46-0.70 ms with Pillow (BENCHMARKS.md). Bytes that are not a JPEG libjpeg-turbo decodes to RGB
(PNG, CMYK JPEG), PIL images and arrays are decoded by Pillow at full size.

Evaluation follows OpenCLIP (torchvision Resize(size) + CenterCrop(size) on a PIL image): the
shorter side becomes `size` and the longer int(size * long / short) (truncated), Pillow bicubic
(antialiased), then the central crop with offsets int(round((h - size) / 2)). It decodes with
Pillow at full size, as OpenCLIP does, so embeddings of imported CLIP weights match the reference
preprocessing.

Images leave the host as uint8; the image towers normalise them on the device
(mmjax.models.common.image_input). Inputs are JPEG (or PNG, ...) bytes as stored by TFDS and read
with decoders={'image': tfds.decode.SkipDecoding()} (pipeline.image_decoders()), or decoded
(H, W[, C]) uint8 arrays. EXIF orientation is not applied (prepared datasets store upright images).
Importing this module sets OpenCV to one thread (cv2.setNumThreads(1)): parallelism comes from
grain's workers, one core each.
"""
from __future__ import annotations

import io
import math

import cv2
import numpy as np
import simplejpeg
from PIL import Image

cv2.setNumThreads(1)  # one core per grain worker: OpenCV's own pool would contend with them

DCT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg decodes directly
AREA_FROM = 2.0  # shrinking by more: pixel-area averaging (0.5-0.85 ms) instead of bilinear (0.1)


def as_rgb(image: np.ndarray, where: str = "image") -> np.ndarray:
  """(H, W, 3) uint8 from (H, W, 3), (H, W, 1) or (H, W) (grey is repeated); else a ValueError."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"{where}: expected an image of shape (height, width, 3) or (height, width, 1),"
                     f" got shape {image.shape}")
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def open_image(data, where: str = "image") -> Image.Image:
  """A PIL image from encoded bytes (only the header is read), a PIL image, or a (H, W[, C]) uint8
  array."""
  if isinstance(data, Image.Image):
    return data
  if isinstance(data, (bytes, bytearray, memoryview)):
    return Image.open(io.BytesIO(data))
  if isinstance(data, np.ndarray) and data.dtype == object and data.ndim == 0:  # tfds bytes scalar
    return open_image(data.item(), where)
  return Image.fromarray(as_rgb(data, where))


def crop_window(height: int, width: int, rng: np.random.Generator, scale=(0.9, 1.0),
                ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, h, w) of an Inception-style crop (Szegedy et al. 2015): a random area fraction in
  `scale` and aspect ratio in `ratio`, up to 10 tries; then the central square (the window a
  shorter-side resize + central crop sees). Draws from rng exactly as random_resized_crop did,
  except that it draws nothing where no try can fit (same window: the central square)."""
  if not (0 <= scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
    raise ValueError(f"crop_window: scale {tuple(scale)} must be 0 <= low <= high (area "
                     f"fractions) and ratio {tuple(ratio)} 0 < low <= high (aspect ratios)")
  if not _window_can_fit(height, width, scale, ratio):  # a 3:2 photo at area >= 0.9: the ten
    return _central_square(height, width)              # failed tries were 10% of its 0.57 ms
  # rng.uniform(low, high) is low + (high - low) * rng.random() in C: the same doubles, written out
  # with Python floats (crop_window on a 300x300 image: 21 -> 12 us)
  area_low, area_span = float(scale[0]), float(scale[1]) - float(scale[0])
  log_low = float(np.log(ratio[0]))
  log_span = float(np.log(ratio[1])) - log_low
  for _ in range(10):
    area = height * width * (area_low + area_span * rng.random())
    aspect = float(np.exp(log_low + log_span * rng.random()))
    ch, cw = round(math.sqrt(area / aspect)), round(math.sqrt(area * aspect))  # = np.sqrt
    if 0 < ch <= height and 0 < cw <= width:
      top, left = rng.integers(0, height - ch + 1), rng.integers(0, width - cw + 1)
      return int(top), int(left), ch, cw
  return _central_square(height, width)


def _central_square(height: int, width: int) -> tuple[int, int, int, int]:
  side = min(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def _window_can_fit(height: int, width: int, scale, ratio) -> bool:
  """False only where no area in `scale` and aspect in `ratio` gives a window inside the image:
  the smallest area needs aspect >= area / (height + 1)^2 and <= (width + 1)^2 / area (one pixel
  of slack covers the rounding), and a larger area only narrows that range."""
  area = height * width * scale[0]
  if area <= 0:  # a zero area fraction: the tries decide
    return True
  return max(ratio[0], area / (height + 1) ** 2) <= min(ratio[1], (width + 1) ** 2 / area)


def dct_scale(height: int, width: int, window: tuple[int, int, int, int], size: int) -> int:
  """The largest reduction in DCT_SCALES at which the window still spans >= size pixels a side
  (only powers of 2: libjpeg-turbo's other n/8 factors decode slower than full size)."""
  _, _, ch, cw = window
  return next(s for s in DCT_SCALES if s == 1 or (min(ch, cw) >= size * s
                                                   and min(height, width) >= size * s))


def _header(data) -> tuple[int, int] | None:
  """(height, width) of JPEG bytes from their header, or None for anything else."""
  if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:2]) != b"\xff\xd8":
    return None
  try:
    return tuple(simplejpeg.decode_jpeg_header(data)[:2])
  except ValueError:  # a JPEG libjpeg-turbo's header reader refuses: Pillow tries it
    return None


def _decode_reduced(data, height: int, width: int, reduce: int) -> np.ndarray | None:
  """(ceil(H / reduce), ceil(W / reduce), 3) uint8 RGB of JPEG bytes through libjpeg-turbo's DCT
  scaling (simplejpeg), or None where it cannot (CMYK, a corrupt stream): Pillow decodes those."""
  try:
    return simplejpeg.decode_jpeg(data, "RGB", min_height=-(-height // reduce),
                                  min_width=-(-width // reduce))
  except ValueError:
    return None


def _pixels(data, size: int, rng: np.random.Generator | None, window, scale, ratio,
            where: str) -> tuple[np.ndarray, tuple[int, int, int, int], tuple[float, float]]:
  """(decoded RGB array, the window in full-size pixels, reduced pixels per full pixel (y, x)):
  JPEG bytes are decoded at the dct_scale of the window (drawn from the header when rng is given);
  other bytes, PIL images and arrays at full size."""
  if isinstance(data, np.ndarray) and data.dtype == object and data.ndim == 0:  # tfds bytes scalar
    data = data.item()
  shape = _header(data)
  if shape is not None:
    window = window or crop_window(*shape, rng, scale, ratio)
    pixels = _decode_reduced(data, *shape, dct_scale(*shape, window, size))
    if pixels is not None:
      return pixels, window, (pixels.shape[0] / shape[0], pixels.shape[1] / shape[1])
  image = open_image(data, where)
  pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
  window = window or crop_window(*pixels.shape[:2], rng, scale, ratio)
  return pixels, window, (1.0, 1.0)


def decode_crop(data, window: tuple[int, int, int, int], size: int, where: str = "image", *,
                rng: np.random.Generator | None = None, scale=(0.9, 1.0),
                ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """(size, size, 3) uint8: the window (top, left, h, w, in pixels of the full image; None: drawn
  by crop_window from rng) of JPEG bytes decoded at the largest DCT reduction that keeps >= size
  pixels across it (other inputs at full size), then one resize (OpenCV, single-threaded):
  bilinear, as tf.image.resize in big_vision's inception crop, or pixel-area averaging where the
  window still spans >= AREA_FROM x size. Against Pillow's antialiased bicubic on real photos,
  OpenCV's bilinear is closer than its bicubic (0.06 vs 0.09 mean |difference| in normalised units
  at 1.67x; tests/test_decode.py) and 5-7x faster than pixel-area averaging."""
  pixels, (top, left, ch, cw), (sy, sx) = _pixels(data, size, rng, window, scale, ratio, where)
  y0, x0 = min(round(top * sy), pixels.shape[0] - 1), min(round(left * sx), pixels.shape[1] - 1)
  y1 = max(y0 + 1, min(round((top + ch) * sy), pixels.shape[0]))
  x1 = max(x0 + 1, min(round((left + cw) * sx), pixels.shape[1]))
  crop = pixels[y0:y1, x0:x1]
  area = min(y1 - y0, x1 - x0) >= AREA_FROM * size  # bilinear would skip pixels: average areas
  return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def decode_random_crop(data, size: int, rng: np.random.Generator, scale=(0.9, 1.0),
                       ratio=(3 / 4, 4 / 3), where: str = "image") -> np.ndarray:
  """(size, size, 3) uint8 random resized crop of encoded bytes or an array: the window is drawn
  from the header's size (crop_window, the same draws as pipeline.random_resized_crop), then
  decode_crop."""
  return decode_crop(data, None, size, where, rng=rng, scale=scale, ratio=ratio)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """torchvision Resize(size): (h, w) with the shorter side `size` and the longer one
  int(size * long / short), truncated (a 427x640 photo -> 224x335)."""
  if height <= width:
    return size, int(size * width / height)
  return int(size * height / width), size


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
  """torchvision CenterCrop(size): (top, left) = int(round((h - size) / 2)), int(round(...))."""
  return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def decode_center(data, size: int, where: str = "image") -> np.ndarray:
  """(size, size, 3) uint8 as OpenCLIP preprocesses for evaluation: full decode, bicubic resize
  of the shorter side to size (longer side truncated), central crop with rounded offsets."""
  image = open_image(data, where)
  image.load()
  image = image if image.mode == "RGB" else image.convert("RGB")
  h, w = resized_shape(image.height, image.width, size)
  if (h, w) != (image.height, image.width):
    image = image.resize((w, h), Image.BICUBIC)
  top, left = center_offsets(h, w, size)
  return np.asarray(image)[top:top + size, left:left + size]
