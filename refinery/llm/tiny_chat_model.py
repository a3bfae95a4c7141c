"""Build the project's tiny chat model, so the LLM operators can be tested against a real server.

No model weights can be downloaded here, yet the LLM stages must be exercised against a real
OpenAI-compatible server (``transformers serve``). This module makes a Llama-architecture model
of two layers, 64 wide, with a byte-level BPE tokenizer trained locally with ``tokenizers`` and a
chat template, then trains it for a few hundred steps to answer the built-in prompt templates in
their expected *shape*: a JSON list of question–answer pairs, a JSON score with a rationale, a
paragraph for a rewrite, and, now and then, a refusal or malformed JSON (so quarantine is
exercised by the real path).

**Its text has no quality.** It memorises a handful of canned answers and does not read the
document; it exists to drive the machinery (requests, cache, retries, quarantine, provenance,
concurrency), never to judge what a real model would produce.

    python -m refinery.llm.tiny_chat_model [--out DIR] [--force]

The output is ``<out>/<config hash>/`` (a Hugging Face model folder ``transformers serve`` loads
by path); a finished folder is reused. Default ``<repo>/.tools/models/tiny-chat/``
(``$REFINERY_TINY_CHAT_DIR`` overrides). About a minute on 2 CPU cores, once per machine: a finished
folder is also kept in the tool cache (:mod:`refinery.tool_cache`) for other clones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from refinery import tool_cache
from refinery.llm.prompts import JUDGE_DOCUMENT, JUDGE_SFT, REWRITE_WIKI, SYNTHESIS_QA, PromptTemplate

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CHAT_ENV = "REFINERY_TINY_CHAT_DIR"
DEFAULT_ROOT = REPO_ROOT / ".tools" / "models" / "tiny-chat"
CACHE_KIND = "tiny-chat"  # its folder in the machine-wide tool cache (refinery/tool_cache.py)
RECIPE_VERSION = 1
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

QA_ANSWERS = [
    ("What is the main topic?", "The text describes a place and its history."),
    ("Who is the text about?", "It is about the people of a small town."),
    ("Why does the author mention the river?", "The river shaped how the town grew."),
    ("When did the change happen?", "The change happened over many years."),
    ("What does the recipe need?", "It needs flour, water and a little salt."),
    ("How long does the journey take?", "The journey takes about two days."),
    ("What happened to the market?", "The market moved to the new square."),
    ("Where does the story begin?", "The story begins at the old harbour."),
]
REWRITES = [
    "The town lies beside a river. Its history goes back many centuries, and its market is still busy.",
    "The recipe is simple. Mix the flour with water, add salt, and bake the dough until it is golden.",
    "Travellers reach the valley in two days. The road passes farms, a lake and an old stone bridge.",
]
RATIONALES = [
    "The text is clear and informative.",
    "The text is short and repetitive.",
    "The text is well written but narrow.",
    "The text is mostly noise.",
]
REFUSAL = "I'm sorry, but I cannot help with that request."


@dataclass(frozen=True)
class TinyChatConfig:
    """Everything that determines the weights; its hash names the output folder."""

    vocab_size: int = 768
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    max_positions: int = 1024
    steps: int = 300
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0
    document_chars: int = 400

    def digest(self) -> str:
        canonical = json.dumps({**asdict(self), "recipe": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


DEFAULT_CONFIG = TinyChatConfig()


def default_model_dir(root: Path | None = None, config: TinyChatConfig = DEFAULT_CONFIG) -> Path:
    root = root or Path(os.environ.get(TINY_CHAT_ENV) or DEFAULT_ROOT)
    return root / config.digest()


def is_built(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def _answer(template: PromptTemplate, rng: random.Random) -> str:
    """One canned answer in the shape ``template`` asks for (sometimes a refusal or broken JSON)."""
    roll = rng.random()
    if roll < 0.08:
        return REFUSAL
    if template is REWRITE_WIKI:
        return rng.choice(REWRITES)
    if template is SYNTHESIS_QA:
        pairs = rng.sample(QA_ANSWERS, 2)
        text = json.dumps([{"question": q, "answer": a} for q, a in pairs])
        return text[: len(text) // 2] if roll < 0.16 else text  # some answers break off mid-JSON
    score = rng.choice([1, 2, 3, 4, 5])
    return json.dumps({"score": score, "rationale": rng.choice(RATIONALES)})


def _examples(config: TinyChatConfig, count: int, rng: random.Random) -> list[tuple[list[dict], str]]:
    from refinery.sample import prose

    templates = [SYNTHESIS_QA, REWRITE_WIKI, JUDGE_DOCUMENT, JUDGE_SFT]
    examples = []
    for _ in range(count):
        template = rng.choice(templates)
        text = prose.article(rng, paragraphs=1)[: rng.randint(40, config.document_chars)]
        values = {"text": text, "pairs": rng.choice([1, 2, 3]), "prompt": text[:80], "response": text[80:200]}
        examples.append((template.render(**values), _answer(template, rng)))
    return examples


def _tokenizer(config: TinyChatConfig, corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        bos_token="<|end|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def train(config: TinyChatConfig = DEFAULT_CONFIG, log=print):
    """The trained model and tokenizer (seeded: the same config gives the same weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    examples = _examples(config, 1200, rng)
    corpus = [m["content"] for msgs, _ in examples for m in msgs] + [a for _, a in examples]
    tokenizer = _tokenizer(config, corpus)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden,
            intermediate_size=config.hidden * 2,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.heads,
            max_position_embeddings=config.max_positions,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    sequences = []
    for messages, answer in examples:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer + "<|end|>", add_special_tokens=False)["input_ids"]
        sequences.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    started = time.perf_counter()
    for step in range(config.steps):
        batch = rng.sample(sequences, config.batch)
        width = max(len(ids) for ids, _ in batch)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == config.steps - 1:
            log(f"tiny-chat: step {step} loss {loss.item():.3f} ({time.perf_counter() - started:.0f}s)")
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Sample when a request asks for a temperature above 0 (transformers serve decodes greedily at
    # temperature 0 and follows the model's do_sample otherwise).
    model.generation_config.do_sample = True
    return model, tokenizer, float(loss.item())


def build(
    root: Path | None = None,
    config: TinyChatConfig = DEFAULT_CONFIG,
    force: bool = False,
    log=print,
    shared_cache: bool = False,
) -> Path:
    """The model folder, trained and saved first unless already there. ``shared_cache`` (what
    setup asks for): copy it from the machine-wide tool cache when another clone trained it, and
    keep a copy there after training."""
    folder = default_model_dir(root, config)
    if is_built(folder) and not force:
        return folder
    if shared_cache and not force and tool_cache.restore(CACHE_KIND, config.digest(), folder, is_built):
        log(f"tiny chat model: copied from the tool cache to {folder}")
        return folder
    model, tokenizer, loss = train(config, log)
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "recipe.json").write_text(
        json.dumps({**asdict(config), "final_loss": loss, "note": "tiny test model: its text has no quality"})
    )
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    if shared_cache:
        tool_cache.store(CACHE_KIND, config.digest(), folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="root folder (default .tools/models/tiny-chat)"
    )
    parser.add_argument("--force", action="store_true", help="retrain even if built")
    args = parser.parse_args(argv)
    folder = build(args.out, force=args.force, shared_cache=True)
    print(f"tiny chat model: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
