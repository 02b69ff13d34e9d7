"""Unaligned multimodal sequences (mmjax.data.sequences): audio, video and word streams at
different rates whose label needs the tone (audio, video) and the polarity (words) of the same
event. One config per model, chosen by the variant:

    python train.py --config configs/sequences.py:mult --workdir /tmp/seq_mult
    python train.py --config configs/sequences.py:early_dtw,aligned --workdir /tmp/seq_early
    python eval.py --config configs/sequences.py:mult --workdir /tmp/seq_mult

variant = MODEL[,aligned][,dropout][,tiny]:
  MODEL    unimodal_audio, unimodal_video, unimodal_words, late, early (no alignment: time-stretch
           only), early_dtw, early_ot, tfn, lmf, mult, mtag (MODELS)
  aligned  the same examples with the streams resampled to the event clock
  dropout  training marks each stream absent at rate 0.2 (the learned mask token then stands for
           a missing stream at test time)
  tiny     a few steps on little data, for tests
Evaluated after the last step: accuracy (and the confusion in eval.py), accuracy with each stream
absent (mask token and zeros), EMAP and modality contribution of words vs audio + video.
Train with fewer streams: --config.model.streams='("audio", "words")'. Positions (StreamEmbed):
model.positions "step" (the step index; every model but MTAG) or "time" (the step's normalised
time, [0, 1] spanning model.time_scale = 12 units, the length of the event clock; MTAG).
"""
from configs import common

MODELS = {
    "unimodal_audio": dict(type="unimodal", streams=("audio",)),
    "unimodal_video": dict(type="unimodal", streams=("video",)),
    "unimodal_words": dict(type="unimodal", streams=("words",)),
    "late": dict(type="late"),
    "early": dict(type="early", align="none"),
    "early_dtw": dict(type="early", align="dtw"),
    "early_ot": dict(type="early", align="ot"),
    "tfn": dict(type="tfn"),
    "lmf": dict(type="lmf"),
    "mult": dict(type="mult"),
    # two graph layers (the first one's attention prunes); positions on the normalised time
    # axis, the clock of MTAG's graph nodes and edge types (test accuracy 0.67-0.81 over four
    # seeds against 0.65-0.67 with step positions); one attention head: the GAT scores cost
    # B x N x N x heads, so 121 ms a step against 200 at four heads on the CPU, and test
    # accuracy 0.68-0.94 over four seeds against 0.67-0.81 (BENCHMARKS.md)
    "mtag": dict(type="mtag", depth=2, positions="time", num_heads=1),
}
FLAGS = ("aligned", "dropout", "tiny")


def _parse(variant: str) -> tuple[str, set[str]]:
  parts = [p for p in variant.split(",") if p]
  model = parts.pop(0) if parts and parts[0] in MODELS else "mult"
  if set(parts) - set(FLAGS):
    raise ValueError(f"unknown config variant {variant!r}; expected MODEL[,aligned][,dropout]"
                     f"[,tiny] with MODEL one of {sorted(MODELS)} (default mult)")
  return model, set(parts)


def get_config(variant: str = ""):
  """variant: MODEL[,aligned][,dropout][,tiny] (module docstring); default "mult"."""
  model, flags = _parse(variant)
  c = common.base("sequences", batch_size=64, total_steps=1500, lr=3e-3, warmup_steps=100,
                  weight_decay=1e-4, log_every=100, checkpoint_every=500)
  c.dataset = common.dataset("sequences", eval_splits=("test",),
                             builder_kwargs=dict(aligned="aligned" in flags, num_train=32000),
                             cache=True)
  c.dataset.stream_dropout = 0.2 if "dropout" in flags else 0.0
  c.model = dict(type="mult", streams=("audio", "video", "words"), width=32, depth=1,
                 num_heads=4, num_classes=2, align="none", reference="words",
                 cost="sqeuclidean", keep_edges=0.5, positions="step", time_scale=12.0)
  c.model.update(MODELS[model])
  c.eval_batch_size = 250
  if "tiny" in flags:
    c.dataset.builder_kwargs.update(num_train=128, num_validation=32, num_test=32)
    c.model.update(width=16, depth=1, num_heads=2)
    common.tiny(c, batch_size=32)
  return c
