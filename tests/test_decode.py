"""The fast image path: crop window before decoding, reduced-size JPEG decoding, uint8 to the device
(normalised there), and OpenCLIP's evaluation resize + crop, on scikit-learn's two real photos."""
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from mmjax.data import decode, pipeline
from mmjax.models.common import image_input
from mmjax.models.cnn import ConvNet
from mmjax.models.vit import ViT


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
  """china.jpg and flower.jpg, (427, 640, 3) uint8 each."""
  return tuple(load_sample_images().images)


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(out, "JPEG", quality=quality)
  return out.getvalue()


def _rescaled(image: np.ndarray, short: int) -> np.ndarray:
  """The photo resized so its shorter side is `short` (bicubic)."""
  h, w = image.shape[:2]
  s = short / min(h, w)
  return np.asarray(Image.fromarray(image).resize((round(w * s), round(h * s)), Image.BICUBIC))


def _decoded(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _old_window(h, w, rng, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
  """The window random_resized_crop drew before decode.py (its loop, copied from the old code)."""
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
    if 0 < ch <= h and 0 < cw <= w:
      return rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw
  return None


@pytest.mark.parametrize("shape", [(427, 640), (640, 427), (300, 300), (256, 384), (1024, 700)])
@pytest.mark.parametrize("scale", [(0.9, 1.0), (0.3, 1.0), (0.08, 1.0)])
def test_crop_window_draws_what_random_resized_crop_drew(shape, scale):
  for seed in range(20):
    want = _old_window(*shape, np.random.default_rng(seed), scale)
    got = decode.crop_window(*shape, np.random.default_rng(seed), scale)
    if want is None:  # the fallback: the central square, which resize + central crop sees
      side = min(shape)
      assert got == ((shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
    else:
      assert got == tuple(int(v) for v in want)


def test_crop_window_shortcut_only_where_no_try_fits():
  """crop_window skips drawing where no window can fit; across many shapes (near the boundary
  too) it still returns what the ten tries would."""
  shapes = np.random.default_rng(0).integers(8, 1200, size=(300, 2))
  shapes = [tuple(int(v) for v in s) for s in shapes] + [(300, 400), (299, 400), (301, 400),
                                                         (240, 320), (3, 4), (4, 3), (1, 1)]
  skipped = 0
  for shape in shapes:
    for scale in [(0.9, 1.0), (0.5, 1.0), (0.08, 1.0), (1.0, 1.0), (0.0, 0.2)]:
      skipped += not decode._window_can_fit(*shape, scale, (3 / 4, 4 / 3))  # pylint: disable=protected-access
      for seed in range(4):
        want = _old_window(*shape, np.random.default_rng(seed), scale)
        side = min(shape)
        want = (((shape[0] - side) // 2, (shape[1] - side) // 2, side, side) if want is None
                else tuple(int(v) for v in want))
        assert decode.crop_window(*shape, np.random.default_rng(seed), scale) == want, (shape,
                                                                                        scale)
  assert skipped > 100  # the shortcut is taken, not only the loop
  for scale, ratio in (((1.0, 0.9), (3 / 4, 4 / 3)), ((0.9, 1.0), (4 / 3, 3 / 4)),
                       ((-0.1, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (0.0, 1.0))):
    with pytest.raises(ValueError, match=r"crop_window: scale .* ratio"):
      decode.crop_window(256, 384, np.random.default_rng(0), scale, ratio)


def test_dct_scale_keeps_at_least_the_output_size_across_the_window():
  assert decode.dct_scale(256, 384, (0, 64, 256, 256), 224) == 1
  assert decode.dct_scale(512, 768, (0, 0, 480, 470), 224) == 2
  assert decode.dct_scale(1024, 1536, (0, 0, 1000, 1024), 224) == 4
  assert decode.dct_scale(4000, 6000, (0, 0, 3000, 3000), 224) == 8
  assert decode.dct_scale(1024, 1536, (0, 0, 300, 1024), 224) == 1  # a thin window: full size


def _device_normalised(images_u8: np.ndarray) -> np.ndarray:
  return np.asarray(jax.jit(lambda x: image_input(x, jnp.float32))(images_u8))


@pytest.mark.parametrize("short, scale, mean_tol, p99_tol", [
    (256, (0.9, 1.0), 0.075, 0.6),   # decoded at full size
    (427, (0.3, 1.0), 0.075, 0.6),
    (640, (0.9, 1.0), 0.09, 0.65),   # decoded at 1/2
    (1024, (0.9, 1.0), 0.09, 0.65),  # decoded at 1/4
])
def test_uint8_path_equals_the_float_path_after_device_normalisation(short, scale, mean_tol,
                                                                     p99_tol):
  """The float path (full decode, crop, Pillow's antialiased bicubic resize, normalise on the host)
  against the fast path (window from the header, DCT-scaled decode, OpenCV resize, uint8
  normalised by the image tower), |difference| in normalised units (one uint8 level = 1 / 255 /
  0.27 = 0.0146). The decoded pixels are the same (both libjpeg-turbo); the resize kernels differ:
  Pillow's bicubic widens when shrinking (antialiasing), OpenCV's bilinear does not below
  decode.AREA_FROM. Measured per photo and window: mean 0.008-0.058 (0.5-4 levels), 99th
  percentile 0.09-0.51 at full size (the largest at 1.67x shrinking); mean 0.025-0.071, 99th
  percentile 0.27-0.54 where DCT scaling averages 2x2 or 4x4 blocks first."""
  for photo in _photos():
    data = _jpeg(_rescaled(photo, short))
    full = _decoded(data)
    for seed in range(3):
      rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
      want = pipeline.normalize(pipeline.random_resized_crop(full, 224, rng_a, scale))
      fast = decode.decode_random_crop(data, 224, rng_b, scale)
      assert fast.dtype == np.uint8 and fast.shape == (224, 224, 3)
      assert rng_a.random() == rng_b.random()  # the same draws: the same window
      diff = np.abs(_device_normalised(fast[None])[0] - want)
      assert diff.mean() < mean_tol and np.percentile(diff, 99) < p99_tol, (short, seed)


def test_image_towers_take_uint8_and_normalise_like_the_host():
  images = np.stack([_rescaled(p, 32)[:32, :32] for p in _photos()])  # (2, 32, 32, 3) uint8
  np.testing.assert_allclose(_device_normalised(images), pipeline.normalize(images), atol=1e-6)
  for tower in (ViT(patch_size=16, width=8, depth=1, num_heads=2, mlp_dim=8),
                ConvNet(channels=(4,))):
    params = jax.jit(tower.init)(jax.random.key(0), images)
    apply = jax.jit(tower.apply)
    np.testing.assert_allclose(apply(params, images), apply(params, pipeline.normalize(images)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, resized", [
    ((427, 640), (224, 335)),   # was 224x336 (rounded)
    ((427, 300), (318, 224)),   # was 319x224
    ((640, 427), (335, 224)),
    ((224, 224), (224, 224)),
    ((256, 1024), (224, 896)),
])
def test_resized_shape_truncates_the_long_side_like_torchvision(shape, resized):
  assert decode.resized_shape(*shape, 224) == resized
  h, w = shape
  short, long = min(h, w), max(h, w)
  assert max(decode.resized_shape(h, w, 224)) == int(224 * long / short)


def test_eval_crop_is_openclips_resize_and_rounded_center_crop_on_real_photos():
  """decode_center (and pipeline.resize_center_crop) against the rule written out: PIL bicubic
  resize to (int(224 * long / short), 224), crop at int(round((h - 224) / 2))."""
  for photo in _photos():
    for h, w in [(427, 640), (427, 300), (300, 427), (251, 600), (225, 224), (512, 341)]:
      image = np.ascontiguousarray(photo[:h, :w]) if h <= 427 else _rescaled(photo, 341)[:h, :w]
      h, w = image.shape[:2]
      nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
      ref = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BICUBIC))
      top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
      ref = ref[top:top + 224, left:left + 224]
      np.testing.assert_array_equal(pipeline.resize_center_crop(image, 224), ref)
      data = _jpeg(image, quality=95)
      np.testing.assert_array_equal(decode.decode_center(data, 224),
                                    pipeline.resize_center_crop(_decoded(data), 224))


def test_transform_takes_encoded_bytes_or_arrays_alike():
  data = _jpeg(_rescaled(_photos()[0], 300))
  element = {"image": data, "caption": b"a temple", "label": 1}
  array = dict(element, image=_decoded(data))
  tokenize = lambda texts: np.array([[len(t)] for t in texts], np.int32)
  for train in (False, True):
    t = pipeline.ImageTextTransform(64, tokenize, train=train)
    a = t.random_map(element, np.random.default_rng(5))
    b = t.random_map(array, np.random.default_rng(5))
    assert a["image"].dtype == np.uint8 and a["tokens"].tolist() == [8]
    if train:  # 300 px -> 64 px: the bytes decode at 1/4 (DCT scaling), the array cannot
      assert np.abs(a["image"].astype(int) - b["image"]).mean() < 6  # measured 3.9 levels
    else:
      np.testing.assert_array_equal(a["image"], b["image"])
    assert np.asarray(element["image"], dtype=object).ndim == 0  # tfds gives a bytes scalar
    c = t.random_map(dict(element, image=np.asarray(data, dtype=object)), np.random.default_rng(5))
    np.testing.assert_array_equal(a["image"], c["image"])


def test_grey_and_png_inputs_are_decoded_to_rgb():
  grey = _rescaled(_photos()[1], 100)[..., 0]
  for image in (Image.fromarray(grey), Image.fromarray(_rescaled(_photos()[1], 100))):
    for fmt in ("JPEG", "PNG"):
      out = io.BytesIO()
      image.save(out, fmt)
      got = decode.decode_random_crop(out.getvalue(), 48, np.random.default_rng(0))
      assert got.shape == (48, 48, 3) and got.dtype == np.uint8
  with pytest.raises(ValueError, match=r"example 7: expected an image .* got shape \(4, 5, 2\)"):
    decode.decode_center(np.zeros((4, 5, 2), np.uint8), 4, where="example 7")


def test_a_prepared_source_opened_with_image_decoders_gives_the_stored_jpeg_bytes(tmp_path):
  from mmjax.data import image_text  # pylint: disable=import-outside-toplevel
  files = {}
  for i, photo in enumerate(_photos()):
    files[f"{i}.jpg"] = _jpeg(_rescaled(photo, 240))
    (tmp_path / f"{i}.jpg").write_bytes(files[f"{i}.jpg"])
  (tmp_path / "captions.csv").write_text("path,caption\n0.jpg,a temple\n1.jpg,a flower\n")
  builder = pipeline.prepare(image_text.ImageText, tmp_path / "tfds",
                             source=str(tmp_path / "captions.csv"), max_size=None)
  source = builder.as_data_source(split="train", decoders=pipeline.image_decoders())
  decoded = builder.as_data_source(split="train")
  # train.py and the evaluators open image_text splits through its Dataset: with these decoders
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  assert datasets.get("image_text").source(builder, "train")[0]["image"][:2] == b"\xff\xd8"
  assert datasets.get("shapes").decoders is None
  transform = pipeline.ImageTextTransform(64, lambda t: np.zeros((len(t), 4), np.int32))
  for i in range(len(source)):
    record = source[i]
    assert record["image"] == files[record["key"].decode()]  # stored byte for byte, undecoded
    np.testing.assert_array_equal(  # evaluation: the same pixels as TFDS's own decoding
        transform.random_map(record, np.random.default_rng(0))["image"],
        pipeline.resize_center_crop(decoded[i]["image"], 64))
