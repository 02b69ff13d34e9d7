"""CLIP ViT-B/16 on Conceptual Captions 3M held as img2dataset WebDataset shards, on a pod.

Nothing to prepare: the shards are streamed (the "webdataset" dataset). Each shard's member
offsets are indexed once, on first use, beside it (or under dataset.data_dir/shard_index if its
folder is read-only; set builder_kwargs.index_dir to shared storage then); bad samples are skipped
and counted. To index ahead, in 16 processes:

    python -m mmjax.data.webdataset "/data/cc3m/{00000..00331}.tar" --workers 16

Launch the same command on every host of a TPU pod slice (jax.distributed finds its peers), e.g.

    gcloud compute tpus tpu-vm ssh NAME --worker=all --command \
      "cd mmjax && python train.py --config configs/cc3m_clip_b16.py --workdir /mnt/shared/cc3m_b16"

or on a SLURM GPU cluster with one task per host (srun python train.py ...). Each host reads its
own share of the records; checkpoints and metrics go to the workdir, which must be a path on
storage every host mounts at the same place (NFS, Filestore, Lustre, or a bucket through gcsfuse;
not a gs:// URL). Step by step: docs/guides/launch_tpu_pod.md and docs/guides/launch_slurm.md.
"""
from configs import common

SHARDS = "/data/cc3m/{00000..00331}.tar"


def get_config(variant: str = ""):
  """variant "tiny": the same code path on a CPU, a handful of steps."""
  return common.web_clip(SHARDS, 30 * 2_900_000 // 4096, variant)   # ~30 epochs of ~2.9M pairs
