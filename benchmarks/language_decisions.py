"""Which keep/remove decisions change when the language model changes: lingua (the old default,
1,000 characters) against the new default (fastText lid.176, 400 characters).

On the bundled text sample (``refinery.sample.text_sample``, read by the real ingest) and on the
real corpus (``benchmarks/real_corpus.py``), each document goes through the library's chain up to
the language routing: ``clean_batch`` → labels → ``LanguageFilter`` (main side, then the other
side), with the default ``language_routing``. A document's outcome is (side, kept or reason);
every document whose outcome differs is listed with both labels and scores.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/language_decisions.py --real-mb 24
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from refinery.batch import routed_input  # noqa: E402
from refinery.clean.cleaning import CleanParams, clean_batch  # noqa: E402
from refinery.filters.language_routing import LanguageFilter, LanguageRouting  # noqa: E402
from refinery.filters.params import HeuristicParams  # noqa: E402
from refinery.text.language_id import LanguageIdParams, label_batch  # noqa: E402

OLD = LanguageIdParams(model="lingua", max_chars=1000, low_accuracy=True)
NEW = LanguageIdParams()


def outcomes(frame: pd.DataFrame, labels: LanguageIdParams) -> pd.DataFrame:
    kept = label_batch(clean_batch(frame, CleanParams()).kept, labels)
    rows = []
    for main in (True, False):
        routing = LanguageRouting().for_model(labels.model)
        process = LanguageFilter(routing, HeuristicParams(), main=main)
        taken, _ = routed_input(process, kept)
        result = process(taken)
        side = "heuristic_filtered" if main else "multilingual_filtered"
        rows += [(i, side, "kept") for i in result.kept["id"]]
        rows += [(i, side, r) for i, r in zip(result.rejected["id"], result.rejected["reason"], strict=True)]
    out = pd.DataFrame(rows, columns=["id", "side", "outcome"]).set_index("id")
    return out.join(kept.set_index("id")[["language", "language_score", "text"]])


def sample_frame() -> pd.DataFrame:
    from refinery.ingest.text_reader import SourceReader
    from refinery.sample.text_sample import build_text_sample

    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        build_text_sample(Path(tmp))
        for folder in sorted(p for p in Path(tmp).iterdir() if p.is_dir()):
            for batch in SourceReader(folder, folder.name).batches():
                docs += [{"id": d["id"], "text": d["text"]} for d in batch.documents]
    return pd.DataFrame(docs)


def real_frame(max_mb: float) -> pd.DataFrame:
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(max_mb)
    return pd.concat([b.to_pandas() for b in corpus.iter_batches(columns=("id", "text"))], ignore_index=True)


def compare(name: str, frame: pd.DataFrame) -> dict:
    old, new = outcomes(frame, OLD), outcomes(frame, NEW)
    both = old.add_suffix("_old").join(new.add_suffix("_new"), how="outer")
    changed = both[(both["side_old"] != both["side_new"]) | (both["outcome_old"] != both["outcome_new"])]
    label_changed = int((both["language_old"] != both["language_new"]).sum())
    kept_old = int((both["outcome_old"] == "kept").sum())
    kept_new = int((both["outcome_new"] == "kept").sum())
    print(
        f"{name}: {len(both)} documents; labels differ on {label_changed}; decisions differ on "
        f"{len(changed)}; kept {kept_old} (lingua) vs {kept_new} (fastText)"
    )
    listed = []
    for doc_id, r in changed.iterrows():
        entry = {
            "id": doc_id,
            "lingua": [
                r["language_old"],
                round(float(r["language_score_old"]), 3),
                r["side_old"],
                r["outcome_old"],
            ],
            "fasttext": [
                r["language_new"],
                round(float(r["language_score_new"]), 3),
                r["side_new"],
                r["outcome_new"],
            ],
            "text": " ".join(str(r["text_old"])[:160].split()),
        }
        listed.append(entry)
        print(f"  {doc_id}: lingua {entry['lingua']} -> fastText {entry['fasttext']} | {entry['text'][:100]}")
    return {
        "documents": len(both),
        "labels_differ": label_changed,
        "decisions_differ": len(changed),
        "kept_lingua": kept_old,
        "kept_fasttext": kept_new,
        "changed": listed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=24)
    args = parser.parse_args()
    results = {"sample": compare("sample", sample_frame()), "real": compare("real", real_frame(args.real_mb))}
    out = ROOT / "benchmarks" / "out" / "language_decisions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
