"""Metric writers: metrics.jsonl (one JSON object per step that logged or evaluated) and
TensorBoard event files.

metrics.jsonl never holds two rows for one step: a run resumed at step s first drops the rows of
steps after s (logged by the interrupted run after its last checkpoint, which the resumed run
repeats), and writing a step that is already the last row merges into it.
"""
from __future__ import annotations

import json

from mmjax import paths


def _rows(path) -> tuple[list[dict], int]:
  """(the rows of metrics.jsonl, how many of its lines were not JSON)."""
  if not path.exists():
    return [], 0
  rows, cut = [], 0
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:     # a line cut by a kill during an append: dropped
      cut += 1
  return rows, cut


def _rewrite(path, rows: list[dict]) -> None:
  """Replaces the file whole (write a sibling, rename over: atomic on a local disk). Object stores
  such as gs:// have no append, so there every write is a rewrite; a local file is appended to."""
  tmp = path.with_suffix(".jsonl.tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  tmp.replace(path)


class MetricWriter:
  """Writes scalars to workdir/metrics.jsonl and workdir/tensorboard (process 0 only).

  workdir: a local path or a URI (gs://, ...: mmjax.paths); resume_step: the step the run starts
  from (0 for a fresh run); rows of later steps already in metrics.jsonl are dropped.
  """

  def __init__(self, workdir, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    self._tb = None
    self._rows = []
    if not enabled:
      return
    workdir = paths.resolve(workdir, "workdir")
    self._path = workdir / "metrics.jsonl"
    rows, cut = _rows(self._path)
    self._rows = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= resume_step]
    if cut or len(self._rows) != len(rows):  # appends must start on a clean line
      _rewrite(self._path, self._rows)
    try:
      from flax.metrics import tensorboard  # pylint: disable=import-outside-toplevel
      self._tb = tensorboard.SummaryWriter(str(workdir / "tensorboard"))  # tf.io.gfile: URIs too
    except ImportError:  # TensorBoard event files need tensorflow
      self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds {'step': step, **scalars} to metrics.jsonl (merged into the last row when that is the
    same step) and each scalar to TensorBoard; nothing for empty scalars."""
    if not self._enabled or not scalars:
      return
    if self._rows and self._rows[-1]["step"] == step:
      self._rows[-1] = {**self._rows[-1], **scalars}
      _rewrite(self._path, self._rows)
    elif paths.scheme(self._path) is None:  # a local file: one line appended (a line cut by a
      self._rows.append({"step": step, **scalars})  # kill is dropped when a resume reads it)
      with open(self._path, "a", encoding="utf-8") as f:
        f.write(json.dumps(self._rows[-1]) + "\n")
    else:
      self._rows.append({"step": step, **scalars})
      _rewrite(self._path, self._rows)
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.scalar(key, value, step)
      self._tb.flush()

  def close(self) -> None:
    """Closes the TensorBoard writer (metrics.jsonl is complete after every write)."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
