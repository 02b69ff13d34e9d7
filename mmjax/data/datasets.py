"""Datasets by name: each dataset module states what training and evaluation need to know of it.

    dataset = datasets.get("shapes")            # or a dotted path: "my_pkg.my_dataset"
    builder = pipeline.prepare(dataset.builder(), data_dir)
    transform = dataset.transform(train=True, image_size=64, tokenizer=tokenizer)
    dataset.class_names, dataset.templates      # zero-shot classes and prompt templates

A dataset module defines `DATASET = Dataset(...)` beside its TFDS builder. The built-in ones:

  shapes       mmjax.data.shapes       image + caption + label, colour, shape (CLIP, SigLIP, fusion)
  digits       mmjax.data.digits       view1 + view2 + label (deep CCA, DCCAE, bimodal autoencoder)
  image_text   mmjax.data.image_text   the user's image-caption pairs (CLIP, SigLIP)
  webdataset   mmjax.data.webdataset   image-caption pairs streamed from WebDataset tar shards
  sequences    mmjax.data.sequences    audio + video + words streams, unaligned, + label (MulT, MTAG)

A user's dataset is any importable module with a DATASET (`dataset.name=my_pkg.my_dataset` in the
config); nothing in mmjax needs editing.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from mmjax import _lookup

BUILTIN = {"shapes": "mmjax.data.shapes", "digits": "mmjax.data.digits",
           "image_text": "mmjax.data.image_text", "webdataset": "mmjax.data.webdataset",
           "sequences": "mmjax.data.sequences"}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What a dataset module tells the trainer and the evaluators about its data.

  Attributes:
    name: the name it is looked up by.
    builder: () -> the TFDS builder class (a function, so tensorflow_datasets loads only when the
      data is prepared).
    transform: (train=bool, image_size=int, tokenizer=...) -> a grain transform of one example into
      model inputs (uint8 or normalised float32 images, int32 tokens, views) and the integer
      `fields` it keeps.
    class_names: the label's class names, in label order (zero-shot classifiers); () if none.
    templates: prompt templates with '{}' for a class name.
    fields: the integer fields an evaluated example keeps (e.g. 'label'); the eval transform
      passes them through.
    attributes: integer field -> the words of its values (e.g. 'colour' -> ('red', ...)), for
      embedding arithmetic.
    image_field: the field holding the image a two-tower model embeds (zero-shot).
    has_captions: whether examples pair the image with a caption (retrieval).
    vocabulary: the words of a closed-vocabulary corpus, for the 'word' tokenizer; () if open.
    decoders: () -> the TFDS `decoders` its splits are read with (e.g. pipeline.image_decoders:
      JPEG bytes left undecoded, so the transform decodes only the crop it takes); None: TFDS's.
  """
  name: str
  builder: Callable[[], type]
  transform: Callable[..., object]
  class_names: tuple[str, ...] = ()
  templates: tuple[str, ...] = ()
  fields: tuple[str, ...] = ("label",)
  attributes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  image_field: str = "image"
  has_captions: bool = True
  vocabulary: tuple[str, ...] = ()
  decoders: Callable[[], dict] | None = None

  def source(self, builder, split: str):
    """The random-access source of a split of the prepared builder, read with `decoders`."""
    if self.decoders is None:
      return builder.as_data_source(split=split)
    return builder.as_data_source(split=split, decoders=self.decoders())


def get(name: str) -> Dataset:
  """The Dataset of a built-in name or of a module path holding DATASET; a ValueError otherwise."""
  return _lookup.resolve(name, BUILTIN, "DATASET", "dataset", Dataset)
