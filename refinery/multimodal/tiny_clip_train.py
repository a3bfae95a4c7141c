"""Train the project's own small CLIP on generated scenes, so CLIP scores mean something offline.

No pretrained CLIP weights can be downloaded here, yet the image–text filter and the keyframe
selector need a model whose similarities track what an image shows. This module trains an
open_clip ViT (2 layers × 128 wide, 32-pixel input, 8-pixel patches; a 2-layer text transformer
over open_clip's own BPE tokenizer) contrastively on scenes from
:mod:`refinery.multimodal.synthetic`: coloured shapes, counts, positions on varied backgrounds,
with templated captions. Captions that happen to describe another image of the batch count as
matches too (soft targets), so the loss does not push apart pairs that are in fact matched.

The result is an ordinary open_clip checkpoint in open_clip's ``local-dir`` layout
(``open_clip_config.json`` with ``model_cfg`` and ``preprocess_cfg``, plus
``open_clip_model.safetensors``), loaded through the same local-checkpoint path as a real
ViT-B-32 file. ``eval.json`` beside it holds the held-out ROC AUC of matched against mismatched
pairs (target ≥ 0.9) and the cosine distributions of both.

    python -m refinery.multimodal.tiny_clip_train [--out DIR] [--force]

The output folder is ``<out>/<config hash>/``; a finished folder is reused, so running it again
is instant. Default ``<repo>/.tools/models/tiny-clip/`` (``$REFINERY_TINY_CLIP_DIR`` overrides).
A few minutes on 2 CPU cores, once per machine: a finished folder is also kept in the tool cache
(:mod:`refinery.tool_cache`), from which another clone copies it instead of training.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from refinery import tool_cache
from refinery.multimodal import synthetic

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CLIP_ENV = "REFINERY_TINY_CLIP_DIR"
DEFAULT_ROOT = REPO_ROOT / ".tools" / "models" / "tiny-clip"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
EVAL_FILE = "eval.json"
TRAIN_COMMAND = ".venv/bin/python -m refinery.multimodal.tiny_clip_train"
CACHE_KIND = "tiny-clip"  # its folder in the machine-wide tool cache (refinery/tool_cache.py)
# Bump when the generator or the training loop changes what a config produces.
RECIPE_VERSION = 1
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyClipConfig:
    """Everything that determines the trained weights; its hash names the output folder."""

    embed_dim: int = 128
    image_size: int = 32
    patch_size: int = 8
    vision_layers: int = 2
    vision_width: int = 128
    vision_head_width: int = 32
    context_length: int = 24
    text_layers: int = 2
    text_width: int = 128
    text_heads: int = 4
    train_images: int = 16_000
    eval_images: int = 1_500
    render_sizes: tuple[int, ...] = (32, 48, 64, 96, 128)
    batch_size: int = 128
    steps: int = 1_200
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 20240611
    recipe: int = RECIPE_VERSION

    def model_cfg(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "head_width": self.vision_head_width,
                "patch_size": self.patch_size,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }

    def preprocess_cfg(self) -> dict:
        return {
            "size": self.image_size,
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        }

    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=list).encode()
        return hashlib.sha256(payload).hexdigest()[:12]


DEFAULT_CONFIG = TinyClipConfig()


def models_root() -> Path:
    return Path(os.environ.get(TINY_CLIP_ENV) or DEFAULT_ROOT).expanduser()


def default_checkpoint_dir(root: Path | None = None, config: TinyClipConfig = DEFAULT_CONFIG) -> Path:
    """Where the tiny CLIP of ``config`` lives (whether or not it has been built)."""
    return (root or models_root()) / config.digest()


def is_built(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, EVAL_FILE))


# -- what the model knows -----------------------------------------------------------------------
@functools.cache
def generated_captions() -> frozenset[str]:
    """Every caption :func:`synthetic.caption_for` can write (6,912 of them): templates × subject
    (colour, shape, count) × optional position (single objects) × optional background."""
    out = set()
    for colour in synthetic.COLOURS:
        for shape in synthetic.SHAPES:
            for count in (1, 2, 3):
                subject = synthetic.subject_phrase(colour, shape, count)
                positions = [""] + (
                    [" " + synthetic.POSITION_PHRASES[p] for p in synthetic.POSITIONS] if count == 1 else []
                )
                backgrounds = [""] + [f" on a {w} background" for w in synthetic.BACKGROUND_WORDS.values()]
                for position in positions:
                    for background in backgrounds:
                        for template in synthetic.TEMPLATES:
                            out.add(template.format(subject=subject + position + background))
    return frozenset(out)


def is_generated_caption(text: object) -> bool:
    """Whether a caption or question is one the scene generator writes (what the tiny CLIP learned).
    Case and surrounding whitespace aside, it must be exactly one of :func:`generated_captions`."""
    return isinstance(text, str) and " ".join(text.lower().split()) in generated_captions()


# -- data ---------------------------------------------------------------------------------------
def _render_pool(
    n: int, rng: random.Random, config: TinyClipConfig, preprocess
) -> tuple[list[synthetic.Scene], np.ndarray]:
    """Scenes and their preprocessed pixels (uint8 after resize and crop, normalised per batch).

    Each image is rendered at a random size and aspect (square or 4:3) and goes through the
    model's own resize/crop, so the model sees the same resampling as at inference on images and
    video frames of any size.
    """
    scenes, pixels = [], np.empty((n, config.image_size, config.image_size, 3), dtype=np.uint8)
    for i in range(n):
        scene = synthetic.random_scene(rng)
        size = rng.choice(config.render_sizes)
        width, height = (size, size) if rng.random() < 0.7 else (size * 4 // 3, size)
        image = synthetic.render(scene, width, height)
        pixels[i] = np.asarray(preprocess(image))
        scenes.append(scene)
    return scenes, pixels


def _resize_crop(size: int):
    """The geometric part of open_clip's eval transform (normalisation happens on tensors)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])


def _normalise(pixels: np.ndarray, device: str = "cpu"):
    import torch

    x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann–Whitney U)."""
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _quantiles(values: np.ndarray) -> dict:
    return {
        "mean": round(float(values.mean()), 4),
        "p05": round(float(np.quantile(values, 0.05)), 4),
        "p50": round(float(np.quantile(values, 0.5)), 4),
        "p95": round(float(np.quantile(values, 0.95)), 4),
    }


# -- training -----------------------------------------------------------------------------------
def build_model(config: TinyClipConfig):
    import open_clip

    return open_clip.CLIP(**config.model_cfg())


def _encode(model, tokenizer, pixels: np.ndarray, texts: list[str], batch: int = 500):
    import torch

    images, captions = [], []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            images.append(model.encode_image(_normalise(pixels[start : start + batch]), normalize=True))
        for start in range(0, len(texts), batch):
            captions.append(model.encode_text(tokenizer(texts[start : start + batch]), normalize=True))
    return torch.cat(images).numpy(), torch.cat(captions).numpy()


def evaluate(model, tokenizer, scenes: list[synthetic.Scene], pixels: np.ndarray, seed: int) -> dict:
    """Held-out ROC AUC of matched vs mismatched pairs (random and one-attribute-off captions)."""
    rng = random.Random(seed)
    matched = [synthetic.caption_for(s, rng).text for s in scenes]
    mismatched = [synthetic.mismatched_caption(s, rng).text for s in scenes]
    hard = [synthetic.mismatched_caption(s, rng, hard=True).text for s in scenes]
    image_emb, text_emb = _encode(model, tokenizer, pixels, matched + mismatched + hard)
    n = len(scenes)
    cos_matched = (image_emb * text_emb[:n]).sum(1)
    cos_mismatched = (image_emb * text_emb[n : 2 * n]).sum(1)
    cos_hard = (image_emb * text_emb[2 * n :]).sum(1)
    return {
        "pairs": n,
        "roc_auc": round(roc_auc(cos_matched, cos_mismatched), 4),
        "roc_auc_one_attribute_changed": round(roc_auc(cos_matched, cos_hard), 4),
        "matched_cosine": _quantiles(cos_matched),
        "mismatched_cosine": _quantiles(cos_mismatched),
        "one_attribute_changed_cosine": _quantiles(cos_hard),
        "matched_above_0.28": round(float((cos_matched >= 0.28).mean()), 4),
        "mismatched_above_0.28": round(float((cos_mismatched >= 0.28).mean()), 4),
    }


def train(config: TinyClipConfig = DEFAULT_CONFIG, log=print) -> tuple[object, dict]:
    """Train and evaluate; returns the model and the evaluation (nothing written)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    geometry = _resize_crop(config.image_size)
    scenes, pixels = _render_pool(config.train_images, rng, config, geometry)
    eval_scenes, eval_pixels = _render_pool(
        config.eval_images, random.Random(config.seed + 1), config, geometry
    )
    log(f"tiny-clip: rendered {len(scenes)} training and {len(eval_scenes)} held-out scenes "
        f"in {time.perf_counter() - started:.1f}s")  # fmt: skip

    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config.context_length)
    model = build_model(config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    token_cache: dict[str, object] = {}

    def tokens(texts: list[str]):
        missing = [t for t in set(texts) if t not in token_cache]
        if missing:
            for text, row in zip(missing, tokenizer(missing), strict=True):
                token_cache[text] = row
        return torch.stack([token_cache[t] for t in texts])

    batch_rng = np.random.default_rng(config.seed)
    model.train()
    train_started = time.perf_counter()
    for step in range(config.steps):
        idx = batch_rng.choice(len(scenes), size=config.batch_size, replace=False)
        captions = [synthetic.caption_for(scenes[i], rng) for i in idx]
        # target[i, j]: caption j is true of image i (the batch holds many same-attribute scenes).
        target = torch.tensor(
            [[synthetic.describes(c, scenes[i]) for c in captions] for i in idx], dtype=torch.float32
        )
        images = _normalise(pixels[idx])
        image_features, text_features, logit_scale = model(images, tokens([c.text for c in captions]))
        logits = logit_scale * image_features @ text_features.T
        loss = (
            -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
            - (target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
        ) / 2
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == config.steps - 1:
            log(
                f"tiny-clip: step {step + 1}/{config.steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.perf_counter() - train_started:.0f}s)"
            )
    model.eval()
    evaluation = evaluate(model, tokenizer, eval_scenes, eval_pixels, config.seed + 2)
    evaluation.update(
        train_seconds=round(time.perf_counter() - train_started, 1),
        total_seconds=round(time.perf_counter() - started, 1),
        torch_threads=torch.get_num_threads(),
    )
    return model, evaluation


def save(model, evaluation: dict, config: TinyClipConfig, folder: Path) -> Path:
    """Write the local-dir checkpoint atomically: a temporary folder renamed into place."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(temp / WEIGHTS_FILE))
    (temp / CONFIG_FILE).write_text(
        json.dumps(
            {"model_cfg": config.model_cfg(), "preprocess_cfg": config.preprocess_cfg()},
            indent=1,
            sort_keys=True,
        )
    )
    (temp / EVAL_FILE).write_text(
        json.dumps(
            {"config": asdict(config), "config_hash": config.digest(), **evaluation}, indent=1, default=list
        )
    )
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(temp, folder)
    return folder


def build(
    root: Path | None = None,
    config: TinyClipConfig = DEFAULT_CONFIG,
    force: bool = False,
    log=print,
    shared_cache: bool = False,
) -> Path:
    """The checkpoint folder for ``config``, trained and saved unless it already exists.
    ``shared_cache`` (what setup asks for): copy it from the machine-wide tool cache when another
    clone trained it, and keep a copy there after training."""
    folder = default_checkpoint_dir(root, config)
    if is_built(folder) and not force:
        log(f"tiny-clip: already built at {folder} ({_auc_line(folder)})")
        return folder
    if shared_cache and not force and tool_cache.restore(CACHE_KIND, config.digest(), folder, is_built):
        log(f"tiny-clip: copied from the tool cache to {folder} ({_auc_line(folder)})")
        return folder
    model, evaluation = train(config, log)
    save(model, evaluation, config, folder)
    log(f"tiny-clip: saved {folder}")
    shared = tool_cache.store(CACHE_KIND, config.digest(), folder) if shared_cache else None
    if shared is not None:
        log(f"tiny-clip: kept a copy for other clones in {shared}")
    log(f"tiny-clip: {_auc_line(folder)}")
    return folder


def _auc_line(folder: Path) -> str:
    info = json.loads((folder / EVAL_FILE).read_text())
    return (
        f"held-out ROC AUC matched vs mismatched {info['roc_auc']:.4f} (target ≥ 0.9), "
        f"one attribute changed {info['roc_auc_one_attribute_changed']:.4f}; "
        f"matched cosine median {info['matched_cosine']['p50']:.3f}, "
        f"mismatched {info['mismatched_cosine']['p50']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"root folder (default {DEFAULT_ROOT})")
    parser.add_argument("--force", action="store_true", help="train again even if the folder exists")
    parser.add_argument("--steps", type=int, default=None, help="override the number of steps (new hash)")
    args = parser.parse_args(argv)
    config = DEFAULT_CONFIG if args.steps is None else TinyClipConfig(steps=args.steps)
    folder = build(args.out, config, force=args.force, shared_cache=True)
    info = json.loads((folder / EVAL_FILE).read_text())
    if info["roc_auc"] < 0.9:
        print(f"tiny-clip: ROC AUC {info['roc_auc']:.4f} is below the 0.9 target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
