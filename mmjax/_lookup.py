"""Look-up by name: a built-in name or a user's dotted module path, for tasks, datasets and
evaluators (big_vision's import-by-name pattern), with errors that list the built-in names."""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from mmjax.errors import UserError


def resolve(name, builtin: Mapping[str, str], attribute: str | None, kind: str,
            expected: type | None):
  """The object a name stands for.

  builtin maps built-in names to module paths. Another name must be a dotted path: with attribute
  set, 'pkg.module' and the module's `attribute` (e.g. TASK); with attribute None,
  'pkg.module.object'. The object must be an instance of `expected` (None: any callable).
  Raises UserError (a ValueError) naming the bad name and the built-in ones.
  """
  names = sorted(builtin)
  if not isinstance(name, str) or not name or (name not in builtin and "." not in name):
    raise UserError(f"unknown {kind} {name!r}; expected one of {names} or a dotted path "
                     f"({'my_pkg.my_module' if attribute else 'my_pkg.my_module.my_object'})")
  path = builtin.get(name, name)
  module_path, obj_name = (path, attribute) if attribute else path.rsplit(".", 1)
  try:
    module = importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    if name in builtin or not (e.name and module_path.startswith(e.name)):
      raise          # a module it imports is missing: not a naming mistake
    raise UserError(f"{kind} {name!r}: no module {module_path!r} can be imported ({e}); "
                     f"built-in: {names}") from e
  obj = getattr(module, obj_name, None)
  ok = callable(obj) if expected is None else isinstance(obj, expected)
  if not ok:
    what = "callable" if expected is None else f"of type {expected.__name__}"
    raise UserError(f"{kind} {name!r}: module {module_path} has no {obj_name} {what} (found "
                     f"{type(obj).__name__}); built-in: {names}")
  return obj
