"""Datasets by name: the TFDS builder, its splits and the per-example transform for training.

  shapes       mmjax.data.shapes.Shapes            image + caption + label (CLIP, SigLIP, fusion)
  digits       mmjax.data.digits.DigitsTwoView     view1 + view2 + label (deep CCA)
  image_text   mmjax.data.image_text.ImageText     the user's image-caption pairs (CLIP, SigLIP)
"""
from __future__ import annotations

import dataclasses

import grain.python as grain
import numpy as np

from mmjax.data import pipeline

NAMES = ("shapes", "digits", "image_text")


def builder_class(name: str):
  """The TFDS builder class for a dataset name (imported lazily: it needs tensorflow_datasets)."""
  if name == "shapes":
    from mmjax.data.shapes import Shapes  # pylint: disable=import-outside-toplevel
    return Shapes
  if name == "digits":
    from mmjax.data.digits import DigitsTwoView  # pylint: disable=import-outside-toplevel
    return DigitsTwoView
  if name == "image_text":
    from mmjax.data.image_text import ImageText  # pylint: disable=import-outside-toplevel
    return ImageText
  raise ValueError(f"unknown dataset {name!r}; expected one of {NAMES}")


@dataclasses.dataclass
class TwoViewTransform(grain.MapTransform):
  """Digits two-view example -> {'view1', 'view2': float32 (S, S, 1), 'label'}."""

  def map(self, element):
    """One digits example (dict of numpy) -> the float32 views and the label."""
    return {"view1": np.asarray(element["view1"], np.float32),
            "view2": np.asarray(element["view2"], np.float32),
            "label": np.asarray(element["label"])}


def transform(name: str, *, train: bool, image_size: int = 64, tokenizer=None):
  """The per-example transform of dataset `name` (train=True: with augmentation)."""
  if name == "digits":
    return TwoViewTransform()
  if name == "shapes":  # already at image_size; crops would cut objects out of the 3x3 grid
    return pipeline.ImageTextTransform(image_size, tokenizer, train=False)
  return pipeline.ImageTextTransform(image_size, tokenizer, train=train)


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("a photo of the number {}.", "a handwritten digit {}.", "the digit {}.",
                   "a blurry image of the number {}.")


def _prompts(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  if name == "shapes":
    from mmjax.data import shapes  # pylint: disable=import-outside-toplevel
    return shapes.CLASS_NAMES, shapes.TEMPLATES
  if name == "digits":
    return DIGIT_NAMES, DIGIT_TEMPLATES
  raise ValueError(f"dataset {name!r} has no class names or prompt templates; expected one of "
                   "('shapes', 'digits')")


def class_names(name: str) -> tuple[str, ...]:
  """The class names of dataset `name`, in label order (for zero-shot classifiers)."""
  return _prompts(name)[0]


def templates(name: str) -> tuple[str, ...]:
  """The zero-shot prompt templates of dataset `name` ('{}' is replaced by a class name)."""
  return _prompts(name)[1]
