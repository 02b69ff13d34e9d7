"""The package layout DESIGN.md promises: no import cycle between mmjax's packages, no module over
~400 lines, and train.py / eval.py never naming a task or a dataset."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MMJAX = ROOT / "mmjax"
MAX_LINES = 410


def _package(module: str) -> str | None:
  """'mmjax.evaluate.zero_shot' -> 'evaluate'; private top-level helpers (mmjax._lookup) -> None."""
  parts = module.split(".")
  if parts[0] != "mmjax" or len(parts) < 2 or parts[1].startswith("_"):
    return None
  return parts[1]


def import_arrows() -> dict[str, set[str]]:
  """{package: the other mmjax packages it imports}, from every import statement (local ones too)."""
  arrows: dict[str, set[str]] = {}
  for path in MMJAX.rglob("*.py"):
    source = _package(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if source is None:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                 if node.module == "mmjax"]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      else:
        continue
      for target in map(_package, names):
        if target not in (None, source) and ((MMJAX / target).is_dir()
                                             or (MMJAX / f"{target}.py").exists()):
          arrows.setdefault(source, set()).add(target)
  return arrows


def _cycle(arrows) -> list[str] | None:
  state: dict[str, int] = {}

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(arrows.get(node, ())):
      if state.get(nxt) == 1:
        return path + [node, nxt]
      if nxt not in state and (found := visit(nxt, path + [node])):
        return found
    state[node] = 2
    return None

  for start in sorted(arrows):
    if start not in state and (found := visit(start, [])):
      return found
  return None


def test_no_import_cycle_between_packages():
  arrows = import_arrows()
  assert "evaluate" in arrows["train"] or "train" in arrows.get("evaluate", set())
  assert _cycle(arrows) is None, f"import cycle: {' -> '.join(_cycle(arrows))}; arrows {arrows}"
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None   # the check can fail


def test_no_module_over_400_lines():
  long = {str(p.relative_to(ROOT)): n for p in MMJAX.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f"split these along their sections: {long}"


def test_train_and_eval_never_name_a_task_or_dataset():
  from mmjax import tasks  # pylint: disable=import-outside-toplevel
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  names = set(tasks.BUILTIN) | set(datasets.BUILTIN)
  for script in ("train.py", "eval.py"):
    tree = ast.parse((ROOT / script).read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    assert not strings & names, f"{script} names {strings & names}"
