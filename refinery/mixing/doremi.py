"""Domain weights from a small proxy language model (DoReMi).

Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining":

1. Train a *reference* model on a fixed mixture (uniform over domains by default).
2. Train a *proxy* model of the same shape from scratch with group DRO over domains: at every
   step, the per-domain *excess loss* λ_i is the proxy's per-token loss minus the reference's,
   clipped at zero, averaged over the domain's tokens in the batch; the domain weights follow a
   multiplicative-weights update α ← normalise(α ⊙ exp(η λ)), smoothed with the uniform
   distribution, (1 − c) α + c/k; the proxy minimises the α-weighted per-domain loss.
3. The result is the average of α over the proxy's steps.

A domain gains weight while the proxy is far behind what the reference shows is learnable there.
Domains that are already learned (low loss for both) or unlearnable (high loss for both: noise)
have little excess and lose weight.

The model is a byte-level causal transformer (256-symbol vocabulary, no tokenizer to fit or
ship), a couple of layers wide 64 by default: it trains on a CPU in about a minute on the
sample, and the test uses a smaller one for seconds. torch is imported inside functions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field


class DoremiParams(BaseModel):
    steps: int = Field(200, description="Proxy training steps (each sees every domain).")
    reference_steps: int | None = Field(None, description="Reference training steps (default: steps).")
    batch_per_domain: int = Field(8, description="Sequences per domain in each step.")
    seq_len: int = Field(128, description="Bytes per training sequence.")
    d_model: int = Field(64, description="Width of the proxy and reference models.")
    n_layers: int = Field(2, description="Transformer layers.")
    n_heads: int = Field(4, description="Attention heads.")
    lr: float = Field(3e-3, description="AdamW learning rate (cosine decay to 10%).")
    eta: float = Field(1.0, description="Step size of the multiplicative-weights update (paper: 1).")
    smoothing: float = Field(1e-3, description="Mix with uniform weights each step (paper: 1e-3).")
    reference_weights: Literal["uniform", "natural"] = Field(
        "uniform", description="Mixture the reference model trains on: uniform or by tokens."
    )
    max_bytes_per_domain: int = Field(2_000_000, description="UTF-8 bytes of each domain used (a sample).")
    eval_fraction: float = Field(0.1, description="Share of each domain's documents held out for eval.")
    eval_batches: int = Field(8, description="Batches per domain for the held-out losses.")
    threads: int = Field(0, description="torch CPU threads (0: torch's default).")
    seed: int = Field(0, description="Seeds data sampling and initialisation.")


def update_weights(alpha: np.ndarray, excess: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One multiplicative-weights step on the simplex, then smoothing towards uniform."""
    logits = np.log(np.maximum(alpha, 1e-300)) + eta * np.asarray(excess, dtype=np.float64)
    logits -= logits.max()
    raised = np.exp(logits)
    raised /= raised.sum()
    return (1 - smoothing) * raised + smoothing / len(alpha)


@dataclass
class DomainBytes:
    """One domain's sampled documents as a byte stream (train part and held-out part)."""

    name: str
    train: np.ndarray
    held_out: np.ndarray
    documents: int
    tokens: int  # whitespace tokens of the whole domain (not just the sample), for natural weights

    @classmethod
    def from_texts(
        cls, name: str, texts: list[str], tokens: int, max_bytes: int, eval_fraction: float, seed: int
    ) -> DomainBytes:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        chunks, size = [], 0
        for i in order:
            data = texts[i].encode("utf-8", "surrogatepass").replace(b"\x00", b" ")
            chunks.append(data)
            size += len(data) + 1
            if size >= max_bytes:
                break
        n_eval = max(1, round(eval_fraction * len(chunks))) if len(chunks) > 1 else 0
        join = b"\x00".join
        held_out, train = join(chunks[:n_eval]), join(chunks[n_eval:])
        if not held_out:
            held_out = train
        return cls(
            name,
            np.frombuffer(train + b"\x00", dtype=np.uint8),
            np.frombuffer(held_out + b"\x00", dtype=np.uint8),
            len(texts),
            tokens,
        )


@dataclass
class DoremiResult:
    domains: list[str]
    weights: np.ndarray  # average of the proxy's domain weights over steps: the result
    final_alpha: np.ndarray
    reference_weights: np.ndarray
    reference_loss: np.ndarray  # held-out, nats per byte
    proxy_loss: np.ndarray
    mean_excess: np.ndarray  # average clipped excess loss over the proxy's steps
    trajectory: list[dict] = field(default_factory=list)  # step, domain, weight, excess, losses
    seconds: float = 0.0
    parameters: int = 0


def _model(params: DoremiParams):
    import torch
    from torch import nn

    class ByteLM(nn.Module):
        """Causal transformer over bytes: embedding + learned positions, pre-norm blocks."""

        def __init__(self) -> None:
            super().__init__()
            d = params.d_model
            self.embed = nn.Embedding(256, d)
            self.pos = nn.Parameter(torch.zeros(params.seq_len, d))
            layer = nn.TransformerEncoderLayer(
                d, params.n_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, params.n_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, 256)
            nn.init.normal_(self.pos, std=0.02)
            self.register_buffer(
                "mask", torch.triu(torch.full((params.seq_len, params.seq_len), float("-inf")), 1)
            )

        def forward(self, x):
            n = x.shape[1]
            h = self.embed(x) + self.pos[:n]
            h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
            return self.head(self.norm(h))

    return ByteLM()


def _batch(
    domains: list[DomainBytes], per_domain: int, seq_len: int, rng: np.random.Generator, held_out=False
):
    import torch

    rows = []
    for dom in domains:
        data = dom.held_out if held_out else dom.train
        if len(data) <= seq_len + 1:
            data = np.resize(data, seq_len + 2)  # a tiny domain repeats itself
        starts = rng.integers(0, len(data) - seq_len - 1, size=per_domain)
        rows += [data[s : s + seq_len + 1] for s in starts]
    block = torch.from_numpy(np.stack(rows).astype(np.int64))
    return block[:, :-1], block[:, 1:]


def _token_losses(model, x, y):
    import torch.nn.functional as F

    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), reduction="none").view(y.shape)


def _per_domain(losses, k: int, per_domain: int):
    """Mean per-token loss of each domain (rows are grouped by domain)."""
    return losses.view(k, per_domain, -1).mean(dim=(1, 2))


def _schedule(optimizer, steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )


def train_reference(domains: list[DomainBytes], weights: np.ndarray, params: DoremiParams):
    """The reference model, trained on the fixed mixture ``weights`` (a weighted per-domain loss)."""
    import torch

    torch.manual_seed(params.seed)
    model = _model(params)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=0.01)
    sched = _schedule(opt, params.reference_steps or params.steps)
    rng = np.random.default_rng(params.seed + 1)
    w = torch.tensor(weights, dtype=torch.float32)
    for _ in range(params.reference_steps or params.steps):
        x, y = _batch(domains, params.batch_per_domain, params.seq_len, rng)
        loss = (w * _per_domain(_token_losses(model, x, y), len(domains), params.batch_per_domain)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


def evaluate(model, domains: list[DomainBytes], params: DoremiParams) -> np.ndarray:
    """Held-out loss per domain, nats per byte (same batches for every model: fixed seed)."""
    import torch

    rng = np.random.default_rng(params.seed + 99)
    totals = np.zeros(len(domains))
    with torch.no_grad():
        for _ in range(params.eval_batches):
            x, y = _batch(domains, params.batch_per_domain, params.seq_len, rng, held_out=True)
            totals += _per_domain(_token_losses(model, x, y), len(domains), params.batch_per_domain).numpy()
    return totals / params.eval_batches


def train_proxy(domains: list[DomainBytes], reference, params: DoremiParams) -> tuple:
    """Group DRO against the reference; returns (model, average weights, final weights, trajectory,
    mean excess per domain)."""
    import torch

    k = len(domains)
    torch.manual_seed(params.seed + 2)
    model = _model(params)
    opt = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=0.01)
    sched = _schedule(opt, params.steps)
    rng = np.random.default_rng(params.seed + 3)
    alpha = np.full(k, 1 / k)
    total_alpha = np.zeros(k)
    total_excess = np.zeros(k)
    trajectory = []
    for step in range(params.steps):
        x, y = _batch(domains, params.batch_per_domain, params.seq_len, rng)
        losses = _token_losses(model, x, y)
        with torch.no_grad():
            ref = _token_losses(reference, x, y)
            excess = _per_domain((losses.detach() - ref).clamp_min(0), k, params.batch_per_domain).numpy()
        alpha = update_weights(alpha, excess, params.eta, params.smoothing)
        per_domain = _per_domain(losses, k, params.batch_per_domain)
        loss = (torch.tensor(alpha, dtype=torch.float32) * per_domain).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total_alpha += alpha
        total_excess += excess
        pd_loss = per_domain.detach().numpy()
        ref_loss = _per_domain(ref, k, params.batch_per_domain).numpy()
        for i, dom in enumerate(domains):
            trajectory.append(
                {
                    "step": step,
                    "domain": dom.name,
                    "weight": float(alpha[i]),
                    "excess_loss": float(excess[i]),
                    "proxy_loss": float(pd_loss[i]),
                    "reference_loss": float(ref_loss[i]),
                }
            )
    steps = max(params.steps, 1)
    return model.eval(), total_alpha / steps, alpha, trajectory, total_excess / steps


def run_doremi(domains: list[DomainBytes], params: DoremiParams) -> DoremiResult:
    """Reference, then proxy; weights, losses and the whole trajectory."""
    import torch

    if len(domains) < 2:
        raise ValueError(f"DoReMi needs at least two domains with text, got {len(domains)}")
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if params.threads:
        torch.set_num_threads(params.threads)
    try:
        tokens = np.array([d.tokens for d in domains], dtype=float)
        ref_w = (
            np.full(len(domains), 1 / len(domains))
            if params.reference_weights == "uniform" or tokens.sum() == 0
            else tokens / tokens.sum()
        )
        reference = train_reference(domains, ref_w, params)
        proxy, weights, final, trajectory, excess = train_proxy(domains, reference, params)
        ref_loss, proxy_loss = evaluate(reference, domains, params), evaluate(proxy, domains, params)
    finally:
        torch.set_num_threads(previous_threads)
    return DoremiResult(
        [d.name for d in domains],
        weights,
        final,
        ref_w,
        ref_loss,
        proxy_loss,
        excess,
        trajectory,
        time.perf_counter() - started,
        sum(p.numel() for p in proxy.parameters()),
    )
