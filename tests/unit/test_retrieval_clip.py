"""CLIP embeddings at rest and the image / caption collections of the vector index (a small CLIP)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from refinery.multimodal import synthetic, tiny_clip_train
from refinery.multimodal.clip_model import load_clip
from refinery.multimodal.images import decode_rgb
from refinery.paths import Layout
from refinery.retrieval import ModelMismatch, VectorIndex, search
from refinery.retrieval.clip_embeddings import write_clip_embeddings
from refinery.storage import Storage
from tests.unit.clip_helpers import SMALL, jpeg


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_clip_train.build_model(SMALL).eval()
    folder = tiny_clip_train.save(model, {"roc_auc": 0.5}, SMALL, tmp_path_factory.mktemp("clip") / "dir")
    return load_clip(checkpoint=str(folder), device="cpu", batch_size=4)


@pytest.fixture
def home(tmp_path, clip):
    layout = Layout.at(tmp_path / "home")
    storage = Storage(layout.storage)
    colours = list(synthetic.COLOURS)
    captions = [f"a {colours[i % len(colours)]} scene number {i}" for i in range(11)]
    images = [jpeg(i) for i in range(11)]
    images[4] = b"not an image"
    frame = pd.DataFrame(
        {"id": [f"img-{i}" for i in range(11)], "caption": captions, "source": "shop", "image": images}
    )
    path = storage.path("image_text_checked", "shop")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=3)
    scored = frame.drop(index=4).assign(clip_cosine=0.3)
    out = storage.path("clip_scored", "shop")
    out.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(scored, preserve_index=False), out)
    return layout, storage, frame


def test_clip_embeddings_equal_a_direct_forward_and_skip_undecodable_images(home, clip):
    _, storage, frame = home
    run = write_clip_embeddings(storage, "image_text_checked", "shop", clip, {"asset": "clip_embeddings"})
    assert (run.rows, run.skipped, run.dim) == (10, 1, 32)
    table = pq.read_table(run.path)
    good = [i for i in range(11) if i != 4]
    assert table.column("id").to_pylist() == [f"img-{i}" for i in good]
    image = np.array(table.column("image_embedding").to_pylist(), dtype=np.float32)
    want = clip.encode_images([decode_rgb(frame.loc[i, "image"]) for i in good])
    np.testing.assert_allclose(image, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, atol=1e-5)
    assert storage.provenance("clip_embeddings", "shop")["model"] == clip.name


def test_caption_and_image_collections_search_with_the_clip_text_tower(home, clip):
    layout, storage, frame = home
    write_clip_embeddings(storage, "image_text_checked", "shop", clip, {})
    for name in ("images", "captions"):
        assert VectorIndex.at(layout, name).sync(storage) == {"shop": "built"}
    hits = search(frame.loc[7, "caption"], 3, home=layout.home, collection_name="captions", clip=clip)
    top = hits.iloc[0]
    assert (top["id"], top["stage"], top["status"]) == ("img-7", "clip_scored", "pending")
    assert top["score"] == pytest.approx(1.0, abs=1e-4) and top["caption"] == frame.loc[7, "caption"]
    assert "image" not in hits.columns  # image bytes stay out of the answer
    query = clip.encode_texts(["a red scene"])[0]
    images = search("a red scene", 10, home=layout.home, collection_name="images", exact=True)  # loads CLIP
    direct = clip.encode_images([decode_rgb(frame.loc[i, "image"]) for i in range(11) if i != 4]) @ query
    np.testing.assert_allclose(images["score"].to_numpy(), np.sort(direct)[::-1], atol=1e-5)
    other = replace(clip, name="other", weights="/elsewhere/other.safetensors")
    with pytest.raises(ModelMismatch, match=r"other\.safetensors"):
        search("a red scene", 3, home=layout.home, collection_name="images", clip=other)
