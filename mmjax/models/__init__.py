"""Flax Linen modules: encoders, the CLIP/SigLIP two-tower model, and the multimodal representation
modules (fusion, coordination, fission, cross-modal attention, autoencoders).

bf16 compute with fp32 params (dtype / param_dtype); every parameter carries logical axis names
(mmjax.parallel.LOGICAL_RULES maps them onto the device mesh).
"""
from mmjax.models.autoencoder import DCCAE, BimodalAutoencoder
from mmjax.models.cnn import ConvNet
from mmjax.models.common import LayerNorm
from mmjax.models.coordination import GatedCoordination
from mmjax.models.cross_attention import (CoAttentionBlock, CrossModalBlock, CrossModalTransformer,
                                          SingleStreamTransformer)
from mmjax.models.fission import FactorizedHeads, FactorizedOutput
from mmjax.models.fusion import (MAG, AdditiveFusion, BilinearFusion, ConcatFusion, FiLM,
                                 GatedFusion, LateFusion, LowRankFusion, ModalityShift,
                                 MultiplicativeFusion, NonlinearFusion, PolynomialFusion,
                                 TensorFusion, film, polynomial_features, tensor_fusion)
from mmjax.models.mlp import MlpEncoder
from mmjax.models.text import TextTransformer
from mmjax.models.transformer import Attention, Block, Encoder, Mlp
from mmjax.models.two_tower import PRESETS, TwoTower, TwoTowerOutput, image_encoder, two_tower
from mmjax.models.vit import MapHead, ViT
from mmjax.similarity import l2_normalize  # re-exported for users; defined in mmjax.similarity

__all__ = [
    "Attention", "Block", "Encoder", "LayerNorm", "Mlp", "MlpEncoder", "TextTransformer", "ViT",
    "MapHead", "ConvNet", "TwoTower", "TwoTowerOutput", "two_tower", "image_encoder", "PRESETS",
    "l2_normalize",
    "ConcatFusion", "NonlinearFusion", "LateFusion", "AdditiveFusion", "MultiplicativeFusion",
    "BilinearFusion", "TensorFusion", "tensor_fusion", "LowRankFusion", "PolynomialFusion",
    "polynomial_features", "GatedFusion", "ModalityShift", "MAG", "FiLM", "film",
    "GatedCoordination", "FactorizedHeads", "FactorizedOutput",
    "CoAttentionBlock", "CrossModalBlock", "CrossModalTransformer", "SingleStreamTransformer",
    "DCCAE", "BimodalAutoencoder",
]
