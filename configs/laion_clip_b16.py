"""CLIP ViT-B/16 on LAION-400M (img2dataset WebDataset shards) on a TPU pod or GPU cluster: the
OpenCLIP recipe's scale (global batch 32k, the chunked contrastive loss keeps the B x B logits off
every device).

    python train.py --config configs/laion_clip_b16.py --workdir /mnt/shared/laion_b16

The shards are streamed, nothing prepared; indexing LAION's 41,408 shards takes about a day of
one core, once: run `python -m mmjax.data.webdataset SHARDS --workers N` ahead, on several
machines with parts of the brace range.

Run the same command on every host, with the workdir on storage all hosts mount (see
configs/cc3m_clip_b16.py and docs/guides/launch_tpu_pod.md for launching on a pod / SLURM).
"""
from configs import common

SHARDS = "/data/laion400m/{00000..41407}.tar"


def get_config(variant: str = ""):
  """variant "tiny": the same code path on a CPU, a handful of steps."""
  c = common.web_clip(SHARDS, 32 * 400_000_000 // 32768, variant,   # 32 epochs of ~400M pairs
                      batch_size=32768)
  if variant != "tiny":
    c.loss_block_size = 4096
  return c
