"""Input pipeline: host batches -> global sharded arrays, exact resume, transforms and errors."""
import itertools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.data import pipeline


def _source(n=50, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "caption": f"caption {i}",
           "label": i} for i in range(n)]


def _tokenize(texts):
  return np.array([[len(t), sum(map(ord, t)) % 97, 2] for t in texts], np.int32)


def _loader(source, global_batch=16, seed=3, train=True):
  transform = pipeline.ImageTextTransform(16, _tokenize, train=train)
  return pipeline.make_loader(source, transform, global_batch_size=global_batch, seed=seed)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (4, 2, 1), (2, 2, 2)])
def test_global_batch_is_sharded_and_equals_the_host_batch(mesh_shape):
  mesh = parallel.make_mesh(*mesh_shape)
  host = next(iter(_loader(_source())))
  batch = pipeline.to_global(host, mesh)
  for key, value in batch.items():
    assert value.sharding.spec == P(("data", "fsdp"), *([None] * (value.ndim - 1)))
    np.testing.assert_array_equal(np.asarray(value), host[key])  # one process: its host batch
    rows = 16 // (mesh_shape[0] * mesh_shape[1])
    assert {s.data.shape[0] for s in value.addressable_shards} == {rows}
  assert batch["image"].shape == (16, 16, 16, 3) and batch["tokens"].dtype == np.int32


def test_restored_iterator_yields_the_same_next_batches():
  mesh = parallel.make_mesh(4, 2)
  source = _source()
  original = pipeline.BatchIterator(_loader(source), mesh)
  for _ in range(5):  # past the first epoch of 50 records: 3 batches of 16 per epoch
    next(original)
  state = original.get_state()
  expected = [jax.tree.map(np.asarray, next(original)) for _ in range(4)]
  restored = pipeline.BatchIterator(_loader(source), mesh)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(np.asarray(got[key]), want[key])


def test_shuffle_is_deterministic_per_seed_and_covers_each_epoch():
  labels = lambda seed: [int(x) for b in itertools.islice(_loader(_source(48), seed=seed), 3)
                         for x in b["label"]]
  first = labels(1)
  assert first == labels(1) and first != labels(2)
  assert sorted(first) == list(range(48))  # one epoch = 3 batches of 16, each record once


def test_eval_transform_is_resize_and_center_crop_in_uint8():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 20:60] = 255  # the central 40 x 40 square is white
  out = pipeline.ImageTextTransform(20, _tokenize).random_map(
      {"image": image, "caption": b"x", "label": 3}, np.random.default_rng(0))
  assert out["image"].shape == (20, 20, 3) and out["label"] == 3 and out["image"].dtype == np.uint8
  np.testing.assert_array_equal(out["image"][2:-2, 2:-2], 255)  # the towers normalise on device


def test_grey_images_become_rgb_and_bad_ranks_are_named():
  assert pipeline.as_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
  with pytest.raises(ValueError, match=r"\(4, 5, 2\)"):
    pipeline.as_rgb(np.zeros((4, 5, 2), np.uint8))
  with pytest.raises(ValueError, match=r"got shape \(3, 4, 5, 3\)"):
    pipeline.as_rgb(np.zeros((3, 4, 5, 3), np.uint8))


def test_batch_size_errors():
  with pytest.raises(ValueError, match="global batch size 10 does not divide over 4 processes"):
    pipeline.host_batch_size(10, process_count=4)
  mesh = parallel.make_mesh(8)
  with pytest.raises(ValueError, match="host batch of 12 rows"):
    pipeline.to_global({"x": np.zeros((12, 2))}, mesh)
  with pytest.raises(ValueError, match="empty"):
    _loader([])


def test_missing_dataset_directory_is_named(tmp_path):
  class Builder:  # the part of the tfds builder interface that prepare() uses
    name = "fake"

    def __init__(self, data_dir):
      self.data_dir = f"{data_dir}/fake/1.0.0"

  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
    pipeline.prepare(Builder, tmp_path / "nowhere", download=False)


def test_global_batches_do_not_depend_on_the_number_of_processes():
  """Two processes' host batches, concatenated in process order, are the one-process global batch."""
  def keys(process_index, process_count, n=40):
    sampler = pipeline.GlobalBatchSampler(50, 8, shuffle=True, seed=5, num_epochs=None,
                                          process_index=process_index, process_count=process_count)
    return [sampler[k].record_key for k in range(n)]
  one = keys(0, 1, 80)
  halves = [keys(p, 2) for p in (0, 1)]
  for batch in range(10):
    joined = halves[0][batch * 4:(batch + 1) * 4] + halves[1][batch * 4:(batch + 1) * 4]
    assert joined == one[batch * 8:(batch + 1) * 8]


def test_sampler_repr_is_the_same_on_every_process_but_not_for_another_process_count():
  """grain compares the sampler's repr on restore, and every process restores the state process 0
  saved: a repr with the process index made every other process's resume fail."""
  def sampler(index, count, batch=8):
    return repr(pipeline.GlobalBatchSampler(50, batch, shuffle=True, seed=5, num_epochs=None,
                                            process_index=index, process_count=count))
  assert sampler(0, 2) == sampler(1, 2)
  assert sampler(0, 2) != sampler(0, 1) and sampler(0, 2) != sampler(0, 2, batch=16)


def test_in_memory_source_gives_the_same_batches_and_restores():
  source = _source()
  cached = pipeline.InMemorySource(source)
  assert len(cached) == len(source) and cached[7] is source[7]
  plain, fast = iter(_loader(source)), iter(_loader(cached))
  for _ in range(5):  # across an epoch boundary
    want, got = next(plain), next(fast)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  mesh = parallel.make_mesh(8)
  original = pipeline.BatchIterator(_loader(cached), mesh)
  next(original)
  state = original.get_state()
  expected = jax.tree.map(np.asarray, next(original))
  restored = pipeline.BatchIterator(_loader(pipeline.InMemorySource(source)), mesh)
  restored.set_state(state)
  got = next(restored)
  for key in expected:
    np.testing.assert_array_equal(np.asarray(got[key]), expected[key])
  with pytest.raises(ValueError, match="empty"):
    pipeline.InMemorySource([])
