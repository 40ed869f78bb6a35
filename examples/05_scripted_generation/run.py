"""Greedy generation with a small GPT-like block: a scripted loop and a flexible sequence length.

Two conversions:

1. The GPT block alone (tokens -> logits) is traced with a flexible sequence
   length (``Range(1, 32)``), and its logits are checked against torch at
   several lengths through specsurgery's numpy reference runtime (<= 1e-4).
2. The generation loop (append the argmax token until EOS or ``max_new``
   tokens) depends on the values it computes, so tracing it is refused with
   an explanation; ``script=True`` keeps the loop as a Core ML ``loop`` layer
   (with a ``branch`` for the EOS test), and the generated tokens must equal
   torch's for prompts of several lengths.

Usage: python run.py [OUTDIR]
"""

from __future__ import annotations

import math
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import specsurgery as ss
from specsurgery.convert import ConvertError, Range, from_torch

VOCAB, MAX_LEN, EOS = 16, 32, 0


class TinyGPT(nn.Module):
    """Token + position embeddings, one pre-norm block (causal attention, MLP), LM head.

    Written so TorchScript can compile it: sizes that are constants live in
    attributes (``head_dim``, ``scale``) instead of being read from tensors.
    """

    def __init__(self, vocab=VOCAB, dim=32, heads=2, max_len=MAX_LEN):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        B, T = tokens.shape
        x = self.tok(tokens) + self.pos(torch.arange(T))
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q = q.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)
        v = v.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att + torch.triu(torch.ones(T, T), diagonal=1) * -1e4   # causal mask
        y = (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.proj(y)
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


class GreedyGenerate(nn.Module):
    """Append the most likely next token until EOS or ``max_new`` new tokens."""

    def __init__(self, gpt: TinyGPT, max_new: int = 8, eos: int = EOS):
        super().__init__()
        self.gpt = gpt
        self.max_new = max_new
        self.eos = eos

    def forward(self, prompt):
        tokens = prompt
        for _ in range(self.max_new):
            logits = self.gpt(tokens)
            nxt = torch.argmax(logits[:, -1, :], dim=-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], dim=1)
            if bool(nxt[0, 0] == self.eos):   # depends on the values: needs script
                break
        return tokens


def count_layers(layers) -> dict:
    counts: dict = {}
    for layer in layers:
        kind = layer.WhichOneof("layer")
        counts[kind] = counts.get(kind, 0) + 1
        nested = []
        if kind == "loop":
            nested = list(layer.loop.conditionNetwork.layers) + list(layer.loop.bodyNetwork.layers)
        elif kind == "branch":
            nested = list(layer.branch.ifBranch.layers) + list(layer.branch.elseBranch.layers)
        for k, n in count_layers(nested).items():
            counts[k] = counts.get(k, 0) + n
    return counts


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    gpt = TinyGPT().eval()
    ok = True

    # 1. the block, traced, with a flexible sequence length ------------------------------
    t0 = time.perf_counter()
    block = from_torch(gpt, torch.randint(1, VOCAB, (1, 8)), output_names=["logits"],
                       flexible={"tokens": (1, Range(1, MAX_LEN))},
                       metadata={"description": "TinyGPT block: logits for every position"},
                       save_to=out / "TinyGPT.mlmodel")
    rng = block.description.input[0].type.multiArrayType.shapeRange.sizeRanges[1]
    print(f"block converted in {time.perf_counter() - t0:.1f} s; 'tokens' length "
          f"{rng.lowerBound}..{rng.upperBound} -> {out / 'TinyGPT.mlmodel'}")
    worst = 0.0
    for length in (1, 5, 17, 32):
        tokens = torch.randint(0, VOCAB, (1, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            expected = gpt(tokens).numpy()
        got = ss.predict(block, {"tokens": tokens.numpy().astype(np.float32)})["logits"]
        err = float(np.abs(np.asarray(got).reshape(expected.shape) - expected).max())
        worst = max(worst, err)
        print(f"  length {length:2}: logits {list(expected.shape)}, max |d| = {err:.2e}")
    if worst > 1e-4:
        print(f"FAIL: block logits differ by {worst:.2e} > 1e-4")
        ok = False

    # 2. the generation loop --------------------------------------------------------------
    generate = GreedyGenerate(gpt).eval()
    prompt = torch.randint(1, VOCAB, (1, 5))
    try:
        from_torch(generate, prompt)
        print("FAIL: tracing the data-dependent loop should have been refused")
        ok = False
    except ConvertError as exc:
        print("trace refused, as it should be:\n" +
              textwrap.fill(str(exc), 100, initial_indent="  ", subsequent_indent="  "))

    t0 = time.perf_counter()
    loop = from_torch(generate, prompt, script=True, output_names=["tokens"],
                      flexible={"prompt": (1, Range(1, MAX_LEN - generate.max_new))},
                      metadata={"description": "greedy generation until EOS (token 0)"},
                      save_to=out / "GreedyGenerate.mlmodel")
    counts = count_layers(loop.neuralNetwork.layers)
    print(f"scripted loop converted in {time.perf_counter() - t0:.1f} s: "
          f"{counts.get('loop', 0)} loop, {counts.get('branch', 0)} branch, "
          f"{sum(counts.values())} layers in all -> {out / 'GreedyGenerate.mlmodel'}")
    for length in (1, 3, 5, 9):
        for seed in range(2):
            p = torch.randint(1, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                expected = generate(p)[0].tolist()
            got = ss.predict(loop, {"prompt": p.numpy().astype(np.float32)})["tokens"]
            got = [int(round(v)) for v in np.asarray(got).reshape(-1)]
            stop = "EOS" if expected[-1] == EOS else "max_new"
            same = got == expected
            ok = ok and same
            print(f"  prompt {p[0].tolist()}: +{len(expected) - length} tokens (stop: {stop}) "
                  f"{'same as torch' if same else f'DIFFERENT: {got} vs {expected}'}")
    print("OK: block logits within 1e-4 and generated tokens identical" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ex05-"))
    sys.exit(main(target))
