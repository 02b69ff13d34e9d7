"""CLIP ViT-B/16 on LAION-400M (img2dataset WebDataset shards) on a TPU pod or GPU cluster: the
OpenCLIP recipe's scale (global batch 32k, the chunked contrastive loss keeps the B x B logits off
every device).

    python train.py --config configs/laion_clip_b16.py --workdir /mnt/shared/laion_b16

Run the same command on every host, with the workdir on storage all hosts mount (see
configs/cc3m_clip_b16.py and docs/guides/launch_tpu_pod.md for launching on a pod / SLURM).
"""
from configs import cc3m_clip_b16

SHARDS = "/data/laion400m/{00000..41407}.tar"


def get_config(variant: str = ""):
  c = cc3m_clip_b16.get_config(variant)
  c.dataset.builder_kwargs = dict(source=SHARDS, max_size=256)
  if variant != "tiny":
    c.batch_size = 32768
    c.total_steps = 32 * 400_000_000 // 32768    # 32 epochs of ~400M pairs
    c.lr, c.warmup_steps = 5e-4, 2000
    c.loss_block_size = 4096
    c.mesh.fsdp = 1
  return c
