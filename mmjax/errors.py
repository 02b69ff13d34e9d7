"""Errors a user can act on.

UserError is raised for what the user gave us (a config field, a path, a weights file, a name)
and says which value is wrong, where it came from and what was expected. train.py and eval.py print
its message and exit with status 2, without a traceback (--traceback shows one); any other
exception is a bug and keeps its traceback. It subclasses ValueError, so code that catches
ValueError keeps working.
"""
from __future__ import annotations

import sys
import traceback


class UserError(ValueError):
  """A mistake in the user's input, with a message that names the value and what was expected."""


def report(program: str, error: BaseException, show_traceback: bool) -> None:
  """Prints `program: error: message` to stderr (after the traceback with show_traceback) and
  exits 2."""
  if show_traceback:
    traceback.print_exception(error)
  print(f"{program}: error: {error}", file=sys.stderr, flush=True)
  sys.exit(2)


def one_line(error: BaseException, limit: int = 500) -> str:
  """An exception's message on one line: its lines stripped and joined; for a message that holds
  a traceback (config file errors), the exception line that ends it."""
  text = str(error).strip("'\"").replace("\\n", "\n").replace("\\'", "'")   # a KeyError's repr
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if any(line.startswith("Traceback") for line in lines):
    lines = [lines[0], lines[-1]]
  return " ".join(lines)[:limit]


def flags_parser(program: str):
  """An absl `app.run(..., flags_parser=...)` that turns a bad command line (an unknown flag, a
  config file that fails to load, e.g. an unknown variant, an override of a field the config does
  not have) into a short message and exit 2."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except  # any failure here is the command line's
      prefix = "" if isinstance(e, flags.Error) else "command line: "
      report(program, UserError(prefix + one_line(e)), "--traceback" in argv)
  return parse


def config_value(flag):
  """The value of an ml_collections config flag, loaded; a config file that failed to load or an
  override that does not apply is a UserError."""
  try:
    config = flag.value
    config.get("task")             # a config that failed to load raises on first access
    return config
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"--config: {one_line(e)}") from e
