"""CLIP ViT-B/16 on Conceptual Captions 3M held as img2dataset WebDataset shards, on a pod.

Prepare once (per host, or on shared storage): the shards are read as streams, bad samples counted.
Launch the same command on every host of a TPU pod slice (jax.distributed finds its peers), e.g.

    gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
      "cd mmjax && python train.py --config configs/cc3m_clip_b16.py --workdir /mnt/shared/cc3m_b16"

or on a SLURM GPU cluster with one task per host (srun python train.py ...). Each host reads its
own share of the records; checkpoints and metrics go to the workdir, which must be a path on
storage every host mounts at the same place (NFS, Filestore, Lustre, or a bucket through gcsfuse;
not a gs:// URL). Step by step: docs/guides/launch_tpu_pod.md and docs/guides/launch_slurm.md.
"""
import ml_collections

from configs import shapes_clip

SHARDS = "/data/cc3m/{00000..00331}.tar"


def get_config(variant: str = ""):
  c = shapes_clip.get_config(variant)
  c.dataset = ml_collections.ConfigDict(dict(
      name="image_text", data_dir="/data/tfds", image_size=224, train_split="train",
      eval_splits=(), builder_kwargs=dict(source=SHARDS, max_size=256)))
  c.model = ml_collections.ConfigDict(dict(
      preset="B/16", dtype="bfloat16", remat="none", scan=True, implementation="", image={},
      text={}))
  c.tokenizer, c.context_length = "clip", 77
  c.batch_size = 4096
  c.total_steps = 30 * 2_900_000 // 4096          # ~30 epochs of the ~2.9M pairs that survive
  c.lr, c.warmup_steps, c.weight_decay = 5e-4, 2000, 0.2
  c.loss_block_size = 0
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.log_every, c.checkpoint_every, c.keep_checkpoints = 100, 2000, 3
  c.worker_count = 16
  if variant == "tiny":  # the same code path on a CPU: tiny towers, a handful of steps
    c.model = shapes_clip.get_config("tiny").model
    c.dataset.image_size, c.context_length, c.tokenizer = 64, 32, "byte"
    c.batch_size, c.total_steps, c.worker_count = 32, 4, 0
  return c
