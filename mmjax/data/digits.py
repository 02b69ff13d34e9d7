"""DigitsTwoView: the two-view benchmark of deep CCA (Wang et al. 2015, "On Deep Multi-View
Representation Learning", built there from MNIST), made from scikit-learn's bundled 8x8 digits
(sklearn.datasets.load_digits: 1797 images, no download).

    builder = DigitsTwoView(data_dir=d)           # tfds name "mmjax_digits_two_view", config "28px"
    builder.download_and_prepare()
    source = builder.as_data_source(split="train")   # source[i]['view1']: (28, 28, 1) float32

For each source image x of class y (pixel values /16, so in [0, 1]):
  view1 = x rotated by an angle uniform in [-pi/4, pi/4] (bilinear, zero fill);
  view2 = another image x' != x of class y from the same split, plus noise uniform in [0, 1] per
          pixel, truncated to [0, 1].
Only the class is shared between the views, so a correlation objective should recover it; `label`
is kept for evaluation (e.g. a linear SVM on the learnt view-1 features, as in the paper).

Image size: 28x28 by default. Each 8x8 digit is upsampled bilinearly to 20x20 and centred in a
28x28 frame: the layout of MNIST (20x20 digit, 4-pixel border), so encoders and settings written for
the paper's 784-dimensional inputs apply as they are, and the rotation is not cut off at the corners
nor aliased as badly as on an 8x8 grid. Config "8px" keeps the raw 8x8 images (rotated in place).
Views are float32 images (S, S, 1); an MLP (deep CCA) flattens them to S*S vectors.

Splits, by a seeded class-stratified permutation of the 1797 source images: test (num_test),
validation (num_validation), train (the rest, 1197 by default); view-2 partners come from the
same split, so no image of a held-out split is seen in training.
With repeats=k every source image yields k pairs (new angle, partner and noise each time). An
example is a pure function of (seed, split, index): the same seed gives byte-identical files.
"""
from __future__ import annotations

import dataclasses

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from mmjax.data import datasets

SPLITS = {"train": 0, "validation": 1, "test": 2}
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a photo of the number {}.", "a handwritten digit {}.", "the digit {}.",
             "a blurry image of the number {}.")
_CONFIG_FIELDS = ("image_size", "num_validation", "num_test", "repeats", "seed")


@dataclasses.dataclass(eq=False)
class DigitsTwoViewConfig(tfds.core.BuilderConfig):
  """image_size: 8 (raw digits) or S >= 10 (digit upsampled to round(S * 5 / 7), centred in S x S);
  num_validation, num_test: source images per held-out split; repeats: pairs per source image;
  seed: the whole dataset's seed."""
  image_size: int = 28
  num_validation: int = 300
  num_test: int = 300
  repeats: int = 1
  seed: int = 0

  def validate(self, n_images: int = 1797):
    """Raises ValueError naming the field when the config cannot make a dataset from n_images."""
    if self.image_size != 8 and self.image_size < 10:
      raise ValueError(f"DigitsTwoViewConfig.image_size={self.image_size}: expected 8 or >= 10")
    if self.repeats < 1:
      raise ValueError(f"DigitsTwoViewConfig.repeats={self.repeats}: expected >= 1")
    if min(self.num_validation, self.num_test) < 50 or (
        self.num_validation + self.num_test > n_images - 100):
      raise ValueError(f"DigitsTwoViewConfig: num_validation={self.num_validation} and num_test="
                       f"{self.num_test} must each be >= 50 and leave >= 100 of the {n_images} "
                       "images for train")


def load_source():
  """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64) from scikit-learn."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_indices(config: DigitsTwoViewConfig, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Source-image indices of each split, stratified by class: each image gets the key
  (random rank within its class + U(0, 1)) / class size; sorted by key, the first num_test are
  test, the next num_validation validation, the rest train."""
  rng = np.random.default_rng([config.seed, 99])
  key = np.empty(len(labels))
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    key[members] = (rng.permutation(len(members)) + rng.random(len(members))) / len(members)
  order = np.argsort(key, kind="stable")
  a, b = config.num_test, config.num_test + config.num_validation
  splits = {"train": np.sort(order[b:]), "validation": np.sort(order[a:b]),
            "test": np.sort(order[:a])}
  for split, members in splits.items():
    counts = np.bincount(labels[members], minlength=10)
    if counts.min() < 2:   # view 2 needs another image of the class in the same split
      raise ValueError(f"DigitsTwoView split {split!r} has {counts.min()} image(s) of class "
                       f"{counts.argmin()}; it needs >= 2 (raise num_{split})")
  return splits


def to_frame(image: np.ndarray, size: int) -> np.ndarray:
  """An (8, 8) digit -> (size, size): bilinear upsampling to round(size * 5 / 7), zero border."""
  if size == 8:
    return image.astype(np.float32)
  inner = round(size * 5 / 7)
  up = np.asarray(Image.fromarray(image.astype(np.float32)).resize(
      (inner, inner), Image.BILINEAR), np.float32)
  out = np.zeros((size, size), np.float32)
  top = (size - inner) // 2
  out[top:top + inner, top:top + inner] = np.clip(up, 0.0, 1.0)
  return out


def make_pair(config, images, labels, members, split: str, index: int) -> dict:
  """Example `index` of `split` (members: that split's source indices), a pure function of
  (config.seed, split, index)."""
  rng = np.random.default_rng([config.seed, SPLITS[split], index])
  src = int(members[index % len(members)])
  angle = rng.uniform(-np.pi / 4, np.pi / 4)
  view1 = ndimage.rotate(to_frame(images[src], config.image_size), np.degrees(angle),
                         reshape=False, order=1, mode="constant", cval=0.0)
  same = members[(labels[members] == labels[src]) & (members != src)]
  partner = int(same[rng.integers(len(same))])
  view2 = to_frame(images[partner], config.image_size)
  view2 = view2 + rng.uniform(0.0, 1.0, view2.shape).astype(np.float32)
  return {
      "id": f"{split}/{index:06d}",
      "view1": np.clip(view1, 0.0, 1.0).astype(np.float32)[..., None],
      "view2": np.clip(view2, 0.0, 1.0).astype(np.float32)[..., None],
      "label": int(labels[src]),
      "angle": np.float32(angle),
      "source1": src,
      "source2": partner,
  }


class DigitsTwoView(tfds.core.GeneratorBasedBuilder):
  """Rotated / noisy two-view digits (see the module docstring); registered as
  "mmjax_digits_two_view"."""
  name = "mmjax_digits_two_view"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      DigitsTwoViewConfig(name="28px", description="28x28 views, MNIST layout (default)."),
      DigitsTwoViewConfig(name="8px", image_size=8, description="Raw 8x8 views."),
  ]

  def __init__(self, *, config: str | DigitsTwoViewConfig | None = None,
               file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    """kwargs: data_dir, version, or DigitsTwoViewConfig fields (image_size, num_validation,
    num_test, repeats, seed), which override `config` (default "28px") under a config name that
    encodes them, so different settings never share a directory."""
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    if overrides:
      base = config if isinstance(config, DigitsTwoViewConfig) else next(
          c for c in self.BUILDER_CONFIGS if c.name == (config or self.BUILDER_CONFIGS[0].name))
      values = {**{f: getattr(base, f) for f in _CONFIG_FIELDS}, **overrides}
      config = next((c for c in self.BUILDER_CONFIGS
                     if all(getattr(c, f) == v for f, v in values.items())), None)
      config = config or DigitsTwoViewConfig(
          name="{image_size}px_val{num_validation}_test{num_test}_rep{repeats}_seed{seed}".format(
              **values), **values)
    super().__init__(config=config, file_format=file_format, **kwargs)
    self.builder_config.validate()

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "view1": tfds.features.Tensor(shape=(s, s, 1), dtype=np.float32),
            "view2": tfds.features.Tensor(shape=(s, s, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=10),
            "angle": tfds.features.Scalar(np.float32),   # view-1 rotation, radians
            "source1": tfds.features.Scalar(np.int32),   # load_digits() index of view 1's image
            "source2": tfds.features.Scalar(np.int32),   # ... and of view 2's (same class)
        }),
        supervised_keys=None,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # scikit-learn ships the images
    images, labels = load_source()
    members = split_indices(self.builder_config, labels)
    return {split: self._generate_examples(images, labels, members[split], split)
            for split in SPLITS}

  def _generate_examples(self, images, labels, members, split):
    for i in range(len(members) * self.builder_config.repeats):
      yield i, make_pair(self.builder_config, images, labels, members, split, i)


# --------------------------------------------------------------------------------------- dataset

@dataclasses.dataclass
class TwoViewTransform(grain.MapTransform):
  """Digits two-view example -> {'view1', 'view2': float32 (S, S, 1), 'label'}."""

  def map(self, element):
    """One digits example (dict of numpy) -> the float32 views and the label."""
    return {"view1": np.asarray(element["view1"], np.float32),
            "view2": np.asarray(element["view2"], np.float32),
            "label": np.asarray(element["label"])}


def transform(*, train: bool, image_size: int = 28, tokenizer=None) -> TwoViewTransform:
  """The views as stored (no augmentation: the views are already random), train or not."""
  del train, image_size, tokenizer
  return TwoViewTransform()


DATASET = datasets.Dataset(
    "digits", builder=lambda: DigitsTwoView, transform=transform, class_names=CLASS_NAMES,
    templates=TEMPLATES, image_field="view1", has_captions=False)
"""The two-view digits for training and evaluation (mmjax.data.datasets)."""
