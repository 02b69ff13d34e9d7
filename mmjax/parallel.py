"""Device mesh, logical axis rules and shardings for params and batches.

Modules annotate every parameter with logical axis names (flax.linen.with_logical_partitioning); the
rules below map those names onto the mesh axes ('data', 'fsdp', 'tensor'):

  batch  -> ('data', 'fsdp')   the batch is split over every data-parallel device
  embed  -> 'fsdp'             params are sharded over fsdp (ZeRO-3 style), gathered per layer by XLA
  mlp, heads, vocab -> 'tensor'  Megatron-style tensor parallelism
  everything else (kv, patch, proj, layers, length, ...) is replicated.

Mesh axes are AxisType.Auto: jax.make_mesh defaults to Explicit since jax 0.9, which turns Flax's
logical constraints into asserts (DESIGN.md).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("patch", None),
    ("proj", None),
    ("layers", None),
    ("length", None),
    ("classes", None),
    ("modality", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with AxisType.Auto axes; one size may be -1 (the rest).

  Raises UserError naming the sizes when they do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh sizes (data, fsdp, tensor) must be positive with at most one -1, got "
                     f"{tuple(sizes)}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise UserError(f"mesh sizes {tuple(sizes)} do not divide the {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise UserError(f"mesh sizes (data, fsdp, tensor) = {tuple(sizes)} need {int(np.prod(sizes))} "
                     f"devices, but {len(devices)} are available")
  auto = (jax.sharding.AxisType.Auto,) * 3
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Sharding of a batch-major array: the leading axis split over ('data', 'fsdp')."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of an array held whole by every device of the mesh (P())."""
  return NamedSharding(mesh, P())


def logical_shardings(abstract_tree, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a tree whose leaves may be nn.LogicallyPartitioned (e.g. jax.eval_shape of
  model.init); unannotated leaves are replicated. A dimension that its mesh axes do not divide
  (e.g. a 259-token vocabulary over tensor=2) is replicated instead of failing."""
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_tree), mesh, rules)
  shapes = jax.tree.map(lambda x: x.shape, nn.unbox(abstract_tree))
  return jax.tree.map(lambda sh, shape: NamedSharding(mesh, _fit(sh.spec, shape, mesh)),
                      shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding))


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """spec with every entry whose mesh axes do not divide that dimension replaced by None."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = int(np.prod([mesh.shape[a] for a in names]))
    fitted.append(axes if dim % size == 0 else None)
  return P(*fitted)


def init_sharded(init_fn, mesh: Mesh, *args, rules=LOGICAL_RULES):
  """Runs init_fn(*args) under jit with its outputs sharded by their logical names.

  Returns (variables with the nn.LogicallyPartitioned boxes removed, their shardings): every
  parameter is created directly on its shard, never whole on one device.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = logical_shardings(abstract, mesh, rules)
  # No logical_axis_rules context here: out_shardings places every parameter, and Flax's DenseGeneral
  # reshapes its kernel inside init, where a rules-aware unbox would constrain the wrong rank.
  variables = jax.jit(init_fn, out_shardings=shardings)(*args)
  return nn.unbox(variables), nn.unbox(shardings)
