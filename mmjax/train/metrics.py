"""Metric writers: metrics.jsonl (one JSON object per step that logged or evaluated) and
TensorBoard event files.

metrics.jsonl never holds two rows for one step: a run resumed at step s first drops the rows of
steps after s (logged by the interrupted run after its last checkpoint, which the resumed run
repeats), and writing a step that is already the last row merges into it.
"""
from __future__ import annotations

import json
import os
import pathlib


def _rows(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  rows = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:     # a line cut by a kill during a write: dropped
      continue
  return rows


def _rewrite(path: pathlib.Path, rows: list[dict]) -> None:
  """Replaces the file atomically (write a sibling, rename over)."""
  tmp = path.with_suffix(".jsonl.tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to workdir/metrics.jsonl and workdir/tensorboard (process 0 only).

  resume_step: the step the run starts from (0 for a fresh run); rows of later steps already in
  metrics.jsonl are dropped.
  """

  def __init__(self, workdir: pathlib.Path, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    self._last = None
    if not enabled:
      return
    self._path = pathlib.Path(workdir) / "metrics.jsonl"
    rows = _rows(self._path)
    kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= resume_step]
    if len(kept) != len(rows):
      _rewrite(self._path, kept)
    self._last = kept[-1] if kept else None
    self._jsonl = open(self._path, "a", encoding="utf-8")
    try:
      from flax.metrics import tensorboard  # pylint: disable=import-outside-toplevel
      self._tb = tensorboard.SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard event files need tensorflow
      self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds {'step': step, **scalars} to metrics.jsonl (merged into the last row when that is the
    same step) and each scalar to TensorBoard; nothing for empty scalars."""
    if not self._enabled or not scalars:
      return
    if self._last is not None and self._last["step"] == step:
      self._last = {**self._last, **scalars}
      self._jsonl.close()
      _rewrite(self._path, _rows(self._path)[:-1] + [self._last])
      self._jsonl = open(self._path, "a", encoding="utf-8")
    else:
      self._last = {"step": step, **scalars}
      self._jsonl.write(json.dumps(self._last) + "\n")
      self._jsonl.flush()
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.scalar(key, value, step)
      self._tb.flush()

  def close(self) -> None:
    """Closes both files (metrics.jsonl and the TensorBoard writer)."""
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
