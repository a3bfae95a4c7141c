"""Loading an open_clip model from local files only, once per process, and embedding with it.

Where the weights come from, one of:

- ``checkpoint`` = a folder in open_clip's ``local-dir`` layout (``open_clip_config.json`` with
  ``model_cfg``/``preprocess_cfg`` and the weights): what ``tiny_clip_train`` writes, and what
  ``huggingface-cli download`` of an open_clip repository gives;
- ``checkpoint`` = a weights file (``.pt``, ``.pth``, ``.bin``, ``.safetensors``; a state dict,
  ``{"state_dict": ...}`` or a TorchScript archive such as OpenAI's ``ViT-B-32.pt``) with
  ``model_name`` the architecture: a built-in open_clip name (``ViT-B-32``), an open_clip model
  config JSON, or empty to read ``open_clip_config.json`` beside the file. A TorchScript archive is
  OpenAI's own format: only its weights are read (``torch.jit.load``, never run; open_clip's own
  loader refuses such files under torch ≥ 2.6), and its architecture is built with QuickGELU, as
  OpenAI trained it, whatever ``model_name`` says;
- ``pretrained`` = an open_clip tag (``openai``, ``laion2b_s34b_b79k``…) with ``model_name``: used
  only when open_clip's cache already holds its file. Nothing is ever downloaded: a missing file
  is an error that names the file and how to provide it.

``bundled:tiny-clip`` (the default) is the project's own small CLIP, trained on generated scenes
by ``python -m refinery.multimodal.tiny_clip_train``: a 32-pixel model that knows coloured shapes
and the captions of its generator, nothing else. A stage that scores other data with it says so
(:func:`synthetic_domain_warning`). Embeddings are L2-normalised float32, so a dot product is the
cosine similarity CLIP scores are made of.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refinery.models.device import Compute, resolve_device, use_fp16
from refinery.models.oom import encode_halving
from refinery.multimodal import tiny_clip_train

BUNDLED_TINY_CLIP = "bundled:tiny-clip"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class ClipWeightsMissing(FileNotFoundError):
    """The weights the configuration names are not on this machine (and are never downloaded)."""


@dataclass(frozen=True)
class ClipSource:
    """What to load, resolved to files: a description for provenance and the UI."""

    name: str  # a readable name: "tiny-clip@<hash>", "ViT-B-32 (openai)", "ViT-B-32 @ /path.pt"
    builtin: str | None  # an open_clip architecture name, when the architecture is a built-in one
    model_cfg: dict | None  # the architecture, when it comes from a config file
    preprocess_cfg: dict
    weights: Path
    quick_gelu: bool = False  # OpenAI's weights were trained with QuickGELU

    def key(self) -> str:
        return json.dumps(
            [
                self.name,
                self.builtin,
                self.model_cfg,
                self.preprocess_cfg,
                str(self.weights),
                self.quick_gelu,
            ],
            sort_keys=True,
            default=str,
        )


def calibrated_threshold(weights: Path) -> float | None:
    """The cosine cut for a model trained by ``tiny_clip_train``: the 95th percentile of its held-out
    mismatched pairs (so about 5% of mismatches pass while nearly every match does). CLIP scales
    differ by model; for weights without such an evaluation there is no calibrated cut."""
    evaluation = Path(weights).parent / tiny_clip_train.EVAL_FILE
    if not evaluation.is_file():
        return None
    p95 = json.loads(evaluation.read_text()).get("mismatched_cosine", {}).get("p95")
    return None if p95 is None else round(float(p95), 2)


def trained_on_generated_scenes(weights: Path) -> bool:
    """Whether these weights are a ``tiny_clip_train`` model (its evaluation file sits beside them),
    however the checkpoint was named: the bundled default, its folder, or its weights file."""
    evaluation = Path(weights).parent / tiny_clip_train.EVAL_FILE
    try:
        return "config_hash" in json.loads(evaluation.read_text())
    except (OSError, ValueError):
        return False


GENERATED_SHARE = 0.9  # share of generator-grammar texts above which a source counts as the bundled sample
REAL_CLIP_HOWTO = (
    "Configure a real CLIP on the clip resource: checkpoint=<path to OpenAI's ViT-B-32.pt> with "
    "model_name='ViT-B-32-quickgelu', or model_name='ViT-B-32' with pretrained='openai' (or another "
    "open_clip tag) when open_clip's cache already holds its file; weights are never downloaded."
)


def synthetic_domain_warning(
    stage: str, texts_in_domain: int, texts: int, what: str = "captions"
) -> str | None:
    """The warning a stage gives when the tiny CLIP scores texts its generator does not write.

    A source counts as the project's own sample when at least 90% of its texts are sentences of
    the scene generator's caption grammar (:func:`tiny_clip_train.is_generated_caption`): exact,
    independent of file names or folder markers, and what the model was trained on. Real captions
    and questions virtually never match it exactly.
    """
    if texts == 0 or texts_in_domain >= GENERATED_SHARE * texts:
        return None
    return (
        f"{stage}: scored with the bundled tiny CLIP, a 32-pixel model trained only on generated coloured "
        f"shapes, but {texts - texts_in_domain} of {texts} {what} ({1 - texts_in_domain / texts:.0%}) are "
        "not of the kind it was trained on: its scores are meaningless for real photos and text, and "
        f"anything selected or filtered by them is arbitrary. {REAL_CLIP_HOWTO}"
    )


def _offline() -> None:
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(flag, "1")


def tiny_clip_missing_message(folder: Path) -> str:
    return (
        f"the project's tiny CLIP is not built: no {tiny_clip_train.WEIGHTS_FILE} in {folder}. Build it once "
        f"with `{tiny_clip_train.TRAIN_COMMAND}` (a few minutes on 2 CPU cores; scripts/setup.sh runs it), "
        "or point the clip resource's `checkpoint` at a local open_clip checkpoint (e.g. OpenAI's ViT-B-32 "
        "file with model_name='ViT-B-32-quickgelu'). Weights are never downloaded."
    )


def _read_config_json(path: Path) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) from open_clip's local-dir config or a bare model config."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read open_clip model config {path}: {err}") from err
    model_cfg = data.get("model_cfg", data)
    if not isinstance(model_cfg, dict) or "vision_cfg" not in model_cfg or "text_cfg" not in model_cfg:
        raise ValueError(f"{path} is not an open_clip model config (needs vision_cfg and text_cfg)")
    return model_cfg, dict(data.get("preprocess_cfg", {}))


def _weights_in_dir(folder: Path) -> Path:
    preferred = [
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "open_clip_pytorch_model.pth",
        "model.safetensors",
        "pytorch_model.bin",
    ]
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    raise ClipWeightsMissing(
        f"no open_clip weights in {folder}: expected one of {preferred}"
        + (f" (found several: {[p.name for p in found]}; name the file instead)" if found else "")
    )


def _cached_tag_file(model_name: str, tag: str, cache_dir: str) -> Path:
    """The file open_clip would download for (model, tag), if its cache already holds it."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise ValueError(
            f"{tag!r} is not an open_clip pretrained tag of {model_name!r}; known tags: "
            f"{open_clip.list_pretrained_tags_by_model(model_name)}. For a local file, set `checkpoint`."
        )
    if cfg.get("file"):
        candidates = [Path(cfg["file"])]
        source = cfg["file"]
    else:
        candidates, source = [], ""
        if cfg.get("hf_hub"):
            from huggingface_hub import try_to_load_from_cache

            hub = cfg["hf_hub"]
            repo, filename = (
                (hub.rstrip("/"), "open_clip_pytorch_model.bin") if hub.endswith("/") else os.path.split(hub)
            )
            stem, suffix = os.path.splitext(filename)
            safe = (
                "open_clip_model.safetensors"
                if filename == "open_clip_pytorch_model.bin"
                else stem + ".safetensors"
            )
            names = [safe, filename] if suffix in (".bin", ".pth") else [filename]
            for name in names:
                found = try_to_load_from_cache(repo, name, cache_dir=cache_dir or None)
                if isinstance(found, str):
                    candidates.append(Path(found))
            source = f"https://huggingface.co/{repo}/resolve/main/{filename}"
        if cfg.get("url"):
            url = cfg["url"]
            candidates.append(Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url))
            source = source or url
    for path in candidates:
        if path.is_file():
            return path
    looked = [str(p) for p in candidates] or [f"the Hugging Face cache of {source}"]
    raise ClipWeightsMissing(
        f"weights for {model_name} '{tag}' are not in the local cache (looked for {looked}) and are never "
        f"downloaded. Fetch {source} on a machine with internet, then set the clip resource's `checkpoint` "
        f"to that file (with model_name={model_name!r}), or copy it into the cache."
    )


def resolve_source(
    model_name: str = "", pretrained: str = "", checkpoint: str = "", cache_dir: str = ""
) -> ClipSource:
    """Turn the resource's settings into files, or fail saying which file is missing."""
    if pretrained and checkpoint and checkpoint != BUNDLED_TINY_CLIP:
        raise ValueError(
            "give either `pretrained` (an open_clip tag) or `checkpoint` (a local file), not both"
        )
    if pretrained:
        if not model_name:
            raise ValueError(f"pretrained tag {pretrained!r} needs model_name (e.g. 'ViT-B-32')")
        import open_clip

        weights = _cached_tag_file(model_name, pretrained, cache_dir)
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        preprocess = {
            k: v for k, v in tag_cfg.items() if k in ("mean", "std", "interpolation", "resize_mode")
        }
        return ClipSource(
            f"{model_name} ({pretrained})",
            model_name,
            None,
            preprocess,
            weights,
            quick_gelu=bool(tag_cfg.get("quick_gelu")) and "quickgelu" not in model_name,
        )
    if not checkpoint or checkpoint == BUNDLED_TINY_CLIP:
        folder = tiny_clip_train.default_checkpoint_dir()
        if not tiny_clip_train.is_built(folder):
            raise ClipWeightsMissing(tiny_clip_missing_message(folder))
        model_cfg, preprocess = _read_config_json(folder / tiny_clip_train.CONFIG_FILE)
        return ClipSource(f"tiny-clip@{folder.name}", None, model_cfg, preprocess, _weights_in_dir(folder))
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ClipWeightsMissing(
            f"CLIP checkpoint {path} does not exist: give a local open_clip weights file or a folder with "
            f"open_clip_config.json and weights. For the project's tiny CLIP use {BUNDLED_TINY_CLIP!r} "
            f"(built by `{tiny_clip_train.TRAIN_COMMAND}`). Weights are never downloaded."
        )
    if path.is_dir():
        config = path / tiny_clip_train.CONFIG_FILE
        if not config.is_file():
            raise ClipWeightsMissing(
                f"{path} is a folder without {tiny_clip_train.CONFIG_FILE}: name the weights file"
            )
        model_cfg, preprocess = _read_config_json(config)
        return ClipSource(f"{path.name} @ {path}", None, model_cfg, preprocess, _weights_in_dir(path))
    if model_name.endswith(".json"):
        model_cfg, preprocess = _read_config_json(Path(model_name).expanduser())
        return ClipSource(f"{Path(model_name).stem} @ {path}", None, model_cfg, preprocess, path)
    if model_name:
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(
                f"{model_name!r} is not an open_clip architecture (see open_clip.list_models()) nor a "
                "model config .json"
            )
        return ClipSource(f"{model_name} @ {path}", model_name, None, {}, path)
    beside = path.parent / tiny_clip_train.CONFIG_FILE
    if beside.is_file():
        model_cfg, preprocess = _read_config_json(beside)
        return ClipSource(f"{path.stem} @ {path}", None, model_cfg, preprocess, path)
    raise ValueError(
        f"checkpoint {path} is a weights file but no architecture was named: set model_name to an open_clip "
        f"name (e.g. 'ViT-B-32') or a model config JSON, or put {tiny_clip_train.CONFIG_FILE} beside it"
    )


@dataclass
class ClipModel:
    """A loaded CLIP with its preprocessing and tokenizer, on one device."""

    model: object  # open_clip.CLIP
    preprocess: object  # PIL image -> tensor (picklable, for DataLoader workers)
    tokenizer: object
    name: str
    weights: str
    device: str
    half: bool
    image_size: int
    context_length: int
    batch_size: int
    threshold: float | None = None  # a cosine cut calibrated for this model, where one is known
    synthetic: bool = False  # a tiny_clip_train model: only meaningful on the generator's scenes

    @property
    def dim(self) -> int:
        return int(getattr(self.model.visual, "output_dim", 0)) or -1

    def describe(self, workers: int) -> dict:
        """What a CLIP stage shows about the model that scored it."""
        from refinery.metadata import FilePath

        return {
            "model": self.name,
            "weights": FilePath(self.weights),
            "device": self.device,
            "fp16": self.half,
            "batch_size": self.batch_size,
            "dataloader_workers": workers,
        }

    def encode_pixels(self, pixels) -> np.ndarray:
        """Preprocessed image tensors (N×3×H×W) -> unit vectors (a batch that runs out of GPU
        memory is halved and retried: refinery.models.oom)."""
        return encode_halving(self._encode_pixels, pixels)

    def _encode_pixels(self, pixels) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = pixels.to(self.device, non_blocking=True)
            x = x.half() if self.half else x.float()
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def encode_images(self, images: list) -> np.ndarray:
        """PIL images -> unit vectors, in batches of ``batch_size``."""
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(
                self.encode_pixels(
                    torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
                )
            )
        return np.concatenate(out)

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts)

    def encode_tokens(self, tokens) -> np.ndarray:
        return encode_halving(self._encode_tokens, tokens)

    def _encode_tokens(self, tokens) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.encode_text(tokens.to(self.device), normalize=True).float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> unit vectors (longer texts are cut at the model's context length)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(
            [
                self.encode_tokens(self.tokenize(texts[start : start + self.batch_size]))
                for start in range(0, len(texts), self.batch_size)
            ]
        )


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's CLIP files): a zip holding compiled ``code/`` and constants."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # OpenAI's, not weights


def _load_weights(model, weights: Path, name: str) -> None:
    """Weights into ``model``, strictly: open_clip's loader, or a TorchScript archive's state dict
    (read with ``torch.jit.load``, which open_clip's ``torch.load(weights_only=True)`` refuses)."""
    import open_clip
    import torch

    try:
        if is_torchscript(weights):
            archive = torch.jit.load(str(weights), map_location="cpu")
            state = {k: v for k, v in archive.state_dict().items() if k not in TORCHSCRIPT_EXTRAS}
            del archive
            model.load_state_dict(state, strict=True)
        else:
            open_clip.load_checkpoint(model, str(weights), strict=True)
    except (RuntimeError, ValueError, OSError, KeyError, AssertionError) as err:
        raise ValueError(f"{weights} does not fit the architecture {name}: {err}") from err


def _build(source: ClipSource, device: str):
    import open_clip
    import torch

    if source.builtin:
        model = open_clip.create_model(
            source.builtin,
            pretrained=None,
            device="cpu",
            force_quick_gelu=source.quick_gelu or is_torchscript(source.weights),
        )
        _load_weights(model, source.weights, source.name)
        cfg = open_clip.get_model_config(source.builtin) or {}
        tokenizer = open_clip.get_tokenizer(source.builtin)
    else:
        cfg = source.model_cfg or {}
        text_cfg = cfg["text_cfg"]
        custom = cfg.get("custom_text") or "hf_model_name" in text_cfg
        if "multimodal_cfg" in cfg:
            raise ValueError("CoCa checkpoints from a config file are not supported; use a built-in name")
        cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
        model = cls(**{k: v for k, v in cfg.items() if k != "custom_text"})
        _load_weights(model, source.weights, source.name)
        context = int(text_cfg.get("context_length", 77))
        if text_cfg.get("hf_tokenizer_name"):
            tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context)
        else:
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, tuple | list) else int(image_size)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    preprocess_cfg = PreprocessCfg(**{"size": image_size, **source.preprocess_cfg})
    preprocess = image_transform_v2(preprocess_cfg, is_train=False)
    context_length = int(getattr(model, "context_length", cfg.get("text_cfg", {}).get("context_length", 77)))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(torch.device(device)), preprocess, tokenizer, image_size, context_length


_LOADED: dict[tuple, ClipModel] = {}


def _load_cached(source: ClipSource, stamp: tuple, device: str, half: bool, batch_size: int) -> ClipModel:
    key = (source.key(), stamp, device, half, batch_size)
    if key not in _LOADED:
        from refinery.models import loads

        loads.record("clip")
        model, preprocess, tokenizer, image_size, context_length = _build(source, device)
        if half:
            model = model.half()
        if len(_LOADED) >= 4:  # a few models per process at most; the oldest goes
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = ClipModel(
            model,
            preprocess,
            tokenizer,
            source.name,
            str(source.weights),
            device,
            half,
            image_size,
            context_length,
            batch_size,
            calibrated_threshold(source.weights),
            trained_on_generated_scenes(source.weights),
        )
    return _LOADED[key]


def load_clip(
    model_name: str = "",
    pretrained: str = "",
    checkpoint: str = BUNDLED_TINY_CLIP,
    device: str = "auto",
    fp16: bool = True,
    batch_size: int = 64,
    cache_dir: str = "",
) -> ClipModel:
    """Load once per process per (weights file and its modification time, device, precision)."""
    _offline()
    source = resolve_source(model_name, pretrained, checkpoint, cache_dir)
    stat = source.weights.stat()
    resolved = resolve_device(device)
    return _load_cached(
        source, (stat.st_size, stat.st_mtime_ns), resolved, use_fp16(resolved, fp16), batch_size
    )


@dataclass(frozen=True)
class ClipLoader:
    """Which CLIP to load and where (local files only): a plain value that pickles, so a worker loads
    the same model (once per process) with :meth:`load`."""

    model_name: str = ""
    pretrained: str = ""
    checkpoint: str = BUNDLED_TINY_CLIP
    cache_dir: str = ""
    compute: Compute = field(default_factory=Compute)

    def load(self) -> ClipModel:
        c = self.compute
        return load_clip(
            self.model_name, self.pretrained, self.checkpoint, c.device, c.fp16, c.batch_size, self.cache_dir
        )

    def dataloader_workers(self) -> int:
        return self.compute.dataloader_workers

    def source(self) -> ClipSource:
        """The files this loader would load, resolved without loading them (what a Ray driver
        records while the actors load the model)."""
        _offline()
        return resolve_source(self.model_name, self.pretrained, self.checkpoint, self.cache_dir)


def clip_transform(source: ClipSource):
    """(the image preprocessing of ``source``'s model, its image size), from its configuration
    alone: what the CPU decode tasks ahead of the model actors apply."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = (open_clip.get_model_config(source.builtin) or {}) if source.builtin else (source.model_cfg or {})
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, tuple | list) else int(size)
    return image_transform_v2(PreprocessCfg(**{"size": size, **source.preprocess_cfg}), is_train=False), size
