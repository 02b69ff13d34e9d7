"""grain worker processes (issue 16, item 2): the global batches and the iterator state do not depend
on worker_count, a run resumes exactly with any worker_count, and states saved by grain's
DataLoader before the loader computed whole batches still load."""
import grain.python as grain
import jax
import numpy as np
import pytest

from mmjax import parallel
from mmjax.data import pipeline, tokenizers


def _source(n=24):
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "caption": f"photo {i}",
           "label": i} for i in range(n)]


def _transform():
  return pipeline.ImageTextTransform(8, tokenizers.ByteTokenizer(8), train=True,
                                     crop_scale=(0.3, 1.0))


def _batches(iterator, n):
  return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def _equal(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for key in w:
      np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def _by_record(source, transform, global_batch, seed, batches):
  """The reference: row r of batch k is the transform of the record the sampler puts at position
  k * B + r, with that position's rng (no loader, no workers)."""
  sampler = pipeline.GlobalBatchSampler(len(source), global_batch, shuffle=True, seed=seed,
                                        num_epochs=None)
  out = []
  for k in range(batches):
    metas = [sampler[k * global_batch + r] for r in range(global_batch)]
    rows = [transform.random_map(source[m.record_key], m.rng) for m in metas]
    out.append({key: np.stack([row[key] for row in rows]) for key in rows[0]})
  return out


def test_batches_and_resume_are_the_same_for_worker_count_0_and_2():
  """One start of 2 workers (a few seconds each): resumed from a state saved without workers,
  they give the next batches of the uninterrupted run and then the same state."""
  mesh = parallel.make_mesh(8, 1)
  source = _source()
  loader = lambda workers: pipeline.make_loader(  # noqa: E731
      source, _transform(), global_batch_size=8, seed=5, worker_count=workers)
  want = _by_record(source, _transform(), 8, 5, 6)  # 6 batches: two epochs of 3

  inline = pipeline.BatchIterator(loader(0), mesh)
  _equal(_batches(inline, 2), want[:2])
  at_2 = inline.get_state()
  _equal(_batches(inline, 3), want[2:5])
  at_5 = inline.get_state()

  workers = pipeline.BatchIterator(loader(2), mesh)
  try:
    workers.set_state(at_2)                   # before the first batch: the workers start once
    _equal(_batches(workers, 3), want[2:5])   # batches 2, 3, 4: worker 0, 1, 0
    assert workers.get_state() == at_5        # one position for every worker count
  finally:
    workers.close()
  again = pipeline.BatchIterator(loader(0), mesh)   # saved with 2 workers, resumed with none
  again.set_state(at_5)
  _equal(_batches(again, 1), want[5:])


def test_a_state_saved_by_grains_data_loader_still_resumes():
  """Checkpoints written before this loader hold grain DataLoader's state (worker_count=0)."""
  mesh = parallel.make_mesh(8, 1)
  source = _source()
  sampler = pipeline.GlobalBatchSampler(len(source), 8, shuffle=True, seed=5, num_epochs=None)
  old = grain.DataLoader(data_source=source, sampler=sampler,
                         operations=[_transform(), grain.Batch(8, drop_remainder=True)],
                         shard_options=grain.NoSharding())
  it = iter(old)
  for _ in range(4):
    next(it)
  expected = [next(it) for _ in range(2)]
  loader = pipeline.make_loader(source, _transform(), global_batch_size=8, seed=5)
  new = pipeline.BatchIterator(loader, mesh)
  fresh = iter(old)
  for _ in range(4):
    next(fresh)
  new.set_state(fresh.get_state().decode())
  _equal(_batches(new, 2), expected)
  assert new.get_state() == it.get_state().decode()


def test_states_of_another_pipeline_are_refused_by_name():
  source = _source()
  loader = pipeline.make_loader(source, _transform(), global_batch_size=8, seed=5)
  other = pipeline.make_loader(source, _transform(), global_batch_size=8, seed=6)
  state = pipeline.BatchIterator(other, parallel.make_mesh(8, 1)).get_state()
  with pytest.raises(ValueError, match=r"state has sampler .*seed=6.*this loader .*seed=5"):
    pipeline.BatchIterator(loader, parallel.make_mesh(8, 1)).set_state(state)
