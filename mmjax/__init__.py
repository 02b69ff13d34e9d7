"""mmjax: multimodal alignment and representation learning in JAX.

`import mmjax` loads the two dependency-light subpackages, `mmjax.losses` and `mmjax.similarity`;
import the others by name (`from mmjax import models`, `from mmjax.evaluate import ...`).

| subpackage | what it holds |
|---|---|
| `mmjax.losses` | alignment objectives as pure functions of (B, D) arrays: CLIP, SigLIP, hinge, NT-Xent, SupCon, blockwise and ring variants, deep CCA and relatives, relational, factorised |
| `mmjax.similarity` | pairwise similarities and kernels, centred kernel alignment |
| `mmjax.models` | Flax Linen modules: ViT, text transformer, MLP, the CLIP / SigLIP TwoTower, fusion, coordination, fission, cross-modal attention, autoencoders |
| `mmjax.data` | datasets by name with their TFDS builders (shapes, two-view digits, your own image-text pairs), the input pipeline, tokenizers |
| `mmjax.parallel` | the ('data', 'fsdp', 'tensor') device mesh, logical axis rules, shardings |
| `mmjax.tasks` | one module per training task (clip, siglip, dcca, dccae, bimodal_ae, fusion), looked up by name |
| `mmjax.train` | train state and optimizer, the sharded train step, checkpoints, metric writers (train.py) |
| `mmjax.evaluate` | evaluators named in the config (zero-shot, retrieval, probes, correlation, transfer, arithmetic), reports (eval.py) |
| `mmjax.align` | explicit alignment: optimal transport, matching, DTW and soft-DTW, segmentation, attention |
| `mmjax.quantify` | EMAP and modality contribution: does a model use both modalities and their interactions? |
| `mmjax.convert` | import and export OpenAI / OpenCLIP / Hugging Face CLIP weights |

Guides and launch guides: docs/index.md in the repository; runnable scripts: examples/.
"""
from mmjax import losses, similarity

__version__ = "0.1.0"
__all__ = ["losses", "similarity", "__version__"]
