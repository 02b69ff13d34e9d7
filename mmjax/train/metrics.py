"""Metric writers: metrics.jsonl (one JSON object per logged step) and TensorBoard event files."""
from __future__ import annotations

import json
import pathlib


class MetricWriter:
  """Writes scalars to workdir/metrics.jsonl and workdir/tensorboard (process 0 only)."""

  def __init__(self, workdir: pathlib.Path, enabled: bool = True):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    self._jsonl = open(pathlib.Path(workdir) / "metrics.jsonl", "a", encoding="utf-8")
    try:
      from flax.metrics import tensorboard  # pylint: disable=import-outside-toplevel
      self._tb = tensorboard.SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard event files need tensorflow
      self._tb = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Appends {'step': step, **scalars} to metrics.jsonl and each scalar to TensorBoard."""
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in scalars.items():
        self._tb.scalar(key, value, step)
      self._tb.flush()

  def close(self) -> None:
    """Closes both files (metrics.jsonl and the TensorBoard writer)."""
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
