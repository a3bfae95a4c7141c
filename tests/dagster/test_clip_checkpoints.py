"""CLIP choices a user can trust, under materialize() with the real resources:

- the bundled tiny CLIP scoring data the project did not generate says so, in clip_scored's and
  clip_filtered's metadata and as WARNING entries of the run's log (the sample itself does not);
- a real open_clip architecture, ViT-B-32 with random weights, is loaded exactly as
  docs/quality_decisions.md tells users to: OpenAI's file format (a TorchScript archive of fp16
  weights) by path with ``model_name='ViT-B-32-quickgelu'``, and ``model_name='ViT-B-32'`` +
  ``pretrained='openai'`` from open_clip's cache (the Hugging Face cache layout), and scores a batch
  exactly as a direct forward pass of the same weights does.
"""

import io
import json
import logging

import dagster as dg
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torch import nn

from refinery.multimodal.images import decode_rgb
from refinery.storage import Storage
from resources import ComputeResource
from resources.clip import ClipResource
from tests.dagster.test_multimodal_assets import IMAGE_TEXT, materialize, metadata, require_tiny_clip

CAPTIONS = [
    "A man riding a horse along the beach at sunset",
    "Two children playing football in a park",
    "A bowl of ramen with a boiled egg and green onions",
    "An old red tram crossing a bridge in Lisbon",
    "A cat sleeping on a laptop keyboard",
    "Snow covered mountains above a quiet lake",
    "A woman reading a newspaper in a cafe",
    "Fresh bread and cheese on a wooden table",
    "A dog catching a frisbee in the air",
    "Traffic lights over a busy street at night",
]


def photo(seed: int) -> bytes:
    """A photo-like JPEG: smooth colour fields and grain, nothing like the generator's flat shapes."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
    image = Image.fromarray(base).resize((160, 120), Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(image, dtype=float) + rng.normal(0, 9, (120, 160, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def photos_source(home, name="photos", n=10) -> None:
    files = {f"img/{i:02d}.jpg": photo(i) for i in range(n)}
    records = [
        {"id": f"p{i}", "image": f"img/{i:02d}.jpg", "caption": CAPTIONS[i % len(CAPTIONS)]} for i in range(n)
    ]
    files["captions.jsonl"] = "".join(json.dumps(r) + "\n" for r in records)
    folder = home.inbox_source("image_text", name)
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())


def warnings_of(instance, result) -> list[str]:
    """The messages logged at WARNING during the run (context.log.warning), from the event log."""
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]


def test_the_tiny_clip_on_real_photos_warns_in_metadata_and_log(home):
    require_tiny_clip()
    photos_source(home)
    with dg.instance_for_test() as instance:
        result = materialize(instance, home, IMAGE_TEXT, "image_text_source", "photos")
        assert result.success
        logged = warnings_of(instance, result)
    scored = metadata(result, "clip_scored")
    assert scored["texts_of_the_models_kind"].value == 0.0
    text = scored["clip_model_warning"].value
    assert "meaningless for real photos" in text and "10 of 10 captions" in text
    assert "ViT-B-32-quickgelu" in text and "pretrained='openai'" in text
    assert "clip_model_warning" in metadata(result, "clip_filtered")
    assert any("clip_scored: scored with the bundled tiny CLIP" in m for m in logged)
    assert any(m.startswith("clip_filtered keeps and drops pairs by the scores") for m in logged)
    assert "clip_model_warning" in Storage(home.storage).provenance("clip_scored", "photos")


def test_the_generated_sample_raises_no_warning(home):
    require_tiny_clip()
    from refinery.sample.multimodal_sample import build_image_text_sample

    build_image_text_sample(home.inbox_kind("image_text"), seed=9, pairs=12)
    with dg.instance_for_test() as instance:
        result = materialize(instance, home, IMAGE_TEXT[:3], "image_text_source", "tables")
        logged = warnings_of(instance, result)
    scored = metadata(result, "clip_scored")
    assert scored["texts_of_the_models_kind"].value == 1.0 and "clip_model_warning" not in scored
    assert not any("tiny CLIP" in m for m in logged)


# -- a real architecture, ViT-B-32, through the documented settings --------------------------------
class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchscript_archive(state: dict, path) -> None:
    """A TorchScript archive holding ``state`` under the same names, as OpenAI's ViT-B-32.pt does
    (fp16 weights, plus its input_resolution/context_length/vocab_size constants)."""
    root = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if name not in module._modules:
                module.add_module(name, _Holder())
            module = module._modules[name]
        module.register_buffer(leaf, value)
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def vit_b_32(tmp_path_factory):
    """ViT-B-32 with random weights rounded to fp16 (what OpenAI ships), and its weights written as
    OpenAI's file and into an open_clip/Hugging Face cache."""
    torch.manual_seed(11)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).half().float().eval()
    state = {k: v.half() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("vit")
    openai_file = root / "ViT-B-32.pt"
    extras = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77)}
    torchscript_archive({**state, **extras, "vocab_size": torch.tensor(49408)}, openai_file)
    from safetensors.torch import save_file

    cache = root / "hf-cache"
    snapshot = cache / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (cache / "models--timm--vit_base_patch32_clip_224.openai" / "refs").mkdir()
    (cache / "models--timm--vit_base_patch32_clip_224.openai" / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "open_clip_model.safetensors"))
    return model, openai_file, cache


def direct_cosines(model, loaded, scored) -> np.ndarray:
    with torch.no_grad():
        pixels = torch.stack([loaded.preprocess(decode_rgb(b)) for b in scored["image"]])
        a = model.encode_image(pixels, normalize=True)
        b = model.encode_text(loaded.tokenize(scored["caption"].tolist()), normalize=True)
    return (a * b).sum(1).numpy()


@pytest.mark.parametrize("how", ["openai_file", "open_clip_cache"])
def test_vit_b_32_loaded_as_documented_scores_like_a_direct_forward(home, vit_b_32, how):
    model, openai_file, cache = vit_b_32
    compute = ComputeResource(device="cpu", batch_size=6, dataloader_workers=2)
    if how == "openai_file":
        clip = ClipResource(checkpoint=str(openai_file), model_name="ViT-B-32-quickgelu", compute=compute)
    else:
        clip = ClipResource(model_name="ViT-B-32", pretrained="openai", cache_dir=str(cache), compute=compute)
    photos_source(home, n=8)
    with dg.instance_for_test() as instance:
        result = materialize(instance, home, IMAGE_TEXT[:3], "image_text_source", "photos", clip=clip)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    scored = Storage(home.storage).read("clip_scored", "photos")
    assert len(scored) == 8
    loaded = clip.load()
    assert loaded.image_size == 224 and not loaded.synthetic
    np.testing.assert_allclose(scored["clip_cosine"], direct_cosines(model, loaded, scored), atol=1e-4)
    meta = metadata(result, "clip_scored")
    assert "clip_model_warning" not in meta  # a real CLIP: no warning, whatever the data
    expected = f"ViT-B-32-quickgelu @ {openai_file}" if how == "openai_file" else "ViT-B-32 (openai)"
    assert meta["model"].value == expected
