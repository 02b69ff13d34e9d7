"""MTAG (mmjax.models.mtag) against hand-computed graphs, a float64 numpy forward pass of the
modal-temporal attention written from its equations, closed-form parameter counts, and the
invariances a graph network must have (padding, node order).

Widths are tiny and most variables come from numpy (no compiled initialisers); the time the file
takes is XLA compiling a handful of jitted functions.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.models.cross_attention import CrossModalTransformer
from mmjax.models.mtag import (MTAG, MTAGGraph, ModalTemporalAttention, edge_types, graph_nodes,
                               num_edge_types, prune_top_k)

LOGICAL_NAMES = {"embed", "mlp", "heads", "kv", "proj", "modality", None}


def _rand(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _numpy_variables(model, *args, scale=0.3, dtype=None):
  """Variables of model.init's structure filled by numpy (no compiled initialiser). args stay
  concrete (the node modalities must be)."""
  shapes = jax.eval_shape(lambda key: model.init(key, *args), jax.random.key(0))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(dtype or s.dtype),
                      nn.unbox(shapes))


# The hand-built graph: audio 3 real steps (+1 padded), words 2. Row 1 has no audio at all.
HAND_XS = {"audio": _rand(0, 2, 4, 4), "words": _rand(1, 2, 2, 4)}
HAND_LENGTHS = {"audio": np.array([3, 0]), "words": np.array([2, 2])}
A_A, W_A, A_W, W_W = 0, 6, 3, 9  # type bases 3 * (2 * source + target); + 0 past, 1 now, 2 future
HAND_TYPES = np.array([
    # sources: a0 1/6, a1 1/2, a2 5/6, pad, w0 1/4, w1 3/4      targets:
    [[A_A + 1, A_A + 2, A_A + 2, -1, W_A + 1, W_A + 2],       # a0 t=1/6
     [A_A + 0, A_A + 1, A_A + 2, -1, W_A + 1, W_A + 1],       # a1 t=1/2 (on the word boundary)
     [A_A + 0, A_A + 0, A_A + 1, -1, W_A + 0, W_A + 1],       # a2 t=5/6
     [-1] * 6,                                                # padded audio node
     [A_W + 1, A_W + 1, A_W + 2, -1, W_W + 1, W_W + 2],       # w0 t=1/4
     [A_W + 0, A_W + 1, A_W + 1, -1, W_W + 0, W_W + 1]],      # w1 t=3/4
    [[-1] * 6] * 4 + [[-1] * 4 + [W_W + 1, W_W + 2], [-1] * 4 + [W_W + 0, W_W + 1]],
])


def _hand_graph():
  x, ids, times, mask = graph_nodes(HAND_XS, HAND_LENGTHS, ("audio", "words"))
  return x, ids, times, mask, edge_types(ids, times, mask)


def test_graph_nodes_and_edge_types_match_a_hand_built_graph():
  x, ids, times, mask, types = _hand_graph()
  np.testing.assert_array_equal(ids, [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 1, 1]])
  np.testing.assert_allclose(times[0], [1 / 6, 1 / 2, 5 / 6, 7 / 6, 1 / 4, 3 / 4], rtol=1e-6)
  np.testing.assert_array_equal(x[0, 3], 0.0)                      # padded node zeroed
  np.testing.assert_array_equal(types, HAND_TYPES)
  assert num_edge_types(2) == 12 and num_edge_types(3) == 27
  # explicit steps: with a step of 0.1 for every node, only |dt| <= 0.05 is "present"
  narrow = edge_types(ids, times, mask, steps=jnp.full(mask.shape, 0.1))
  assert narrow[0, 1, 4] == W_A + 0 and narrow[0, 4, 1] == A_W + 2 and narrow[0, 0, 0] == A_A + 1


def test_prune_top_k_keeps_the_strongest_incoming_edges():
  # attention [target, source] for 2 heads; the head mean decides. Row 0: means .6 .1 .3 .3 (tie
  # between sources 2 and 3: the lower index wins); source 0 of row 1 is absent however strong.
  head0 = np.array([[.7, .1, .2, .4], [.9, .5, .1, .3], [.1, .1, .1, .1], [.0, .2, .3, .5]])
  head1 = np.array([[.5, .1, .4, .2], [.9, .1, .1, .7], [.1, .1, .1, .1], [.0, .2, .1, .5]])
  attention = np.stack([head0, head1])[None]                      # (1, 2, 4, 4)
  adjacency = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], bool)[None]
  top2 = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], bool)[None]
  np.testing.assert_array_equal(prune_top_k(attention, adjacency, 2), top2)
  top1 = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], bool)[None]
  np.testing.assert_array_equal(prune_top_k(attention, adjacency, 1), top1)
  # ratio 0.5: ceil(0.5 * in-degree) = 2, 2, 0, 1 edges
  np.testing.assert_array_equal(prune_top_k(attention, adjacency, 0.5), top2)
  np.testing.assert_array_equal(prune_top_k(attention, adjacency, 1.0), adjacency)
  for bad in (0, 1.5, True, "2"):
    with pytest.raises(ValueError, match="keep_edges"):
      prune_top_k(attention, adjacency, bad)


def _numpy_top_k(attention, adjacency, k):
  """prune_top_k by a stable numpy argsort of every row (the reference)."""
  score = np.where(adjacency, attention.mean(1), -np.inf)
  out = np.zeros_like(adjacency)
  for b, i in np.ndindex(adjacency.shape[:2]):
    degree = adjacency[b, i].sum()
    keep = min(k, degree) if isinstance(k, int) else int(np.ceil(k * degree - 1e-6))
    out[b, i, np.argsort(-score[b, i], kind="stable")[:keep]] = True
  return out & adjacency


@pytest.mark.parametrize("seed", range(3))
def test_prune_top_k_matches_a_sort_on_random_graphs_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 17))
  levels = np.array([0.0, 0.1, 0.25, 1.0, -0.3, 1e-30, -1e-30], np.float32)  # many exact ties
  attention = (rng.choice(levels, size=(2, 2, n, n)) if seed else
               rng.normal(size=(2, 2, n, n))).astype(np.float32)
  adjacency = rng.random((2, n, n)) < 0.7
  for k in (1, 3, n + 2, 0.3, 1.0):
    np.testing.assert_array_equal(prune_top_k(attention, adjacency, k),
                                  _numpy_top_k(attention, adjacency, k), err_msg=f"k={k}")


def _leaky(z, slope=0.2):
  return np.where(z >= 0, z, slope * z)


def _reference_attention(p, x, ids, types, adjacency, heads, content):
  """ModalTemporalAttention in float64 numpy, one edge at a time (see its docstring)."""
  b, n, d = x.shape
  c = d // heads
  proj = lambda name: np.stack([np.stack([np.einsum("d,dhc->hc", x[r, i], p[name][ids[i]])
                                          + p[f"{name}_bias"][ids[i]] for i in range(n)])
                                for r in range(b)])           # (B, N, H, C)
  v = proj("value")
  q, k = (proj("query"), proj("key")) if content else (None, None)
  y = np.zeros((b, n, d))
  for r in range(b):
    for i in range(n):
      att = np.zeros((heads, d // heads))
      for h in range(heads):
        src = [j for j in range(n) if adjacency[r, i, j]]
        if not src:
          continue
        e = []
        for j in src:
          t = types[r, i, j]
          z = p["att_src"][t, h] @ v[r, j, h] + p["att_dst"][t, h] @ v[r, i, h]
          e.append(_leaky(z) + p["type_bias"][t, h]
                   + (q[r, i, h] @ k[r, j, h] / math.sqrt(c) if content else 0.0))
        w = np.exp(np.array(e) - max(e))
        w /= w.sum()
        att[h] = sum(wj * v[r, j, h] for wj, j in zip(w, src))
      y[r, i] = att.reshape(-1) @ p["out"]["kernel"].reshape(d, d) + p["out"]["bias"]
  return y


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("content", [True, False])
def test_attention_matches_float64_reference_and_uses_each_type(content):
  x, ids, _, _, types = _hand_graph()
  x = np.asarray(x, np.float64) + _rand(2, *x.shape)             # real values at every node
  adjacency = np.asarray(types) >= 0
  adjacency[0, 1] = False                                          # real node a1: no incoming edge
  layer = ModalTemporalAttention(num_modalities=2, num_heads=2, content=content,
                                 dtype=jnp.float64, param_dtype=jnp.float64)
  args = (ids, types, adjacency)
  params = _numpy_variables(layer, x, *args, dtype=np.float64)["params"]
  apply = jax.jit(lambda p: layer.apply({"params": p}, x, *args))
  y, alpha = apply(params)
  want = _reference_attention(jax.tree.map(np.asarray, params), x, ids, np.asarray(types),
                              adjacency, 2, content)
  real = adjacency.any(-1)                                         # nodes with incoming edges
  np.testing.assert_allclose(np.asarray(y)[real], want[real], rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(y[0, 1], params["out"]["bias"], rtol=1e-12)  # no edge: W^o 0 + b
  np.testing.assert_allclose(np.sum(alpha, -1), real[:, None].repeat(2, 1), atol=1e-12)
  # one edge type's parameters change exactly the nodes with an incoming edge of that type
  for tau in (A_A + 2, W_A + 1, A_W + 0):
    for name in ("att_src", "att_dst", "type_bias"):
      moved = dict(params, **{name: np.asarray(params[name]).copy()})
      moved[name][tau] += 0.7
      changed = np.any(np.asarray(apply(moved)[0]) != np.asarray(y), axis=-1)
      np.testing.assert_array_equal(changed, np.any((np.asarray(types) == tau) & adjacency, -1),
                                    err_msg=f"{name}[{tau}]")


STREAMS = {"audio": _rand(3, 3, 6, 8), "video": _rand(4, 3, 4, 8), "words": _rand(5, 3, 3, 8)}
LENGTHS = {"audio": np.array([6, 2, 5]), "video": np.array([3, 0, 4]),
           "words": np.array([1, 3, 3])}


def test_padding_garbage_changes_nothing_and_empty_streams_stay_finite():
  model = MTAG(num_layers=2, num_heads=2, width=8, keep_edges=2, out_dim=5)
  variables = _numpy_variables(model, STREAMS, LENGTHS)
  apply = jax.jit(model.apply)
  out = apply(variables, STREAMS, LENGTHS)
  assert out.shape == (3, 5) and np.all(np.isfinite(out))        # row 1: no video at all
  garbage = {k: np.where(np.arange(x.shape[1])[None, :, None] < LENGTHS[k][:, None, None], x,
                         np.nan).astype(np.float32) for k, x in STREAMS.items()}
  np.testing.assert_array_equal(apply(variables, garbage, LENGTHS), out)
  # a row's output depends on its own stream only: change row 0, rows 1 and 2 stay put
  other = {k: x.copy() for k, x in STREAMS.items()}
  other["audio"][0] += _rand(6, 6, 8)
  moved = apply(variables, other, LENGTHS)
  np.testing.assert_array_equal(moved[1:], out[1:])
  assert np.abs(moved[0] - out[0]).max() > 1e-4


def test_mtag_rejects_mismatched_inputs():
  model = MTAG(num_layers=1, num_heads=2, width=8)
  with pytest.raises(ValueError, match="width=8"):
    model.init(jax.random.key(0), {"audio": np.zeros((1, 2, 6), np.float32)})
  with pytest.raises(ValueError, match="expected exactly"):
    model.clone(modalities=("audio", "video")).init(jax.random.key(0), {"audio": STREAMS["audio"]})
  with pytest.raises(ValueError, match="keep_edges"):
    model.clone(keep_edges=0).init(jax.random.key(0), STREAMS)
  # the node modalities decide the blocks of the graph: they must be concrete, one per node
  x, ids, times, mask = graph_nodes(STREAMS, LENGTHS, ("audio", "video", "words"))
  graph = MTAGGraph(num_modalities=3, num_layers=1, num_heads=2)
  with pytest.raises(ValueError, match="concrete"):
    jax.eval_shape(graph.init, jax.random.key(0), x, ids, times, mask)
  with pytest.raises(ValueError, match=r"ints in \[0, 3\)"):
    graph.init(jax.random.key(0), x, ids + 1, times, mask)


def test_permuting_nodes_permutes_outputs_and_keeps_the_pooled_one():
  x, ids, times, mask = graph_nodes(STREAMS, LENGTHS, ("audio", "video", "words"))
  graph = MTAGGraph(num_modalities=3, num_layers=2, num_heads=2, keep_edges=3)
  variables = _numpy_variables(graph, x, ids, times, mask)
  nodes, pooled = jax.jit(lambda v, *a: graph.apply(v, a[0], ids, *a[1:]))(variables, x, times,
                                                                          mask)
  perm = np.random.default_rng(0).permutation(x.shape[1])
  nodes_p, pooled_p = jax.jit(lambda v, *a: graph.apply(v, a[0], ids[perm], *a[1:]))(
      variables, x[:, perm], times[:, perm], mask[:, perm])
  real = np.asarray(mask)[:, perm]
  np.testing.assert_allclose(np.asarray(nodes_p)[real], np.asarray(nodes)[:, perm][real],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pooled_p, pooled, rtol=1e-5, atol=1e-5)
  # the pruning is in force: keeping every edge gives other outputs
  _, unpruned = graph.clone(keep_edges=None).apply(variables, x, ids, times, mask)
  assert np.abs(unpruned - pooled).max() > 1e-4


def test_a_few_adam_steps_lower_the_loss():
  # toy task: the label is the sign of the first audio feature averaged over the real steps
  rng = np.random.default_rng(1)
  streams = {k: rng.normal(size=(16,) + x.shape[1:]).astype(np.float32)
             for k, x in STREAMS.items()}
  lengths = {k: rng.integers(0 if k == "video" else 1, x.shape[1] + 1, size=16)
             for k, x in streams.items()}
  real = np.arange(6)[None] < lengths["audio"][:, None]
  labels = (np.sum(streams["audio"][..., 0] * real, 1) > 0).astype(np.float32)
  model = MTAG(num_layers=2, num_heads=2, width=8, keep_edges=0.5, out_dim=1)
  params = jax.jit(model.init)(jax.random.key(0), streams, lengths)["params"]
  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({"params": p}, streams, lengths)[:, 0]
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return optax.apply_updates(params, updates), opt_state, loss, finite

  opt_state, losses = opt.init(params), []
  for _ in range(25):
    params, opt_state, loss, finite = step(params, opt_state)
    assert finite
    losses.append(float(loss))
  assert losses[-1] < 0.6 * losses[0], losses


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(nn.unbox(tree)))


@pytest.mark.parametrize("width", [32, 64])
def test_parameter_count_closed_form_and_under_half_of_mult(width):
  d, heads, m, layers = width, 4, 3, 2
  xs = {k: jax.ShapeDtypeStruct((2, t, d), jnp.float32)
        for k, t in (("audio", 64), ("video", 32), ("words", 12))}
  shapes = jax.eval_shape(MTAG(layers, heads, d).init, jax.random.key(0), xs)
  e, f = num_edge_types(m), 2 * d
  block = (3 * m * (d * d + d) + 2 * e * d + e * heads + d * d + d + 2 * 2 * d
           + d * f + f + f * d + d)
  assert _count(shapes) == layers * block + 2 * d + m * d * d + d
  names = {n for leaf in jax.tree.leaves(shapes, is_leaf=lambda z: isinstance(z, nn.Partitioned))
           for n in leaf.names}
  assert names <= LOGICAL_NAMES
  # MulT's crossmodal part alone: 6 CrossModalTransformers (depth 2, feed-forward 4 * width)
  x = jax.ShapeDtypeStruct((2, 5, d), jnp.float32)
  cmt = jax.eval_shape(CrossModalTransformer(2, heads, 4 * d).init, jax.random.key(0), x, x)
  assert 2 * _count(shapes) <= 6 * _count(cmt)
