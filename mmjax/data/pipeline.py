"""Input pipeline: a random-access TFDS source -> this host's share, shuffled and augmented by grain
-> host batches -> global jax.Arrays sharded over the mesh's batch axes.

    source = prepare(Shapes, data_dir).as_data_source(split="train")   # array_record, random access
    loader = make_loader(source, ImageTextTransform(64, tokenizer, train=True), global_batch_size=256,
                         seed=0)
    batches = BatchIterator(loader, mesh)          # yields {'image': (B,H,W,3), 'tokens': (B,L), ...}
    state = batches.get_state()                    # JSON string: save it with the train state
    batches.set_state(state)                       # ... and the run resumes at exactly that batch

The global batch sequence is a function of (seed, global batch size) alone: every process walks the
same shuffled record order and reads only its own slice of each global batch (GlobalBatchSampler),
so 1 process with 8 devices and 2 processes with 4 see the same global batches, and no record is
read twice; so does any worker_count (grain worker processes compute whole batches:
mmjax.data.batches). Augmentation draws from a per-record generator keyed by the record's global
position, so the iterator position alone (batches taken) makes a resumed run see the same batches
as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence

import grain.python as grain
import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh
from PIL import Image
from tqdm import tqdm

from mmjax import parallel, paths
from mmjax._pixels import CLIP_MEAN, CLIP_STD
from mmjax.data import decode
from mmjax.data.batches import HostBatches, batch_count
from mmjax.data.decode import as_rgb  # noqa: F401 - pipeline.as_rgb since before decode.py


def normalize(images: np.ndarray, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD) -> np.ndarray:
  """uint8 (..., 3) images -> float32 (x / 255 - mean) / std per channel (CLIP's statistics), on
  the host: the image towers do the same on the device (mmjax.models.common.image_input) for the
  uint8 batches ImageTextTransform sends."""
  return (np.asarray(images).astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)


def prepare(builder_cls, data_dir: str | pathlib.Path, *, download: bool = True, **builder_kwargs):
  """The builder, prepared once under data_dir (no network: every mmjax builder generates or reads
  local files). data_dir: a local path (resolved) or a URI TFDS reads (gs://, ...: mmjax.paths).
  With download=False a missing dataset is an error naming the directory."""
  data_dir = paths.resolve(data_dir, "data_dir")
  builder = builder_cls(data_dir=str(data_dir), **builder_kwargs)
  if not epath.Path(builder.data_dir).exists():
    if not download:
      raise FileNotFoundError(f"dataset {builder.name} is not prepared under {data_dir} (looked for "
                              f"{builder.data_dir}); prepare it with download=True")
    builder.download_and_prepare()
  return builder


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """(size, size, 3) uint8 as OpenCLIP evaluates: the shorter side resized to `size` (bicubic; the
  longer side int(size * long / short), truncated), then the central crop with rounded offsets
  (torchvision Resize + CenterCrop; mmjax.data.decode.decode_center)."""
  return decode.decode_center(as_rgb(image), size)


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """Inception-style crop (Szegedy et al. 2015) of a decoded (H, W, 3) image: the window of
  decode.crop_window (a random area fraction in `scale` and aspect ratio in `ratio`; the central
  square after 10 tries), cut out and resized to size x size (bicubic). The reference for the fast
  path, decode.decode_random_crop, which draws the same window and decodes less."""
  top, left, ch, cw = decode.crop_window(*image.shape[:2], rng, scale, ratio)
  crop = Image.fromarray(np.ascontiguousarray(image[top:top + ch, left:left + cw]))
  return np.asarray(crop.resize((size, size), Image.BICUBIC))


@dataclasses.dataclass
class ImageTextTransform(grain.RandomMapTransform):
  """One example -> {'image': (S, S, 3) uint8, 'tokens': (L,) int32, **labels}.

  The image is encoded bytes (a source opened with decoders=image_decoders(), the fast path: the
  crop window is drawn from the header and JPEGs decode at reduced size) or a decoded (H, W[, C])
  uint8 array. train=True: random resized crop (no flips: captions say "left of"); train=False:
  OpenCLIP's resize + central crop. Images stay uint8 (4x fewer bytes than float32): the image
  towers normalise them on the device. Keys in `keep` (e.g. 'label') are passed through.
  """
  image_size: int
  tokenizer: Callable[..., np.ndarray]
  train: bool = False
  image_key: str = "image"
  text_key: str = "caption"
  keep: Sequence[str] = ("label",)
  crop_scale: tuple[float, float] = (0.9, 1.0)

  def random_map(self, element, rng: np.random.Generator):
    """One example {image: bytes or (H, W, 3|1) uint8, caption: str|bytes, ...} -> {'image':
    (S, S, 3) uint8, 'tokens': (L,) int32, kept keys}; rng draws the crop (grain keys it by
    record)."""
    where = f"example {element.get('id', '')!r}".strip()
    data = element[self.image_key]
    if self.train:
      image = decode.decode_random_crop(data, self.image_size, rng, self.crop_scale, where=where)
    else:
      image = decode.decode_center(data, self.image_size, where=where)
    caption = element[self.text_key]
    caption = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
    out = {"image": image, "tokens": np.asarray(self.tokenizer([caption])[0], np.int32)}
    out.update({k: np.asarray(element[k]) for k in self.keep if k in element})
    return out


def image_decoders(image_key: str = "image") -> dict:
  """as_data_source(decoders=...) that leaves image_key as its stored (JPEG, PNG) bytes: TFDS would
  decode the full image in the source; ImageTextTransform decodes only what the crop needs."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return {image_key: tfds.decode.SkipDecoding()}


def host_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
  """This process's share of the global batch; a ValueError when it does not divide evenly."""
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} does not divide over "
                     f"{process_count} processes")
  return global_batch_size // process_count


class GlobalBatchSampler:
  """A grain sampler for this process's slice of every global batch.

  Local position k is row (k mod b) of local batch (k // b); it maps to position
  (k // b) * B + p * b + (k mod b) of one shuffled stream shared by all processes (B = global batch,
  b = B / process_count, p = process index), the equivalent of tfds.split_for_jax_process that also
  keeps the global batches independent of the number of processes.
  """

  def __init__(self, num_records: int, global_batch_size: int, *, shuffle: bool, seed: int,
               num_epochs: int | None, process_index: int | None = None,
               process_count: int | None = None):
    self._process = jax.process_index() if process_index is None else process_index
    self._count = jax.process_count() if process_count is None else process_count
    self._local = host_batch_size(global_batch_size, self._count)
    self._global = global_batch_size
    self._inner = grain.IndexSampler(num_records=num_records, shard_options=grain.NoSharding(),
                                     shuffle=shuffle, num_epochs=num_epochs, seed=seed)

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    batch, row = divmod(index, self._local)
    meta = self._inner[batch * self._global + self._process * self._local + row]
    return grain.RecordMetadata(index=index, record_key=meta.record_key, rng=meta.rng)

  def __repr__(self) -> str:
    """What grain compares when an iterator state is restored: the same on every process (each
    restores the state process 0 saved), different for another batch size, seed, source size or
    process count (whose positions would mean other records)."""
    return (f"GlobalBatchSampler(global_batch={self._global}, processes={self._count}, "
            f"inner={self._inner!r})")


class InMemorySource:
  """A random-access data source read into memory once, like tf.data's cache(): for small splits
  whose records are slow to decode (PNG) but fit in RAM, e.g. the 20,000 shapes training images
  (250 MB decoded). Every process holds the whole split. grain reads it like any data source.
  """

  def __init__(self, source, desc: str = "caching"):
    if len(source) == 0:
      raise ValueError("the data source is empty: nothing to cache")
    self._records = [source[i] for i in tqdm(range(len(source)), desc=desc, unit="ex",
                                             disable=jax.process_index() != 0, leave=False)]
    self._repr = f"InMemorySource({source!r})"

  def __repr__(self) -> str:
    """The wrapped source's repr: grain compares it when an iterator state is restored."""
    return self._repr

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int):
    return self._records[index]


class PaddedSource:
  """The first `count` records of a source, then record 0 again up to `length` records: whole
  batches for evaluation (every process reads the same number of rows; the padding rows are
  dropped from the results)."""

  def __init__(self, source, count: int, length: int):
    if not 0 < count <= min(len(source), length):
      raise ValueError(f"PaddedSource: count={count} must be in [1, min(len(source)="
                       f"{len(source)}, length={length})]")
    self._source, self._count, self._length = source, count, length
    self.in_memory = isinstance(source, InMemorySource)

  def __repr__(self) -> str:
    return f"PaddedSource({self._source!r}, count={self._count}, length={self._length})"

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int):
    return self._source[index if index < self._count else 0]


def make_loader(source, transforms: grain.Transformation | Sequence[grain.Transformation], *,
                global_batch_size: int, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, drop_remainder: bool = True,
                worker_count: int = 0, read_threads: int | None = None) -> HostBatches:
  """This process's host batches of `source` (HostBatches: iterate it, or BatchIterator(it, mesh)).

  num_epochs=None repeats forever (training); evaluation passes num_epochs=1 and shuffle=False
  (with a PaddedSource, so every batch is whole). transforms: grain MapTransforms and
  RandomMapTransforms, applied per record (a filter would change the batch sizes).
  worker_count > 0 computes whole batches in that many grain worker processes (the transforms and
  the source must then pickle); the batches are the same for every worker_count. read_threads
  read each batch's records (default 16; none for a source held in memory: InMemorySource or a
  PaddedSource of one, where threads only contend for the GIL, ~10x the transform itself).
  """
  if len(source) == 0:
    raise ValueError("the data source is empty: nothing to load")
  transforms = [transforms] if isinstance(transforms, grain.Transformation) else list(transforms)
  for t in transforms:
    if not isinstance(t, (grain.MapTransform, grain.RandomMapTransform)):
      raise ValueError(f"make_loader: transform {type(t).__name__} is not a grain MapTransform or "
                       "RandomMapTransform (one record in, one out, so batches stay whole)")
  if worker_count < 0:
    raise ValueError(f"worker_count={worker_count}: expected an int >= 0")
  sampler = GlobalBatchSampler(len(source), global_batch_size, shuffle=shuffle, seed=seed,
                               num_epochs=num_epochs)
  in_memory = isinstance(source, InMemorySource) or getattr(source, "in_memory", False)
  threads = (0 if in_memory else 16) if read_threads is None else read_threads
  local = host_batch_size(global_batch_size)
  total = None if num_epochs is None else len(source) * num_epochs
  return HostBatches(source, sampler, transforms, local, batch_count(
      total, global_batch_size, local, jax.process_index(), drop_remainder), worker_count, threads)


def to_global(host_batch: dict, mesh: Mesh) -> dict:
  """Host batches (this process's rows) -> global jax.Arrays split over ('data', 'fsdp').

  The global batch is the concatenation of the host batches in process order.
  """
  devices = mesh.shape["data"] * mesh.shape["fsdp"]
  local = devices * jax.local_device_count() // jax.device_count()
  out = {}
  for key, value in host_batch.items():
    value = np.asarray(value)
    if value.shape[0] % max(local, 1):
      raise ValueError(f"host batch of {value.shape[0]} rows ('{key}') does not divide over the "
                       f"{local} local devices of the mesh's batch axes")
    sharding = parallel.batch_sharding(mesh, value.ndim)
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


class BatchIterator:
  """Iterates global batches; its position is a JSON string (get_state / set_state) that any
  worker_count resumes. The grain iterator (and its worker processes) starts at the first batch
  asked for, so set_state before it costs no second start; close() stops the workers."""

  def __init__(self, loader: HostBatches, mesh: Mesh):
    self._loader, self._mesh = loader, mesh
    self._position, self._iterator = 0, None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._iterator is None:
      self._iterator = self._loader.iterate(self._position)
    batch = next(self._iterator)
    self._position += 1
    return to_global(batch, self._mesh)

  def get_state(self) -> str:
    """The iterator position as a JSON string (save it beside the train state)."""
    return json.dumps(self._loader.state(self._position), indent=4)

  def set_state(self, state: str) -> None:
    """Moves to a position from get_state: the next batch is the one that followed it."""
    position = self._loader.position(json.loads(state))
    self.close()
    self._position = position

  def close(self) -> None:
    """Stops the grain iterator and its worker processes (the next batch starts them again)."""
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None
