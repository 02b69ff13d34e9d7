"""The documentation cannot go stale: it is built, executed and checked here.

  * docs/build.py (the pdoc API reference and the guides) finishes without a warning;
  * every ```python block of README.md and docs/**/*.md runs, top to bottom in one namespace per
    page (a block tagged ```python no-run is only compiled; ```python file=PATH is also written to
    PATH, for the config files the README asks you to create);
  * every `python train.py / eval.py / examples/... / bench/...` command in a bash block names a
    script that exists, flags it defines, a config file that loads and config fields that exist;
  * every relative link of those pages points at a file that exists;
  * every examples/*.py runs with --tiny;
  * every public module, class and function of mmjax has a docstring, and every loss's docstring
    has its formula, its shapes and its paper.

The docs build, the examples and the snippets of BACKGROUND_PAGES run one after another in a
second process (this file run as a script), started by this module's first test, so they overlap
with the snippet tests of this process (CI has 2 cores); each test then collects its job's result.
The whole file takes about a minute on an idle 2-core machine.
"""
from __future__ import annotations

import collections
import gzip
import importlib
import importlib.util
import inspect
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md",
         *sorted((ROOT / "docs" / "guides").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)

# Pages whose snippets the background process runs (it would otherwise finish long before the
# in-process snippet tests: this evens out the two cores).
BACKGROUND_PAGES = {"align_quantify.md"}

# Public names allowed without a docstring (none now; add one only with a reason).
DOCSTRING_EXEMPT: set[str] = set()


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def _blocks(page: pathlib.Path) -> list[tuple[str, str, int]]:
  """(info string, code, line number) of every fenced block of a Markdown page."""
  text = page.read_text(encoding="utf-8")
  return [(m.group(1).strip(), m.group(2), text[:m.start()].count("\n") + 1)
          for m in FENCE.finditer(text)]


# --- background: the docs build and the examples, in one other process ------------------------

def run_background(out: pathlib.Path, data_dir: pathlib.Path) -> None:
  """Builds the docs, then runs every example with --tiny, in this one process (one import of jax
  and tensorflow for all of them). Each job's output goes to out/NAME.log and its exit status to
  out/NAME.status when it ends."""
  import contextlib  # pylint: disable=import-outside-toplevel
  import runpy  # pylint: disable=import-outside-toplevel
  import traceback  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(ROOT))
  os.chdir(ROOT)
  jobs = {"docs/build.py": ["docs/build.py", "--out", str(out / "site")]}
  for example in EXAMPLES:
    argv = [_rel(example), "--tiny"]
    if '"--data_dir"' in example.read_text():
      argv += ["--data_dir", str(data_dir)]
    jobs[_rel(example)] = argv
  for page in PAGES:
    if page.name in BACKGROUND_PAGES:
      jobs[_rel(page)] = [_rel(page)]
  for name, argv in jobs.items():
    stem = name.replace("/", "_")
    status = 0
    with open(out / f"{stem}.log", "w") as log, contextlib.redirect_stdout(log), \
        contextlib.redirect_stderr(log):
      sys.argv = argv
      try:
        if name.endswith(".md"):
          workdir = out / f"{stem}.files"
          workdir.mkdir()
          os.chdir(workdir)
          run_snippets(ROOT / name, workdir)
          os.chdir(ROOT)
        else:
          runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
      except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        status = 1
    (out / f"{stem}.status").write_text(str(status))


@pytest.fixture(scope="module")
def background(tmp_path_factory):
  """The background process, started when the first test of this module runs, so that it overlaps
  with the in-process snippet tests (2 cores); it inherits conftest.py's 8 simulated devices."""
  out = tmp_path_factory.mktemp("docs_runs")
  data_dir = tmp_path_factory.mktemp("example_data")
  env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
  log = open(out / "runner.log", "w")
  proc = subprocess.Popen([sys.executable, __file__, str(out), str(data_dir)], cwd=ROOT, env=env,
                          stdout=log, stderr=subprocess.STDOUT)
  yield {"proc": proc, "out": out, "site": out / "site"}
  if proc.poll() is None:
    proc.kill()
  proc.wait()
  log.close()


def _finish(background, name: str, timeout: float = 600) -> str:
  """Waits for job `name` of the background process; its output, asserting it succeeded."""
  stem = name.replace("/", "_")
  status, proc = background["out"] / f"{stem}.status", background["proc"]
  deadline = time.monotonic() + timeout
  while not status.exists() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
  log = background["out"] / f"{stem}.log"
  output = log.read_text(errors="replace") if log.exists() else ""
  if not status.exists():
    runner = (background["out"] / "runner.log").read_text(errors="replace")
    raise AssertionError(f"{name} did not finish (background exit {proc.poll()}):\n"
                         f"{output[-3000:]}\n{runner[-3000:]}")
  assert status.read_text() == "0", f"{name} failed:\n{output[-5000:]}"
  return output


def test_start_background_runs(background):
  """Requests the fixture first, so the background process overlaps with the snippet tests."""
  assert background["proc"].poll() in (None, 0)


# --- snippets ------------------------------------------------------------------------------------

@pytest.fixture
def readme_stand_ins(tmp_path, monkeypatch):
  """What the README's snippets expect a reader to have: a Hugging Face CLIP folder
  "clip-vit-base-patch32" (here a tiny random one), CLIP's BPE vocabulary (a tiny one, through
  $MMJAX_BPE_VOCAB) and a photo "cat.jpg" (a drawn one)."""
  spec = importlib.util.spec_from_file_location(
      "zero_shot_example", ROOT / "examples" / "zero_shot_imported_weights.py")
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  bpe = example.write_tiny_vocabulary(tmp_path)
  merges = len(gzip.open(bpe, "rt").read().strip().split("\n")) - 1   # lines after the header
  folder = example.write_tiny_checkpoint(tmp_path, vocab_size=512 + merges + 2,
                                         use_transformers=False)   # no torch import needed
  folder.rename(tmp_path / "clip-vit-base-patch32")
  from PIL import Image  # pylint: disable=import-outside-toplevel
  photo = example.draw("red", "circle", np.random.default_rng(0))
  Image.fromarray(photo).save(tmp_path / "cat.jpg")
  monkeypatch.setenv("MMJAX_BPE_VOCAB", str(bpe))


@pytest.mark.parametrize("page", sorted(    # the background's pages last: they wait for it
    [p for p in PAGES if any(i.startswith("python") for i, _, _ in _blocks(p))],
    key=lambda p: p.name in BACKGROUND_PAGES), ids=_rel)
def test_python_snippets_run(page, tmp_path, monkeypatch, request):
  if page.name in BACKGROUND_PAGES:   # run by the background process, to balance the two cores
    _finish(request.getfixturevalue("background"), _rel(page))
    return
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(ROOT))
  if page.name == "README.md":
    request.getfixturevalue("readme_stand_ins")
  run_snippets(page, tmp_path)


def run_snippets(page: pathlib.Path, workdir: pathlib.Path) -> None:
  """Executes the ```python blocks of a page in order, in one namespace, in the current folder
  (workdir receives the ```python file=PATH blocks)."""
  namespace = {"__name__": f"snippets_of_{page.stem}"}
  for info, code, line in _blocks(page):
    words = info.split()
    if not words or words[0] != "python":
      continue
    where = f"{_rel(page)}:{line}"
    compiled = compile(code, where, "exec")
    target = next((w[len("file="):] for w in words[1:] if w.startswith("file=")), None)
    if target:
      (workdir / target).parent.mkdir(parents=True, exist_ok=True)
      (workdir / target).write_text(code)
    if "no-run" in words[1:]:
      continue
    try:
      exec(compiled, namespace)  # pylint: disable=exec-used
    except Exception as e:
      raise AssertionError(f"the snippet at {where} failed: {type(e).__name__}: {e}") from e


# --- commands ------------------------------------------------------------------------------------

SCRIPT = re.compile(r"(?:\S*/)?python3?\s+((?:train|eval)\.py|(?:examples|bench|docs)/[\w/]+\.py)"
                    r"([^\"'&;|\n]*)")
FLAGS = {"train.py": {"config", "workdir", "coordinator_address", "num_processes", "process_id",
                      "restart_data", "traceback"},
         "eval.py": {"config", "workdir", "checkpoint", "weights", "tfds", "tfds_data_dir",
                     "traceback"}}


def _load_config(path: pathlib.Path, variant: str):
  spec = importlib.util.spec_from_file_location(f"doc_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _commands():
  """(page, line, script, argument string) of every command in a bash block of the pages."""
  found = []
  for page in PAGES:
    for info, code, line in _blocks(page):
      if info.split()[:1] != ["bash"]:
        continue
      for offset, text in enumerate(code.split("\n")):
        for m in SCRIPT.finditer(text):
          found.append((page, line + 1 + offset, m.group(1), m.group(2)))
  return found


def test_commands_name_real_scripts_flags_and_config_fields(monkeypatch, tmp_path):
  monkeypatch.syspath_prepend(str(ROOT))
  declared = {}   # config files the pages ask the reader to create: ```python file=PATH
  for page in PAGES:
    for info, code, _ in _blocks(page):
      for word in info.split()[1:]:
        if word.startswith("file="):
          declared[word[len("file="):]] = code
  commands = _commands()
  assert len(commands) > 20, "the command extraction found too few commands"
  problems = []
  for page, line, script, args in commands:
    where = f"{_rel(page)}:{line} {script}"
    path = ROOT / script
    if not path.exists():
      problems.append(f"{where}: no such script")
      continue
    tokens = [t.strip("[]") for t in args.split()]
    flags = [t[2:].split("=")[0] for t in tokens if t.startswith("--")]
    known = FLAGS.get(script)
    for flag in flags:
      if flag.startswith("config.") and known:
        continue
      if known is not None and flag not in known:
        problems.append(f"{where}: unknown flag --{flag}")
      elif known is None and f'"--{flag}"' not in path.read_text():
        problems.append(f"{where}: {script} defines no --{flag}")
    if "config" not in flags:
      continue
    i = next(i for i, t in enumerate(tokens) if t.split("=")[0] == "--config")
    spec = tokens[i].split("=", 1)[1] if "=" in tokens[i] else tokens[i + 1]
    file, _, variant = spec.partition(":")
    if re.search(r"[A-Z]{3,}", file):          # a placeholder such as configs/NAME.py
      continue
    config_path = ROOT / file
    if file in declared:
      config_path = tmp_path / pathlib.Path(file).name
      config_path.write_text(declared[file])
    elif not config_path.exists():
      problems.append(f"{where}: config {file} does not exist")
      continue
    try:
      config = _load_config(config_path, variant)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"{where}: config {spec} does not load: {type(e).__name__}: {e}")
      continue
    for t in tokens:
      if t.startswith("--config."):
        node = config
        for part in t[len("--config."):].split("=")[0].split("."):
          if part not in node:
            problems.append(f"{where}: the config has no field {t.split('=')[0][2:]}")
            break
          node = node[part]
  assert not problems, "\n".join(problems)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_point_at_files():
  problems = []
  for page in PAGES + EXAMPLES:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
      if re.match(r"^[a-z]+:|^#", target):
        continue
      if not (page.parent / target.partition("#")[0]).exists():
        problems.append(f"{_rel(page)}: {target}")
  assert not problems, "broken links:\n" + "\n".join(problems)


# --- the docs build and the examples --------------------------------------------------------------

def test_docs_build_without_warnings(background):
  output = _finish(background, "docs/build.py")
  assert "warning" not in output.lower(), output
  site = background["site"]
  for page in ("index.html", "guides/losses.html", "guides/launch_tpu_pod.html", "api/mmjax.html",
               "api/mmjax/losses/contrastive.html", "api/mmjax/models/fusion.html"):
    assert (site / page).is_file(), f"{page} missing from the built site"
  assert "clip_loss" in (site / "api/mmjax/losses.html").read_text()


@pytest.mark.parametrize("example", [_rel(e) for e in EXAMPLES])
def test_example_runs(background, example):
  _finish(background, example)


# --- docstrings ----------------------------------------------------------------------------------

def _public_modules():
  import mmjax  # pylint: disable=import-outside-toplevel
  names = ["mmjax"] + [m.name for m in pkgutil.walk_packages(mmjax.__path__, "mmjax.")]
  return [importlib.import_module(n) for n in names
          if not any(p.startswith("_") for p in n.split("."))]


def _own_doc(obj) -> str:
  doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
  doc = (doc or "").strip()
  if inspect.isclass(obj) and hasattr(obj, "_fields") and doc.startswith(f"{obj.__name__}("):
    return ""   # the docstring namedtuple writes for itself
  return doc


def test_public_api_has_docstrings():
  missing = []
  for module in _public_modules():
    if not (module.__doc__ or "").strip():
      missing.append(module.__name__)
    for name, obj in vars(module).items():
      if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
        continue
      if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        continue
      qualname = f"{module.__name__}.{name}"
      if not _own_doc(obj) and qualname not in DOCSTRING_EXEMPT:
        missing.append(qualname)
      if inspect.isclass(obj):
        for attr, member in vars(obj).items():
          if attr.startswith("_") or attr == "setup":   # setup: Flax's construction hook
            continue
          func = member.fget if isinstance(member, property) else member
          if inspect.isfunction(func) and not (func.__doc__ or "").strip() and (
              f"{qualname}.{attr}" not in DOCSTRING_EXEMPT):
            missing.append(f"{qualname}.{attr}")
  assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_loss_docstrings_have_formula_shapes_and_paper():
  from mmjax import losses  # pylint: disable=import-outside-toplevel
  problems = collections.defaultdict(list)
  for name in losses.__all__:
    doc = getattr(losses, name).__doc__ or ""
    if not re.search(r"\b(19|20)\d\d\b", doc):
      problems[name].append("no paper (author and year)")
    if not re.search(r"\w\s*=\s*\S", doc):
      problems[name].append("no formula")
    if not re.search(r"\((?:[A-Za-z]\w*|\.\.\.), ?[A-Za-z]\w*\)", doc):
      problems[name].append("no shapes such as (B, D)")
  assert not problems, dict(problems)


if __name__ == "__main__":   # the background process of the `background` fixture
  run_background(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
