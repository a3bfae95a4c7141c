"""The cost of heuristic rules as units: the chain of ``refinery/filters/rules/`` against the chain as it
was before (issue 17), in one process, so both share whatever load the machine carries.

``old_evaluate`` is the former ``refinery.filters.chain.evaluate``, verbatim: the rule functions called
in a hard-coded sequence. The new path is :func:`refinery.filters.chain.run_rules` over the registered
rules. Results are asserted identical first; then each path runs over the same documents in alternating
rounds, timed in CPU seconds.

    .venv/bin/python -m benchmarks.bench_rule_units --rounds 6 --docs 4000
"""

from __future__ import annotations

import argparse
import gc
import time

from benchmarks.corpus import ensure_corpus
from benchmarks.real_corpus import ensure_real_corpus
from refinery.filters.c4 import c4_rules
from refinery.filters.chain import CHAIN, run_rules
from refinery.filters.gopher_quality import gopher_quality, gopher_stop_words
from refinery.filters.gopher_repetition import gopher_repetition
from refinery.filters.language import language_gate
from refinery.filters.params import HeuristicParams
from refinery.filters.rule import symbol_heavy
from refinery.text.words import char_class_counts, token_count, tokens, word_tokens, words


def old_evaluate(text, p, char_counts=None):
    """The chain before issue 17 (refinery/filters/chain.py:evaluate), verbatim."""
    scores: dict = {}
    toks = None
    if char_counts is not None and symbol_heavy(*char_counts):
        wrds = words(text)
        n_tokens = token_count(wrds, *char_counts)
    else:
        toks = tokens(text)
        wrds = word_tokens(toks)
        n_tokens = len(toks)
    if p.gopher_quality and (v := gopher_quality(text, n_tokens, wrds, p, scores)):
        return v, scores, text
    if p.gopher_repetition and (
        v := gopher_repetition(text, tokens(text) if toks is None else toks, p, scores)
    ):
        return v, scores, text
    if p.language_gate and (v := language_gate(wrds, p, scores)):
        return v, scores, text
    if p.gopher_quality and (v := gopher_stop_words(wrds, p, scores)):
        return v, scores, text
    if p.c4:
        v, new_text = c4_rules(text, p, scores)
        if v:
            return v, scores, text
        text = new_text
    return None, scores, text


def compare(name: str, texts: list[str], rounds: int) -> None:
    p = HeuristicParams(language_gate=False)
    w, o = char_class_counts(texts)
    counts = list(zip(w.tolist(), o.tolist(), strict=True))
    rules = CHAIN.active(p)
    reference = [old_evaluate(x, p, c) for x, c in zip(texts, counts, strict=True)]
    assert reference == [run_rules(rules, x, p, c) for x, c in zip(texts, counts, strict=True)]
    del reference
    gc.collect()
    spent = {"old": 0.0, "new": 0.0}
    for r in range(rounds):
        for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
            started = time.process_time()
            if which == "old":
                for x, c in zip(texts, counts, strict=True):
                    old_evaluate(x, p, c)
            else:
                for x, c in zip(texts, counts, strict=True):
                    run_rules(rules, x, p, c)
            spent[which] += time.process_time() - started
    print(
        f"{name}: {len(texts):,} docs x{rounds}  old {spent['old']:.2f}s  new {spent['new']:.2f}s  "
        f"new/old {spent['new'] / spent['old']:.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--docs", type=int, default=4000, help="generated documents")
    parser.add_argument("--real-mb", type=float, default=24, help="real corpus size cap (real_corpus.py)")
    args = parser.parse_args()
    real = ensure_real_corpus(args.real_mb, log=lambda m: None)
    compare(
        "real",
        [t for b in real.iter_batches(5_000, columns=("text",)) for t in b.column("text").to_pylist()],
        args.rounds,
    )
    generated = ensure_corpus(max(args.docs, 20_000), 0, log=lambda m: None)
    texts = next(generated.iter_batches(args.docs, columns=("text",))).column("text").to_pylist()
    compare("generated", texts, args.rounds)


if __name__ == "__main__":
    main()
