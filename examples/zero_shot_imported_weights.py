"""Zero-shot classification with imported CLIP weights (Hugging Face, OpenAI or OpenCLIP).

    # real weights: a Hugging Face CLIP folder (save_pretrained), or a .safetensors / .bin / .pt
    # state dict, and CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz)
    python examples/zero_shot_imported_weights.py --weights ~/models/clip-vit-base-patch32 \\
        --bpe ~/models/bpe_simple_vocab_16e6.txt.gz

    # no download: writes a tiny random CLIP checkpoint and vocabulary to a temporary folder first
    python examples/zero_shot_imported_weights.py

The checkpoint is read by mmjax.evaluate.load.load_weights, as `eval.py --weights` does:
mmjax.convert.load_clip reads the architecture from the checkpoint (config.json, or the tensor
shapes of an OpenAI / OpenCLIP state dict), maps the weights onto an mmjax TwoTower and checks every
shape; the params are placed on the device mesh. Then, as in CLIP (Radford et al. 2021, Sec. 3.1.4),
each class name is written into prompt templates, the text embeddings of a class are averaged into
its classifier, and every image is assigned the class of highest cosine similarity
(mmjax.evaluate.classifier_weights, zero_shot_logits, accuracy).

The images are drawn here: a red, green or blue circle, square or triangle on a grey background, 9
classes. With real CLIP weights expect high accuracy; the tiny random checkpoint is at chance (1/9)
and only shows that the whole path runs. OpenAI's and OpenCLIP's state dicts do not record the
activation or the number of heads: for OpenCLIP's LAION models pass --act gelu.
"""
from __future__ import annotations

import argparse
import gzip
import pathlib
import tempfile

import flax.linen as nn
import jax
import numpy as np
from PIL import Image, ImageDraw

from mmjax import parallel
from mmjax.evaluate import accuracy, classifier_weights, zero_shot_logits
from mmjax.evaluate.embed import ImageTransform, apply_transform
from mmjax.evaluate.load import load_weights

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225)}
SHAPES = ("circle", "square", "triangle")
CLASS_NAMES = [f"{c} {s}" for c in COLOURS for s in SHAPES]
TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "a {}.")


def draw(colour: str, shape: str, rng: np.random.Generator, size: int = 224) -> np.ndarray:
  """(size, size, 3) uint8: one filled shape of `colour` at a random place on light grey."""
  image = Image.new("RGB", (size, size), (200, 200, 200))
  r = rng.uniform(0.15, 0.3) * size
  cx, cy = rng.uniform(r, size - r, 2)
  box = (cx - r, cy - r, cx + r, cy + r)
  pen = ImageDraw.Draw(image)
  if shape == "circle":
    pen.ellipse(box, fill=COLOURS[colour])
  elif shape == "square":
    pen.rectangle(box, fill=COLOURS[colour])
  else:
    pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=COLOURS[colour])
  return np.asarray(image)


# --- a tiny checkpoint, for trying this without downloading anything --------------------------

def write_tiny_vocabulary(folder: pathlib.Path) -> pathlib.Path:
  """A merges file in the format of CLIP's bpe_simple_vocab_16e6.txt.gz (a header line, then one
  'a b' merge per line) whose merges spell out every word of the prompts."""
  merges = []
  for word in sorted({w for t in TEMPLATES for name in CLASS_NAMES
                      for w in t.format(name).replace(".", " ").split()}):
    pieces = [*word[:-1], word[-1] + "</w>"]
    while len(pieces) > 1:
      pair = f"{pieces[0]} {pieces[1]}"
      if pair not in merges:
        merges.append(pair)
      pieces = [pieces[0] + pieces[1], *pieces[2:]]
  path = folder / "bpe_tiny.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
  return path


def write_tiny_checkpoint(folder: pathlib.Path, vocab_size: int, *,
                          use_transformers: bool = True) -> pathlib.Path:
  """A random CLIP in the Hugging Face layout: written by transformers.CLIPModel.save_pretrained
  when transformers (and torch) are installed and use_transformers, else by
  mmjax.convert.save_clip (the same layout)."""
  eot = vocab_size - 1                          # ClipTokenizer: sot and eot are the last two ids
  text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, max_position_embeddings=16, eos_token_id=eot,
              bos_token_id=eot - 1, pad_token_id=0, hidden_act="quick_gelu")
  vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, hidden_act="quick_gelu")
  out = folder / "tiny_clip"
  try:
    if not use_transformers:
      raise ImportError("use_transformers=False")
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError:
    from mmjax import convert  # pylint: disable=import-outside-toplevel
    arch = dict(embed_dim=16, image_size=32,
                image=dict(patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64,
                           act="quick_gelu"),
                text=dict(vocab_size=vocab_size, context_length=16, width=32, depth=2,
                          num_heads=2, mlp_dim=64, act="quick_gelu", eot_token_id=eot))
    model = convert.build_model(arch)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                    np.zeros((1, 16), int))
    params = jax.tree.map(np.asarray, nn.unbox(variables["params"]))  # drop logical axis names
    convert.save_clip(params, model, out, image_size=32)
    print(f"wrote a tiny random CLIP with mmjax.convert.save_clip to {out}")
    return out
  torch.manual_seed(0)
  config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
  transformers.CLIPModel(config).save_pretrained(out)
  print(f"wrote a tiny random CLIP with transformers {transformers.__version__} to {out}")
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--weights", help="CLIP checkpoint: a Hugging Face folder, .safetensors, "
                      ".bin or .pt (default: a tiny random one written to a temporary folder)")
  parser.add_argument("--bpe", help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: "
                      "$MMJAX_BPE_VOCAB or an installed open_clip; with no --weights, a tiny one)")
  parser.add_argument("--act", help="activation of OpenAI / OpenCLIP state dicts: quick_gelu "
                      "(OpenAI, the default) or gelu (OpenCLIP's LAION models)")
  parser.add_argument("--images_per_class", type=int, default=4)
  parser.add_argument("--tiny", action="store_true", help="2 images per class (for CI)")
  args = parser.parse_args(argv)
  if args.tiny:
    args.images_per_class = 2

  with tempfile.TemporaryDirectory() as tmp:
    weights, bpe = args.weights, args.bpe
    if weights is None:
      bpe = write_tiny_vocabulary(pathlib.Path(tmp))
      merges = len(gzip.open(bpe, "rt").read().strip().split("\n")) - 1
      weights = write_tiny_checkpoint(pathlib.Path(tmp), vocab_size=512 + merges + 2)

    mesh = parallel.make_mesh()                 # every device, batch split over 'data'
    kwargs = {"act": args.act} if args.act else {}
    model, params, tokenizer, image_size = load_weights(weights, mesh, bpe_path=bpe, **kwargs)
    print(f"loaded {weights}: image {image_size}px, patch {model.image_encoder.patch_size}, "
          f"width {model.image_encoder.width} / {model.text_encoder.width}, "
          f"embed {model.embed_dim}, vocabulary {model.text_encoder.vocab_size}")

    variables = {"params": params}
    encode_text = jax.jit(lambda tokens: model.apply(variables, tokens, method="encode_text"))
    encode_image = jax.jit(lambda images: model.apply(variables, images, method="encode_image"))

    # The zero-shot classifier: (C, E) unit vectors, one per class, from names x templates.
    weights_ce = classifier_weights(encode_text, tokenizer, CLASS_NAMES, TEMPLATES)

    rng = np.random.default_rng(0)
    transform = ImageTransform(image_size)     # resize + centre crop + CLIP's normalisation
    examples = [{"image": draw(*name.split(), rng), "label": label}
                for label, name in enumerate(CLASS_NAMES) for _ in range(args.images_per_class)]
    images = np.stack([apply_transform(transform, e)["image"] for e in examples])
    labels = np.asarray([e["label"] for e in examples])

    logits = zero_shot_logits(encode_image(images), weights_ce)      # (N, E) @ (E, C) -> (N, C)
    top1 = accuracy(logits, labels)
    for e, row in list(zip(examples, np.asarray(logits)))[::args.images_per_class]:
      print(f"  {CLASS_NAMES[e['label']]:15s} -> {CLASS_NAMES[int(np.argmax(row))]}")
    print(f"zero-shot top-1 on {len(labels)} drawn images, {len(CLASS_NAMES)} classes: "
          f"{top1:.3f} (chance {1 / len(CLASS_NAMES):.3f})")
    return {"top1": top1}


if __name__ == "__main__":
  main()
