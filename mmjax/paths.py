"""Paths from configs and flags (workdir, data_dir): local paths resolved, remote ones kept.

    paths.resolve("~/runs/clip")        # PosixGPath('/home/me/runs/clip')
    paths.resolve("gs://bucket/clip")   # PosixGPath('gs://bucket/clip'): orbax, TFDS, TensorBoard
    paths.resolve("file:///tmp/clip")   # PosixGPath('/tmp/clip'): a local file URI is a local path

orbax, TFDS and TensorBoard read and write through etils.epath / tf.io.gfile, which take a URI as
it is; pathlib.Path("gs://bucket/x").resolve() would turn it into the local path <cwd>/gs:/bucket/x.
epath knows gs://, s3://, az:// and hf://; orbax 0.12 writes checkpoint arrays (tensorstore) to
local paths and gs:// only (s3://: "Checkpoint path should be absolute"), so a workdir is local or
gs://, and data_dir is any of epath's (TFDS reads through tf.io.gfile: s3:// and az:// need
tensorflow-io's file systems).
"""
from __future__ import annotations

import os
import pathlib

from etils import epath

from mmjax.errors import UserError

CHECKPOINT_SCHEMES = ("gs",)
"""Remote schemes orbax writes checkpoints to (tensorstore's gcs driver; others need a mount)."""


def scheme(path) -> str | None:
  """'gs' for 'gs://bucket/x', None for a local path (or a file:// URI)."""
  head, sep, _ = os.fspath(path).partition("://")
  return head if sep and head != "file" else None


def resolve(path, what: str = "path") -> epath.Path:
  """An epath.Path: a URI (gs://, s3://, ...) unchanged, a local path (or file:// URI) with ~
  expanded and made absolute. A scheme epath does not know is a UserError naming `what`."""
  text = os.fspath(path)
  if text.startswith("file://"):
    text = text[len("file://"):]
  if scheme(text) is None:
    return epath.Path(pathlib.Path(text).expanduser().resolve())
  try:
    return epath.Path(text)
  except KeyError:
    raise UserError(f"{what} {text}: unknown scheme {scheme(text)}://; expected a local path or "
                    "a gs://, s3://, az:// or hf:// URI (etils.epath's)") from None


def check_checkpoint_dir(path, what: str = "--workdir") -> None:
  """UserError unless orbax can write checkpoints under `path` (local, or a scheme of
  CHECKPOINT_SCHEMES): found before training rather than at the first save."""
  name = scheme(path)
  if name is not None and name not in CHECKPOINT_SCHEMES:
    raise UserError(f"{what} {path}: orbax writes checkpoints to local paths and "
                    f"{', '.join(s + '://' for s in CHECKPOINT_SCHEMES)} only, not {name}://; "
                    "mount the bucket (e.g. mountpoint-s3) and pass the mount's path")
