"""Adding files as an inbox source: the kind detected from the files, copies or links, refusals."""

from __future__ import annotations

import json

import pytest

from refinery.agent.roots import Roots
from refinery.agent.sources import add_source, detect_kind
from refinery.paths import Layout


def write(path, content: str | bytes = "x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_kinds_are_detected_from_suffixes_and_records(tmp_path):
    sft = write(
        tmp_path / "chat.jsonl",
        json.dumps(
            {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
        )
        + "\n",
    )
    text = write(tmp_path / "docs.jsonl", json.dumps({"text": "A document."}) + "\n")
    assert detect_kind([sft])[0] == "sft"
    assert detect_kind([text])[0] == "text"
    assert detect_kind([write(tmp_path / "a.txt")])[0] == "text"
    assert detect_kind([write(tmp_path / "clip.mp4"), write(tmp_path / "q.jsonl")])[0] == "video"
    assert detect_kind([write(tmp_path / "cat.jpg"), write(tmp_path / "captions.csv")])[0] == "image_text"
    with pytest.raises(ValueError, match="cannot tell the kind"):
        detect_kind([write(tmp_path / "model.bin")])


def test_a_folder_is_copied_or_linked_whole_and_never_overwritten(tmp_path):
    root = tmp_path / "root"
    write(root / "corpus" / "a.txt", "first")
    write(root / "corpus" / "sub" / "b.txt", "second")
    write(root / "corpus" / ".hidden", "skipped")
    layout, roots = Layout.at(tmp_path / "home"), Roots.of([root])
    copied = add_source(layout, roots, [str(root / "corpus")], "copied")
    assert copied.kind == "text" and copied.files == ["a.txt", "sub/b.txt"]
    folder = layout.inbox_source("text", "copied")
    assert (folder / "sub" / "b.txt").read_text() == "second" and not (folder / "a.txt").is_symlink()
    linked = add_source(layout, roots, [str(root / "corpus" / "a.txt")], "linked", mode="link")
    assert (layout.inbox_source("text", linked.name) / "a.txt").is_symlink()
    with pytest.raises(FileExistsError, match="already exists"):
        add_source(layout, roots, [str(root / "corpus")], "copied")
    with pytest.raises(ValueError, match="not usable as a partition"):
        add_source(layout, roots, [str(root / "corpus")], "../escape")
    assert sorted(p.name for p in layout.inbox_kind("text").iterdir()) == ["copied", "linked"]
