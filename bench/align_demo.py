"""Demonstrations of mmjax.align and mmjax.quantify; each prints a table (results: BENCHMARKS.md).

    python bench/align_demo.py --demo continuous     # DTW / soft-DTW path error, segmentation
    python bench/align_demo.py --demo words          # word-to-patch alignment of a CLIP TwoTower
    python bench/align_demo.py --demo words --workdir /tmp/shapes_clip   # ... of a train.py run
    python bench/align_demo.py --demo emap           # EMAP: additive vs tensor fusion
    python bench/align_demo.py                       # all three

continuous  Pairs of time-warped copies of a smooth random signal (known warps): the error of the
            DTW path and of the soft-DTW expected alignment against the true correspondence, next to
            the identity (linear) alignment. Then a piecewise-constant "state" signal: change points
            against the true boundaries, k-means tokens against the true states, and the frames
            aligned by DTW to the sequence of state prototypes (discrete elements).
words       Caption words ("red", "triangle") aligned to image patches of a CLIP-trained TwoTower,
            on fresh two-object shapes images with known object positions, three ways: cosine of
            the word's embedding with per-patch embeddings (last-layer tokens, or MaskCLIP's value
            readout), and occlusion (the drop in image-word similarity when a patch is hidden). A
            hit is a top patch on the named object; "nearer" asks whether the top patch is nearer
            the named object than the other one. Without --workdir a tiny TwoTower is trained here.
emap        Shapes tasks that need both modalities: "match" (does the caption's colour word match
            the object's colour? an interaction: additive models are at chance) and "compose" (the
            class is the object's colour and the caption's shape word, 48 classes: additive models
            suffice). An additive (late) fusion and a tensor fusion (TFN) model are trained on
            each; their accuracy, the EMAP accuracy (Hessel & Lee 2020) and the modality
            contributions (one modality zeroed, or taken from another example).
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _common as common  # noqa: E402  (bench/ is on sys.path when this script runs)

from mmjax import align, quantify  # noqa: E402
from mmjax.data import shapes, tokenizers  # noqa: E402
from mmjax.data.pipeline import normalize  # noqa: E402
from mmjax.losses import clip_loss  # noqa: E402
from mmjax.models import LateFusion, MlpEncoder, TensorFusion, two_tower  # noqa: E402


def table(title: str, header: list[str], rows: list[list]) -> None:
  """A titled markdown table, floats to 3 decimals."""
  print(f"\n{title}")
  common.print_header(header)
  for r in rows:
    common.print_row([common.fmt(v, 3) if isinstance(v, float) else v for v in r])


# ----------------------------------------------------------------------------------- continuous

def _warp(rng, t):
  """A random monotone warp of [0, 1] onto itself: (t + a sin(2 pi t) / (2 pi)) ** p."""
  a, p = rng.uniform(-0.8, 0.8), rng.uniform(0.7, 1.4)
  return (t + a * np.sin(2 * np.pi * t) / (2 * np.pi)) ** p


def _smooth_signal(rng, d=3, terms=4):
  freq, phase, amp = (rng.uniform(1, 5, (terms, d)), rng.uniform(0, 2 * np.pi, (terms, d)),
                      rng.normal(size=(terms, d)))
  return lambda t: np.sum(amp * np.sin(2 * np.pi * freq * t[:, None, None] + phase), axis=1)


def warped_pairs(seed: int, count: int, n: int, m: int, noise: float):
  """count pairs (x (n, d), y (m, d)) of warped copies of one signal each, and the true j*(i)."""
  rng = np.random.default_rng(seed)
  xs, ys, truth = [], [], []
  grid = np.linspace(0, 1, 4001)
  for _ in range(count):
    signal = _smooth_signal(rng)
    w1, w2 = _warp(rng, grid), _warp(rng, grid)
    ti, tj = np.linspace(0, 1, n), np.linspace(0, 1, m)
    xs.append(signal(np.interp(ti, grid, w1)) + noise * rng.normal(size=(n, 3)))
    ys.append(signal(np.interp(tj, grid, w2)) + noise * rng.normal(size=(m, 3)))
    # x_i shows the signal at w1(t_i); y shows it at w2(t'), so t' = w2^{-1}(w1(t_i))
    truth.append((m - 1) * np.interp(np.interp(ti, grid, w1), w2, grid))
  return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), np.stack(truth)


def state_signal(seed: int, states: int = 6, length: int = 240, noise: float = 0.3):
  """A piecewise-constant signal visiting `states` prototypes in a random order and durations."""
  rng = np.random.default_rng(seed)
  protos = rng.normal(size=(states, 4)) * 1.5
  order = rng.permutation(states)
  cuts = np.sort(rng.choice(np.arange(10, length - 10), states - 1, replace=False))
  while np.min(np.diff(np.concatenate([[0], cuts, [length]]))) < 12:   # segments >= 12 frames
    cuts = np.sort(rng.choice(np.arange(10, length - 10), states - 1, replace=False))
  seg = np.searchsorted(cuts, np.arange(length), side="right")
  labels = order[seg]
  x = protos[labels] + noise * rng.normal(size=(length, 4))
  return x.astype(np.float32), labels, cuts, protos[order].astype(np.float32)


def demo_continuous(args) -> dict:
  n, m = 120, 150
  x, y, truth = warped_pairs(args.seed, args.pairs, n, m, noise=args.noise)
  cost = align.squared_distances(x, y)                                # (P, n, m)
  start = time.perf_counter()
  path = jax.jit(align.dtw)(cost).path
  dtw_curve = np.asarray(align.warping_curve(path))
  elapsed = time.perf_counter() - start
  soft_curve = np.asarray(align.warping_curve(jax.jit(align.soft_dtw_alignment)(cost, 0.1)))
  linear = np.broadcast_to(np.arange(n) * (m - 1) / (n - 1), truth.shape)
  err = lambda c: float(np.mean(np.abs(c - truth)))  # noqa: E731
  rows = [["identity (linear) alignment", err(linear), err(linear) / (m - 1)],
          ["DTW path", err(dtw_curve), err(dtw_curve) / (m - 1)],
          ["soft-DTW expected alignment, gamma 0.1", err(soft_curve), err(soft_curve) / (m - 1)]]
  table(f"Continuous alignment: {args.pairs} pairs of warped signals, n={n}, m={m}, d=3, noise "
        f"sd {args.noise} "
        f"(batched DTW incl. compile: {elapsed:.2f} s)",
        ["method", "mean abs(j(i) - j*(i)), frames", "as a fraction of m"], rows)

  signal, states, cuts, protos = state_signal(args.seed, noise=args.state_noise)
  k = len(protos)
  seg = np.asarray(align.change_points(signal, num_segments=k))
  found = np.flatnonzero(np.diff(seg)) + 1
  tokens = align.kmeans(signal, k, key=jax.random.key(args.seed))
  purity = np.mean([np.bincount(states[tokens.labels == c]).max() / max(np.sum(tokens.labels == c),
                                                                      1)
                    for c in range(k) if np.any(tokens.labels == c)])
  # the frames against the sequence of state prototypes, in visiting order (discrete elements)
  position = np.asarray(align.dtw(align.squared_distances(signal, protos)).path).argmax(1)
  true_position = np.searchsorted(cuts, np.arange(len(signal)), side="right")
  rows = [["change points (K=6), mean abs(boundary error), frames",
           float(np.mean(np.abs(found - cuts)))],
          ["k-means tokens (k=6), cluster purity", float(purity)],
          ["DTW frames -> state sequence, frame accuracy",
           float(np.mean(position == true_position))]]
  table(f"Segmentation of a {len(signal)}-frame signal with {k} states (noise sd "
        f"{args.state_noise}, prototypes sd 1.5)",
        ["measure", "value"], rows)
  return {"dtw_path_error": err(dtw_curve), "soft_dtw_path_error": err(soft_curve),
          "linear_path_error": err(linear)}


# ---------------------------------------------------------------------------------------- words

def render(split: str, count: int, *, seed: int, two_objects: bool = False, start: int = 0):
  """Shapes examples straight from the generator (no prepared dataset needed)."""
  config = shapes.ShapesConfig(name=f"demo{seed}", seed=seed, max_objects=2)
  out, i = [], start
  while len(out) < count:
    example = shapes.render_example(config, split, i)
    i += 1
    if not two_objects or example["num_objects"] == 2:
      out.append(example)
  return out


def train_two_tower(args):
  """A tiny CLIP TwoTower of configs/shapes_clip.py's sizes (pool: --pool), trained on shapes."""
  model = two_tower("tiny", image_overrides=dict(patch_size=8, width=64, depth=2, num_heads=4,
                                                 mlp_dim=256, pool=args.pool),
                    text_overrides=dict(context_length=64, width=64, depth=2, num_heads=4,
                                        mlp_dim=256))
  tokenizer = tokenizers.ByteTokenizer(context_length=64)
  start = time.perf_counter()
  data = render("train", args.train_examples, seed=0)
  images = normalize(np.stack([e["image"] for e in data]))
  tokens = tokenizer([e["caption"] for e in data])
  params = jax.jit(model.init)(jax.random.key(args.seed), images[:2], tokens[:2])["params"]
  params = nn.unbox(params)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 2e-3, 50, args.steps), weight_decay=0.1)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, tokens):
    def loss_fn(params):
      out = model.apply({"params": params}, images, tokens)
      return clip_loss(out.image, out.text, out.scale)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(args.seed)
  for i in range(args.steps):
    idx = rng.choice(len(images), args.batch_size, replace=False)
    params, opt_state, loss = step(params, opt_state, images[idx], tokens[idx])
    if (i + 1) % 100 == 0:
      print(f"step {i + 1}: loss {float(loss):.3f}", flush=True)
  print(f"trained {args.steps} steps (batch {args.batch_size}, {len(images)} examples) in "
        f"{time.perf_counter() - start:.0f} s", flush=True)
  return (model, {"params": params}, tokenizer,
          f"tiny TwoTower trained here, pool={args.pool}, {args.steps} steps")


def load_workdir(workdir: str):
  """The model, variables and tokenizer of the latest checkpoint of a train.py run."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  from mmjax import tasks  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
  mngr = ocp.CheckpointManager(path, item_names=("state", "data", "config"))
  if mngr.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint under {path}: run train.py with --workdir {workdir}")
  out = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      config=ocp.args.JsonRestore(), state=ocp.args.StandardRestore()))
  config = ml_collections.ConfigDict(out.config)
  task = tasks.get(config.task)
  if not {"image", "text"} <= set(task.outputs(None)):
    raise ValueError(f"--workdir {workdir} holds a {config.task!r} run; expected a two-tower task "
                     "(outputs 'image' and 'text', e.g. clip or siglip)")
  return (task.build_model(config), {"params": out.state["params"]}, task.tokenizer(config),
          f"{workdir} step {mngr.latest_step()}")


def _byte_span(caption: str, word: str, occurrence: int = 0) -> tuple[int, int]:
  """Token positions [start, end) of a word in a byte-tokenized caption (sot is position 0)."""
  at = -1
  for _ in range(occurrence + 1):
    at = caption.index(word, at + 1)
  start = len(caption[:at].encode()) + 1
  return start, start + len(word.encode())


def demo_words(args) -> dict:
  model, variables, tokenizer, source = (load_workdir(args.workdir) if args.workdir
                                         else train_two_tower(args))
  data = render("train", args.eval_images, seed=args.seed + 1000, two_objects=True)
  images = normalize(np.stack([e["image"] for e in data]))
  size, patch = images.shape[1], model.image_encoder.patch_size
  grid = size // patch
  centres = (np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1)
             .reshape(-1, 2)[:, ::-1] + 0.5) * patch                  # (N, 2) patch centres (x, y)
  readout = jax.jit(lambda v, x, r: align.patch_embeddings(model, v, x, readout=r),
                    static_argnums=2)

  # words: each object's colour and shape word, embedded alone ("prompt") or in a caption; a word
  # that names both objects (same colour or same shape) is left out of the scores
  words, owners = [], []
  for e in data:
    objs = e["objects"]
    words.append([shapes.COLOURS[objs["colour"][k]] for k in range(2)]
                 + [shapes.SHAPES[objs["shape"][k]] for k in range(2)])
    owners.append([0, 1, 0, 1])
  vocab = sorted({w for ws in words for w in ws})
  encode_text = jax.jit(lambda v, t: model.apply(v, t, method="encode_text"))
  prompt = dict(zip(vocab, np.asarray(encode_text(variables, tokenizer(vocab)))))
  captions = [f"a {c0} {s0} and a {c1} {s1}" for c0, c1, s0, s1 in words]
  spans = np.array([[_byte_span(c, w) for w in ws] for c, ws in zip(captions, words)])
  per_token = jax.jit(lambda v, t: align.token_embeddings(model, v, t))(variables,
                                                                       tokenizer(captions))
  in_caption = np.asarray(align.span_embeddings(per_token, spans))    # (B, 4, E)
  in_prompt = np.stack([[prompt[w] for w in ws] for ws in words])     # (B, 4, E)

  occlusion = jax.jit(lambda v, x, t: align.occlusion_alignment(model, v, x, t))
  rows, results = [], {}
  for how in (*align.attention.READOUTS, "occlusion"):
    patches = None if how == "occlusion" else np.asarray(readout(variables, images, how))
    for mode, queries in (("word alone", in_prompt), ("word in caption", in_caption)):
      scores = (occlusion(variables, images, queries) if how == "occlusion"
                else np.einsum("bwe,bne->bwn", queries, patches))     # (B, 4, N)
      best = np.argmax(np.asarray(scores), -1)                        # (B, 4) top patch
      for kind, cols in (("colour", [0, 1]), ("shape", [2, 3])):
        hit, right, chance = [], [], []
        for b, e in enumerate(data):
          objs = e["objects"]
          radius = np.array([shapes.SIZE_FRACTION[s] * size for s in objs["size"]])
          dist = np.linalg.norm(centres[:, None, :] - objs["center"][None], axis=-1)  # (N, 2)
          on = dist <= radius[None] + patch / 2                        # patch touches the object
          for w in cols:
            if words[b][w] == words[b][w ^ 1]:                        # both objects: ambiguous
              continue
            owner = owners[b][w]
            hit.append(on[best[b, w], owner])
            right.append(dist[best[b, w], owner] < dist[best[b, w], 1 - owner])
            chance.append(on[:, owner].mean())
        rows.append([how, mode, kind, len(hit), float(np.mean(hit)), float(np.mean(chance)),
                     float(np.mean(right))])
        results[f"{how}/{mode}/{kind}"] = float(np.mean(hit))
  table(f"Word-to-patch alignment ({source}; {len(data)} two-object images, {grid}x{grid} patches)",
        ["patch readout", "word embedding", "words", "scored", "top patch on the object",
         "chance (random patch)",
         "top patch nearer the named object (chance 0.5)"], rows)
  return results


# ----------------------------------------------------------------------------------------- emap

class Classifier(nn.Module):
  """Image features (16x16 mean-pooled pixels) and a caption's word (one-hot) -> towers ->
  fusion -> logits. fusion 'additive': late fusion (the mean of one head per modality), additive
  in the two inputs by construction; 'tensor': TFN (Zadeh et al. 2017) and a small MLP."""
  fusion: str
  num_classes: int

  def setup(self):
    self.image_tower = MlpEncoder((128,), 16)
    self.text_tower = nn.Dense(16)
    if self.fusion == "additive":
      self.head = LateFusion(self.num_classes, hidden=(64,))
    else:
      self.fuse = TensorFusion(64)
      self.out = nn.Dense(self.num_classes)

  def towers(self, image, text):
    return nn.relu(self.image_tower(image)), nn.relu(self.text_tower(text))

  def fused(self, zi, zt):
    if self.fusion == "additive":
      return self.head([zi, zt])
    return self.out(nn.relu(self.fuse([zi, zt])))

  def __call__(self, image, text):
    return self.fused(*self.towers(image, text))


def emap_task(task: str, count: int, seed: int):
  """(image features (N, 768), caption word one-hot (N, words), labels (N,)) for a shapes task."""
  data = render("test", count, seed=seed)
  rng = np.random.default_rng(seed)
  pixels = np.stack([e["image"] for e in data]).astype(np.float32) / 255.0
  image = pixels.reshape(count, 16, 4, 16, 4, 3).mean((2, 4)).reshape(count, -1) - 0.5
  colour = np.array([e["colour"] for e in data])
  ncol, nshape = len(shapes.COLOURS), len(shapes.SHAPES)
  if task == "match":          # a colour word, the object's colour for half the examples
    label = rng.random(count) < 0.5
    word = np.where(label, colour, (colour + rng.integers(1, ncol, count)) % ncol)
    return image, np.eye(ncol, dtype=np.float32)[word], label.astype(np.int32)
  word = rng.integers(0, nshape, count)   # "compose": a shape word; class (image colour, word)
  return image, np.eye(nshape, dtype=np.float32)[word], (colour * nshape + word).astype(np.int32)


def train_classifier(model, image, text, label, *, steps: int, seed: int):
  image, text, label = jnp.asarray(image), jnp.asarray(text), jnp.asarray(label)
  params = jax.jit(model.init)(jax.random.key(seed), image[:2], text[:2])["params"]
  params = nn.unbox(params)
  tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, idx):
    def loss_fn(params):
      logits = model.apply({"params": params}, image[idx], text[idx])
      return optax.softmax_cross_entropy_with_integer_labels(logits, label[idx]).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    params, opt_state = step(params, opt_state, rng.choice(len(label), 128, replace=False))
  return {"params": params}


def demo_emap(args) -> dict:
  rows, results = [], {}
  start = time.perf_counter()
  for task in ("match", "compose"):
    classes = 2 if task == "match" else len(shapes.CLASS_NAMES)
    train = emap_task(task, args.emap_train, seed=args.seed)
    test = emap_task(task, args.emap_test, seed=args.seed + 1)
    for fusion in ("additive", "tensor"):
      model = Classifier(fusion, classes)
      variables = train_classifier(model, *train, steps=args.emap_steps, seed=args.seed)
      # EMAP over the fusion head on the towers' outputs: N towers calls, N^2 head calls
      zi, zt = jax.jit(functools.partial(model.apply, method="towers"))(variables, *test[:2])
      head = lambda a, b, v=variables, m=model: m.apply(v, a, b, method="fused")  # noqa: E731
      scores = quantify.emap_accuracy(head, zi, zt, test[2], block_size=50)
      probe = quantify.modality_contribution(
          lambda a, b, v=variables, m=model: m.apply(v, a, b), test[0], test[1], test[2],
          key=jax.random.key(args.seed), names=("image", "text"))
      rows.append([task, fusion, scores["model_accuracy"], scores["emap_accuracy"],
                   probe["without_image"], probe["without_text"], probe["mismatched_image"],
                   probe["mismatched_text"]])
      results[f"{task}/{fusion}"] = {**scores, **probe}
  chance = {"match": 0.5, "compose": 1 / len(shapes.CLASS_NAMES)}
  table(f"EMAP (Hessel & Lee 2020) on {args.emap_test} test examples ({args.emap_train} train, "
        f"{args.emap_steps} steps; chance: match 0.5, compose {chance['compose']:.3f}; "
        f"{time.perf_counter() - start:.0f} s in all)",
        ["task", "fusion", "model accuracy", "EMAP accuracy", "image zeroed", "text zeroed",
         "image mismatched", "text mismatched"], rows)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--demo", choices=("all", "continuous", "words", "emap"), default="all")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pairs", type=int, default=16, help="warped signal pairs")
  parser.add_argument("--noise", type=float, default=0.1, help="noise sd of the warped signals")
  parser.add_argument("--state_noise", type=float, default=0.8, help="noise sd, state signal")
  parser.add_argument("--workdir", default="", help="a train.py clip/siglip run to read")
  parser.add_argument("--steps", type=int, default=300, help="TwoTower steps without --workdir")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--train_examples", type=int, default=4096)
  parser.add_argument("--pool", default="cls", choices=("gap", "cls", "map"))
  parser.add_argument("--eval_images", type=int, default=200)
  parser.add_argument("--emap_train", type=int, default=3000)
  parser.add_argument("--emap_test", type=int, default=500)
  parser.add_argument("--emap_steps", type=int, default=800)
  parser.add_argument("--json", default="", help="also write the numbers to this file")
  args = parser.parse_args(argv)
  results = {}
  for name, fn in (("continuous", demo_continuous), ("words", demo_words), ("emap", demo_emap)):
    if args.demo in ("all", name):
      results[name] = fn(args)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
