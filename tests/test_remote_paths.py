"""Remote paths (issue 16, item 5): workdir and data_dir go to orbax, TFDS and TensorBoard as URIs
(gs://, ...) instead of being resolved as local paths; a local path, or a file:// URI, is resolved.

No object store is reachable from the tests, and etils.epath 1.15 knows no memory:// scheme (it
raises KeyError for it and for file://): the end-to-end run uses a file:// URI workdir, which goes
through the same code (mmjax.paths.resolve, then epath only) as a gs:// one."""
import contextlib
import io
import json
import pathlib
import types

import pytest
from etils import epath

import eval as eval_py
import train
from configs import shapes_clip
from mmjax import parallel, paths
from mmjax.errors import UserError
from mmjax.evaluate import load
from mmjax.train import checkpoint


def test_uris_are_kept_and_local_paths_resolved(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  gs = paths.resolve("gs://bucket/runs/clip")       # no I/O: nothing is reachable here
  assert isinstance(gs, epath.Path) and str(gs) == "gs://bucket/runs/clip"
  assert str(gs / "checkpoints") == "gs://bucket/runs/clip/checkpoints"
  assert str(paths.resolve("s3://bucket/data")) == "s3://bucket/data"
  assert paths.resolve("~/run") == epath.Path(tmp_path / "run")
  assert paths.resolve("run/../other") == epath.Path(tmp_path / "other")
  assert paths.resolve(f"file://{tmp_path}/a/../b") == epath.Path(tmp_path / "b")
  assert paths.scheme("gs://b/x") == "gs" and paths.scheme("/tmp/x") is None
  with pytest.raises(UserError, match=r"--workdir memory://run: unknown scheme memory://; "
                                      r"expected a local path or a gs://, s3://"):
    paths.resolve("memory://run", "--workdir")


def test_a_workdir_orbax_cannot_write_is_refused_before_any_work():
  with pytest.raises(UserError, match=r"--workdir s3://bucket/run: orbax writes checkpoints to "
                                      r"local paths and gs:// only, not s3://; mount"):
    train._check_workdir("s3://bucket/run")   # pylint: disable=protected-access
  with pytest.raises(UserError, match=r"workdir s3://bucket/run: orbax writes checkpoints"):
    checkpoint.manager("s3://bucket/run", keep=1, every=1)


@pytest.fixture(scope="module")
def run_uri(tfds_dir, tmp_path_factory):
  """(config, workdir): a tiny run under a file:// workdir and data_dir, to step 4, then resumed
  to step 6 with 2 grain workers (issue 16 item 2 through train.py)."""
  local = tmp_path_factory.mktemp("uri") / "run"
  config = shapes_clip.get_config("tiny")
  config.dataset.data_dir = f"file://{tfds_dir}"
  config.evals = {}
  config.update(total_steps=4, checkpoint_every=2, log_every=1)
  train.train_and_evaluate(config, f"file://{local}")
  config.update(total_steps=6, worker_count=2)
  with contextlib.redirect_stdout(io.StringIO()) as out:
    train.train_and_evaluate(config, f"file://{local}")
  assert f"resumed from {local / 'checkpoints'} at step 4" in out.getvalue()
  return config, local


def test_a_uri_workdir_trains_resumes_and_restores(run_uri):
  """Checkpoints, metrics.jsonl and TensorBoard under a file:// workdir and a file:// data_dir."""
  config, local = run_uri
  assert sorted(p.name for p in (local / "checkpoints").iterdir()) == ["4", "6"]
  rows = [json.loads(r) for r in (local / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert any(pathlib.Path(local / "tensorboard").iterdir())
  _, _, step = load.restore_params(config, f"file://{local}", parallel.make_mesh(8, 1))
  assert step == 6


def test_eval_writes_its_report_through_a_local_folder_to_a_uri_workdir(run_uri, monkeypatch,
                                                                         tmp_path):
  """matplotlib writes local files: for a URI workdir eval.py writes the report in a temporary
  folder and copies it over (eval.py's view of the workdir's scheme is "gs" here)."""
  config, workdir = run_uri
  config = config.copy_and_resolve_references()
  config.worker_count = 0             # the evaluations read in this process
  seen = []
  fake = types.SimpleNamespace(resolve=paths.resolve,
                               scheme=lambda p: seen.append(str(p)) or "gs")
  monkeypatch.setattr(eval_py, "paths", fake)
  monkeypatch.chdir(tmp_path)
  results = eval_py.evaluate_workdir(config, f"file://{workdir}", quiet=True)
  assert seen == [str(workdir)]
  for name in results["files"]:
    assert (workdir / name).is_file(), name
  assert "report.md" in results["files"] and "training_curves.png" in results["files"]
  assert not list(tmp_path.iterdir())   # nothing written where a mangled gs:/ path would land
