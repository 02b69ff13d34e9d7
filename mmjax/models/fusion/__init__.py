"""Fusion of modality feature vectors: xs = [x_1 (B, d_1), ..., x_M (B, d_M)] -> one representation.

  simple   ConcatFusion          early fusion: concat, then a Dense (optionally an MLP)
           NonlinearFusion       concat, then an MLP with at least one nonlinear hidden layer
           LateFusion            decision level: a head per modality, mean (or learned weights) of
                                 the logits
           AdditiveFusion        sum_i W_i x_i + b
           MultiplicativeFusion  prod_i (W_i x_i + b_i)
           BilinearFusion        z_k = x_1^T W_k x_2 + b_k                        (two modalities)
  tensor   TensorFusion          TFN (Zadeh et al. 2017): flattened outer product of [1; x_i], then
                                 a Dense
           LowRankFusion         LMF (Liu et al. 2018): TFN with a rank-r CP weight, never built in
                                 full
           PolynomialFusion      PTP (Hou et al. 2019): order-P polynomial of [1; x_1; ...; x_M], CP
                                 weight
  gated    GatedFusion           GMU (Arevalo et al. 2017): gated sum of tanh projections; returns
                                 (h, gates)
           ModalityShift (MAG)   Rahman et al. 2020: a primary embedding shifted by gated other
                                 modalities
           FiLM, film            Perez et al. 2018: gamma(c) * x + beta(c)

Every module checks its inputs (a list or tuple of (batch, features) arrays with one batch size,
mmjax.models.common.check_modalities) and raises ValueError naming the bad value. Compute runs in
`dtype` (bf16 on accelerators), params are `param_dtype` (fp32), and every parameter carries logical
axis names (mmjax.parallel.LOGICAL_RULES): 'embed' for input widths, 'mlp' for hidden widths, 'proj'
for fused outputs, 'classes' for LateFusion logits, 'modality' for per-modality axes and None for CP
ranks (replicated). Every name is importable from here, e.g. mmjax.models.fusion.TensorFusion.
"""
from mmjax.models.fusion.gated import GATES, MAG, FiLM, GatedFusion, ModalityShift, film
from mmjax.models.fusion.simple import (WEIGHTINGS, AdditiveFusion, BilinearFusion, ConcatFusion,
                                        LateFusion, MultiplicativeFusion, NonlinearFusion)
from mmjax.models.fusion.tensor import (LowRankFusion, PolynomialFusion, TensorFusion,
                                        polynomial_features, tensor_fusion)

__all__ = [
    "ConcatFusion", "NonlinearFusion", "LateFusion", "AdditiveFusion", "MultiplicativeFusion",
    "BilinearFusion", "TensorFusion", "tensor_fusion", "LowRankFusion", "PolynomialFusion",
    "polynomial_features", "GatedFusion", "ModalityShift", "MAG", "FiLM", "film",
]
