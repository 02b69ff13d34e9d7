"""Damaged checkpoints: a run resumes from the newest step that restores completely, keeps the
damaged one renamed out of orbax's way, and ends with the params of a run never damaged."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

import train
from configs import shapes_clip
from mmjax.errors import UserError
from mmjax.train import checkpoint

# a restore that fails must be quiet: no "Event loop is closed" from the reads it abandoned
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def _config(data_dir):
  config = shapes_clip.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict({"total_steps": 9, "checkpoint_every": 3,
                                     "keep_checkpoints": 3})
  config.evals = {}
  return config


def _restore(workdir, **kwargs):
  """checkpoint.restore with no target: the state as saved (a dict), on the saving run's mesh."""
  return checkpoint.restore(checkpoint.manager(workdir, keep=10, every=1), None, **kwargs)


@pytest.fixture(scope="module")
def runs(tfds_dir, tmp_path_factory):
  """One undamaged run of 9 steps (the reference params) and its workdir as it was after step 6
  (checkpoints 3 and 6; keep_checkpoints=3 keeps step 3): what each test damages a copy of. The
  same config throughout, so the learning-rate schedule of the resumed steps is the same."""
  base = tmp_path_factory.mktemp("runs")
  train.train_and_evaluate(_config(tfds_dir), base / "straight")
  state, _, step = _restore(base / "straight")
  assert step == 9
  shutil.copytree(base / "straight", base / "at6")
  shutil.rmtree(base / "at6" / "checkpoints" / "9")
  assert sorted(os.listdir(base / "at6" / "checkpoints")) == ["3", "6"]
  return {"at6": base / "at6", "params": jax.tree.map(np.asarray, state["params"]),
          "data_dir": tfds_dir}


def _copy_at6(runs, tmp_path):
  shutil.copytree(runs["at6"], tmp_path / "w")
  return tmp_path / "w", tmp_path / "w" / "checkpoints"


def _array_files(step):
  """The files of the state's OCDBT databases (its array data and their index): which of them a
  restore reads differs from one save to the next, so each damage hits all of them."""
  return sorted((step / "state").glob("**/d/*"))


def _missing_item(step):
  shutil.rmtree(step / "state")


def _truncated_arrays(step):
  for f in _array_files(step):
    os.truncate(f, f.stat().st_size // 2)


def _flipped_bytes(step):
  for f in _array_files(step):
    raw = bytearray(f.read_bytes())
    raw[100::97] = bytes(b ^ 0xFF for b in raw[100::97])
    f.write_bytes(bytes(raw))


def _empty_folder(step):
  shutil.rmtree(step)
  step.mkdir()


def _junk_metadata(step):
  (step / "state" / "_METADATA").write_text("{not json")


def _junk_iterator_state(step):
  (step / "data" / "metadata").write_text("{not json")


DAMAGE = {  # how to damage a step -> the item named in the skip line and its exception type
    "missing item": (_missing_item, "state: FileNotFoundError"),
    "truncated array file": (_truncated_arrays, "state: ValueError"),
    "flipped bytes": (_flipped_bytes, "state: ValueError"),
    "empty step folder": (_empty_folder, "data: KeyError"),
    "junk metadata": (_junk_metadata, "state: JSONDecodeError"),
    "junk iterator state": (_junk_iterator_state, "data: JSONDecodeError"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_latest_step_is_skipped_kept_and_the_run_ends_as_if_undamaged(
    kind, runs, tmp_path, capsys):
  workdir, ckpts = _copy_at6(runs, tmp_path)
  damage, reason = DAMAGE[kind]
  damage(ckpts / "6")
  capsys.readouterr()
  train.train_and_evaluate(_config(runs["data_dir"]), workdir)
  out, err = capsys.readouterr()
  skip = f"checkpoint step 6 in {ckpts} is damaged ({reason}: "
  assert skip in out and f"): skipped; kept as {ckpts / '6.damaged'}\n" in out, out
  assert f"resumed from {ckpts} at step 3" in out, out
  assert "Event loop is closed" not in err and "Traceback" not in err, err
  assert sorted(os.listdir(ckpts)) == ["3", "6", "6.damaged", "9"]   # 3 kept: keep_checkpoints=3
  assert (ckpts / "6.damaged").is_dir()
  state, _, step = _restore(workdir)
  assert step == 9
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(runs["params"]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_an_empty_newest_folder_is_skipped_and_a_taken_name_gets_a_number(runs, tmp_path):
  """An empty `9` (a folder orbax lists as a step) is skipped for 6; `9.damaged` from an earlier
  resume is kept, so the new one is `9.damaged-2`."""
  workdir, ckpts = _copy_at6(runs, tmp_path)
  (ckpts / "9").mkdir()
  (ckpts / "9.damaged").mkdir()
  lines = []
  state, data_state, step = _restore(workdir, log=lines.append)
  assert step == 6 and int(state["step"]) == 6 and json.loads(data_state)
  assert lines == [f"checkpoint step 9 in {ckpts} is damaged (data: KeyError: Item \"data\" was "
                   f"not found in the checkpoint. Available items: []): skipped; kept as "
                   f"{ckpts / '9.damaged-2'}"], lines
  assert sorted(os.listdir(ckpts)) == ["3", "6", "9.damaged", "9.damaged-2"]


def test_every_step_damaged_is_a_user_error_naming_each_and_renames_nothing(runs, tmp_path):
  workdir, ckpts = _copy_at6(runs, tmp_path)
  _missing_item(ckpts / "6")
  _junk_iterator_state(ckpts / "3")
  with pytest.raises(UserError) as info:
    _restore(workdir, log=pytest.fail)
  message = str(info.value)
  assert f"every checkpoint in {ckpts} is damaged" in message, message
  assert "step 6 (state: FileNotFoundError: " in message, message
  assert "step 3 (data: JSONDecodeError: " in message, message
  assert "another --workdir" in message and f"move {ckpts} away" in message, message
  assert sorted(os.listdir(ckpts)) == ["3", "6"]


def test_a_damaged_step_asked_for_by_number_is_a_user_error(runs, tmp_path):
  workdir, ckpts = _copy_at6(runs, tmp_path)
  _junk_metadata(ckpts / "6")
  with pytest.raises(UserError, match=r"checkpoint step 6 in .* is damaged \(state: "
                                      r"JSONDecodeError: .*\); choose another of its steps \[3\]"):
    _restore(workdir, step=6, log=pytest.fail)
  with pytest.raises(UserError, match=r"no checkpoint step 5 in .*: it holds steps \[3, 6\]"):
    _restore(workdir, step=5)
  assert sorted(os.listdir(ckpts)) == ["3", "6"]
  assert _restore(workdir, step=3)[2] == 3


def test_a_user_error_from_check_propagates_and_renames_nothing(runs, tmp_path):
  workdir, ckpts = _copy_at6(runs, tmp_path)
  _junk_metadata(ckpts / "6")   # skipped before check sees it; check refuses step 3
  error, seen = UserError("step 3 does not fit the config"), []

  def check(step):
    seen.append(step)
    raise error

  with pytest.raises(UserError) as info:
    _restore(workdir, check=check, log=pytest.fail)
  assert info.value is error and seen == [3]
  assert sorted(os.listdir(ckpts)) == ["3", "6"]


def test_without_data_a_damaged_iterator_state_does_not_matter(runs, tmp_path):
  workdir, ckpts = _copy_at6(runs, tmp_path)
  _junk_iterator_state(ckpts / "6")
  state, data_state, step = _restore(workdir, data=False, log=pytest.fail)
  assert step == 6 and int(state["step"]) == 6 and data_state is None
  assert sorted(os.listdir(ckpts)) == ["3", "6"]
