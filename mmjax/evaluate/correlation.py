"""Correlation evaluation of two-view models (deep CCA; Andrew et al. 2013, Wang et al. 2015).

The DCCA papers' protocol: fit linear CCA on the training set's view embeddings, project held-out
embeddings with it and report their correlations (the "total correlation captured" on test); then
classify the held-out view-1 projections with a linear classifier trained on the training set's.

    cca = fit_cca(train_zx, train_zy, ridge=1e-3)
    rho = held_out_correlations(cca, test_zx, test_zy)          # (k,) per component
"""
from __future__ import annotations

import numpy as np


def fit_cca(x, y, *, ridge: float = 1e-4, k: int | None = None) -> dict:
  """Linear CCA of x (n, dx) and y (n, dy) in float64: {'mean_x', 'mean_y', 'a' (dx, k),
  'b' (dy, k), 'rho' (k,) training correlations}, k = min(dx, dy) by default.

  Covariances get `ridge` added to the diagonal; whitening by Cholesky factors L (C = L L^T):
  T = Lx^-1 Cxy Ly^-T = U S V^T, a = Lx^-T U, b = Ly^-T V, rho = S.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
    raise ValueError(f"expected two views (n, dx) and (n, dy) with n >= 2, got {x.shape} and "
                     f"{y.shape}")
  mx, my = x.mean(0), y.mean(0)
  xc, yc = x - mx, y - my
  n = len(x) - 1
  lx = np.linalg.cholesky(xc.T @ xc / n + ridge * np.eye(x.shape[1]))
  ly = np.linalg.cholesky(yc.T @ yc / n + ridge * np.eye(y.shape[1]))
  t = np.linalg.solve(lx, np.linalg.solve(ly, (xc.T @ yc / n).T).T)     # (dx, dy)
  u, s, vt = np.linalg.svd(t)
  k = k or min(x.shape[1], y.shape[1])
  a = np.linalg.solve(lx.T, u[:, :k])
  b = np.linalg.solve(ly.T, vt.T[:, :k])
  return {"mean_x": mx, "mean_y": my, "a": a, "b": b, "rho": s[:k]}


def project(cca: dict, x=None, y=None):
  """The canonical variates of x (n, dx) and / or y (n, dy): (n, k) each (None stays None)."""
  px = None if x is None else (np.asarray(x, np.float64) - cca["mean_x"]) @ cca["a"]
  py = None if y is None else (np.asarray(y, np.float64) - cca["mean_y"]) @ cca["b"]
  return px, py


def held_out_correlations(cca: dict, x, y) -> np.ndarray:
  """(k,) Pearson correlation of each pair of canonical variates of held-out x and y."""
  px, py = project(cca, x, y)
  px, py = px - px.mean(0), py - py.mean(0)
  denom = np.sqrt(np.sum(px * px, 0) * np.sum(py * py, 0))
  return np.sum(px * py, 0) / np.maximum(denom, 1e-12)


def correlation_metrics(train_zx, train_zy, test_zx, test_zy, *, ridge: float = 1e-4,
                        k: int | None = None) -> dict[str, float]:
  """{'held_out_total_correlation': sum of the test correlations of CCA fitted on train,
  'held_out_top_correlation', 'train_total_correlation'}."""
  cca = fit_cca(train_zx, train_zy, ridge=ridge, k=k)
  rho = held_out_correlations(cca, test_zx, test_zy)
  return {"held_out_total_correlation": float(rho.sum()),
          "held_out_top_correlation": float(rho.max()),
          "train_total_correlation": float(cca["rho"].sum())}
