"""mmjax.evaluate against independent numpy / scikit-learn computations: zero-shot accuracy and
retrieval ranks with ties and several captions per image, chunked == unchunked, sharded ==
single-device, arithmetic on hand-built embeddings, probes, CCA, transfer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import parallel
from mmjax.evaluate import (arithmetic, correlation, embed, probe, retrieval, transfer,
                            zero_shot)
from mmjax.losses import canonical_correlations


def _pessimistic_position(scores, correct):
  """0-based position of the first correct item when sorted by score, ties placing wrong first."""
  order = np.lexsort((correct, -scores))           # by -score, then wrong (0) before correct (1)
  return int(np.flatnonzero(correct[order])[0])


# --- zero-shot -----------------------------------------------------------------------------------

def test_accuracy_ties_count_against():
  logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 1.0, 2.0]])
  labels = np.array([0, 2, 0])
  np.testing.assert_array_equal(zero_shot.label_ranks(logits, labels), [1, 1, 0])
  assert zero_shot.accuracy(logits, labels) == pytest.approx(1 / 3)
  assert zero_shot.accuracy(logits, labels, k=2) == 1.0


def test_accuracy_matches_sort_reference_and_sklearn():
  from sklearn.metrics import top_k_accuracy_score  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  tied = rng.integers(0, 4, size=(300, 7)).astype(np.float32)     # many ties
  labels = rng.integers(0, 7, size=300)
  for k in (1, 3, 5):
    ref = np.mean([_pessimistic_position(row, np.arange(7) == y) < k
                   for row, y in zip(tied, labels)])
    assert zero_shot.accuracy(tied, labels, k) == pytest.approx(ref)
  logits = rng.normal(size=(300, 7))                                # no ties: the peer agrees
  for k in (1, 5):
    assert zero_shot.accuracy(logits, labels, k) == pytest.approx(
        top_k_accuracy_score(labels, logits, k=k, labels=np.arange(7)))


def test_classify_confusion_and_per_class_match_sklearn():
  from sklearn.metrics import confusion_matrix  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(200, 6))
  labels = rng.choice([0, 2, 3, 5], size=200)                       # classes 1 and 4 absent
  out = zero_shot.classify(logits, labels)
  ref = confusion_matrix(labels, logits.argmax(1), labels=np.arange(6))
  np.testing.assert_array_equal(out["confusion"], ref)
  for c in range(6):
    mask = labels == c
    want = np.mean(logits[mask].argmax(1) == c) if mask.any() else np.nan
    np.testing.assert_allclose(out["per_class"][c], want)
  present = [0, 2, 3, 5]
  assert out["top1_within_split"] == pytest.approx(
      np.mean(np.array(present)[logits[:, present].argmax(1)] == labels))


def test_bad_prompts_are_clear_errors():
  encode = lambda t: np.ones((len(t), 4))  # noqa: E731
  tok = lambda texts: np.zeros((len(texts), 3), np.int32)  # noqa: E731
  with pytest.raises(ValueError, match="class_names is empty"):
    zero_shot.classifier_weights(encode, tok, [], ["a {}"])
  with pytest.raises(ValueError, match=r"needs a '\{\}'.*a photo"):
    zero_shot.classifier_weights(encode, tok, ["cat"], ["a photo"])
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
    zero_shot.accuracy(np.zeros((2, 3)), np.array([0, 3]))


def test_embed_run_pads_and_drops_rows(mesh8):
  del mesh8
  mesh = parallel.make_mesh(4, 2, 1)
  x = np.random.default_rng(0).normal(size=(45, 3)).astype(np.float32)
  fn = jax.jit(lambda v, b: {"y": b["x"] * v["w"]})
  batches = (({"x": x[i:i + 13]}, {"i": list(range(i, min(i + 13, 45)))}) for i in range(0, 45, 13))
  out, raw = embed.run(fn, {"w": 2.0}, batches, mesh, 13, quiet=True)
  np.testing.assert_allclose(out["y"], 2 * x)
  assert raw["i"] == list(range(45))


# --- retrieval -----------------------------------------------------------------------------------

def _reference_ranks(img, txt, owner):
  scores = img.astype(np.float64) @ txt.astype(np.float64).T        # (N, M)
  i2t = [_pessimistic_position(scores[i], owner == i) for i in range(len(img))]
  t2i = [_pessimistic_position(scores[:, j], np.arange(len(img)) == owner[j])
         for j in range(len(txt))]
  return np.array(i2t), np.array(t2i)


def _several_captions(seed, n=29, e=6, values=3):
  """Integer embeddings (exact float32 dot products, many ties), 1-4 captions per image."""
  rng = np.random.default_rng(seed)
  img = rng.integers(-values, values + 1, size=(n, e)).astype(np.float32)
  owner = np.concatenate([np.arange(n), rng.integers(0, n, size=2 * n)])
  txt = (img[owner] + rng.integers(-2, 3, size=(len(owner), e))).astype(np.float32)
  return img, txt, owner


def test_retrieval_hand_computed_ties_and_captions():
  img = np.array([[1, 0], [1, 0], [0, 1]], np.float32)             # images 0 and 1 identical
  txt = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  owner = np.array([0, 2, 1, 2])
  i2t, t2i = retrieval.retrieval_ranks(img, txt, owner)
  # image 0: its caption 0 scores 1, tied with wrong captions 2 and 3 -> rank 2 (ties against)
  # image 2: best own caption (1 or 3) scores 1, no wrong caption scores >= 1 -> rank 0
  np.testing.assert_array_equal(i2t, [2, 2, 0])
  # caption 3 = (1, 1) scores 1 on every image: two wrong images tie -> rank 2
  np.testing.assert_array_equal(t2i, [1, 0, 1, 2])
  m = retrieval.rank_metrics(t2i, "t2i_", ks=(1, 2))
  assert m == {"t2i_recall@1": 0.25, "t2i_recall@2": 0.75, "t2i_median_rank": 2.0,
               "t2i_mean_rank": 2.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_numpy_with_ties_and_several_captions(seed):
  img, txt, owner = _several_captions(seed)
  i2t, t2i = retrieval.retrieval_ranks(img, txt, owner, chunk_size=7)
  ref_i2t, ref_t2i = _reference_ranks(img, txt, owner)
  np.testing.assert_array_equal(i2t, ref_i2t)
  np.testing.assert_array_equal(t2i, ref_t2i)


def test_retrieval_random_embeddings_match_numpy():
  rng = np.random.default_rng(3)
  img = rng.normal(size=(50, 8)).astype(np.float32)
  txt = (img + rng.normal(size=(50, 8))).astype(np.float32)
  got = retrieval.retrieval_metrics(img, txt)
  ref_i2t, ref_t2i = _reference_ranks(img, txt, np.arange(50))
  for k in (1, 5, 10):
    assert got[f"i2t_recall@{k}"] == pytest.approx(np.mean(ref_i2t < k))
    assert got[f"t2i_recall@{k}"] == pytest.approx(np.mean(ref_t2i < k))
  assert got["i2t_median_rank"] == np.median(ref_i2t + 1)
  assert got["t2i_mean_rank"] == pytest.approx(np.mean(ref_t2i + 1))


def test_retrieval_chunked_equals_unchunked_and_sharded_equals_single_device():
  img, txt, owner = _several_captions(2, n=37)                       # 37 images, 111 captions
  single = retrieval.retrieval_ranks(img, txt, owner, chunk_size=10_000)
  for mesh in (None, parallel.make_mesh(4, 2, 1), parallel.make_mesh(2, 2, 2)):
    for chunk in (5, 64):
      got = retrieval.retrieval_ranks(img, txt, owner, mesh=mesh, chunk_size=chunk)
      np.testing.assert_array_equal(got[0], single[0])
      np.testing.assert_array_equal(got[1], single[1])


def test_retrieval_input_errors():
  img = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match="have no caption"):
    retrieval.retrieval_ranks(img, np.zeros((2, 2)), np.array([0, 1]))
  with pytest.raises(ValueError, match="must index the 3 images"):
    retrieval.retrieval_ranks(img, np.zeros((3, 2)), np.array([0, 1, 3]))


# --- arithmetic ----------------------------------------------------------------------------------

def _grid(copies=2, colours=3, shapes=2):
  """One-hot colour block + one-hot shape block per image, `copies` images per combination."""
  attrs = np.array([(c, s) for c in range(colours) for s in range(shapes)] * copies)
  emb = np.concatenate([np.eye(colours)[attrs[:, 0]], np.eye(shapes)[attrs[:, 1]]], 1)
  words = [np.eye(colours + shapes)[:colours], np.eye(colours + shapes)[colours:]]
  return emb.astype(np.float32), attrs, words


def test_arithmetic_hand_built_exact_words_hit_everything():
  emb, attrs, words = _grid()
  out = arithmetic.arithmetic_metrics(emb, attrs, words, ("colour", "shape"))
  assert out == {"colour_hit": 1.0, "shape_hit": 1.0, "hit": 1.0}
  # colour swaps: 12 images x 2 other colours
  assert len(arithmetic.attribute_swap_hits(emb, attrs, words, 0)) == 24


@pytest.mark.parametrize("weight, expected", [(0.4, 1.0), (0.3, 0.0)])
def test_arithmetic_hand_built_weak_words(weight, expected):
  # images (e_c + e_s) / r with r = sqrt(2), words w e_v: query ~ (1/r - w) e_c + w e_c' + e_s/r;
  # the target (c', s) scores ~ w + 1/r, the other copy of the query's own (c, s) 2/r - w, so the
  # swap wins exactly when w > 1 / (2 r) = 0.354
  emb, attrs, words = _grid()
  hits = arithmetic.attribute_swap_hits(emb, attrs, [w * weight for w in words], 0)
  assert np.mean(hits) == expected


def test_arithmetic_matches_brute_force_and_skips_absent_targets():
  rng = np.random.default_rng(0)
  attrs = np.array([(c, s) for c in range(4) for s in range(3)] * 3)[:-3]   # (3, 2..) once less
  attrs = attrs[~((attrs[:, 0] == 3) & (attrs[:, 1] == 2))]                  # (3, 2) absent
  emb = rng.normal(size=(len(attrs), 5)).astype(np.float32)
  words = [rng.normal(size=(4, 5)), rng.normal(size=(3, 5))]
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  ref = []
  for i, (c, s) in enumerate(attrs):
    for c2 in range(4):
      if c2 == c or not np.any((attrs[:, 0] == c2) & (attrs[:, 1] == s)):
        continue
      q = unit[i] - words[0][c] + words[0][c2]
      scores = unit @ (q / np.linalg.norm(q))
      scores[i] = -np.inf
      ref.append(tuple(attrs[np.argmax(scores)]) == (c2, s))
  got = arithmetic.attribute_swap_hits(emb, attrs, words, 0, chunk_size=10)
  np.testing.assert_array_equal(got, ref)


# --- probes, correlation, transfer -----------------------------------------------------------

def test_logistic_probe_matches_sklearn():
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.normal(size=(150, 5)) + np.repeat(rng.normal(size=(3, 5)), 50, axis=0)
  y = np.repeat(np.arange(3), 50)
  l2 = 1e-2
  params = probe.fit_logistic(x, y, 3, l2=l2, steps=300)
  xs = (x - x.mean(0)) / (x.std(0) + 1e-6)
  peer = LogisticRegression(C=1 / (len(x) * l2), tol=1e-10, max_iter=10_000).fit(xs, y)
  ours = jax.nn.softmax(probe.probe_logits(params, x))
  np.testing.assert_allclose(ours, peer.predict_proba(xs), atol=2e-3)


def test_few_shot_indices_take_k_per_class():
  labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
  idx = probe.few_shot_indices(labels, 5, seed=1)
  np.testing.assert_array_equal(np.bincount(labels[idx]), [5, 3, 5])
  assert len(set(idx)) == len(idx)


def test_cca_train_correlations_match_losses_and_held_out_the_population():
  rng = np.random.default_rng(0)

  def views(n):
    z, noise = rng.normal(size=(n, 1)), rng.normal(size=(n, 3))
    x = np.concatenate([z, noise[:, :1]], 1) @ np.array([[1.0, 0.5], [0.2, 1.0]])
    y = np.concatenate([z + 0.5 * noise[:, 1:2], noise[:, 2:]], 1)
    return x, y

  x, y = views(4000)
  cca = correlation.fit_cca(x, y, ridge=1e-6)
  peer = np.asarray(canonical_correlations(jnp.asarray(x), jnp.asarray(y), ridge=1e-6))
  np.testing.assert_allclose(cca["rho"], peer, atol=1e-4)
  px, py = correlation.project(cca, x, y)
  np.testing.assert_allclose([np.corrcoef(px[:, i], py[:, i])[0, 1] for i in range(2)],
                             cca["rho"], atol=1e-4)
  rho = correlation.held_out_correlations(cca, *views(20000))
  assert rho[0] == pytest.approx(1 / np.sqrt(1.25), abs=0.02)   # corr(z, z + 0.5 n)
  assert abs(rho[1]) < 0.03


def test_transfer_crosses_a_modality_gap_but_not_mismatched_classes():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(4, 6)) * 3
  y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
  image = means[y_train] + rng.normal(size=(200, 6))
  text = means[y_test] + rng.normal(size=(200, 6)) + 10.0            # constant offset (gap)
  assert transfer.cross_modal_transfer(image, y_train, text, y_test, 4) > 0.9
  shuffled = means[[1, 2, 3, 0]][y_test] + rng.normal(size=(200, 6))
  assert transfer.cross_modal_transfer(image, y_train, shuffled, y_test, 4) < 0.2
