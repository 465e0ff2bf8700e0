"""Whole-model effect of the kernel: training tokens/s of a GPT-NeoX with a local window against dense
SDPA, next to what Amdahl's law predicts from the attention's share and the kernel's speed-up.

Per preset and length ``n`` (batch 1), interleaved round by round:

* a training step (forward, cross-entropy, backward, AdamW) of the dense model, of the same
  model with ``attention="local"`` (causal window, the kernel's blocks), and of the same model
  with *no* attention (each layer's core returns ``v``: everything else of the step, unchanged);
* the attention alone at the model's shapes, forward + backward, ``num_layers`` times: causal SDPA
  and our kernel on the local layout.

The dense model's attention share is ``f = 1 - step_none / step_dense`` (all that attention
costs inside the model: the core, its head split and merge, its share of the backward); the
kernel's speed-up is ``s = SDPA / ours`` measured alone; the prediction is ``1 / ((1 - f) + f /
s)``; measured is ``step_dense / step_local``. The attention-alone ratio ``attn_sdpa /
step_dense`` is reported too (``attention_core_share_dense``).
Used by ``python -m sparse_core bench kernels`` (Chapters 4 and 9).
"""
from __future__ import annotations

import time

__all__ = ["model_case"]


def _no_attention():
    from ..attention.cores import CausalCore

    class NoAttention(CausalCore):
        """A core that attends to nothing: ``o = v`` (the step's other costs, measured alone)."""

        def full(self, q, k, v, scale):
            return v

    return NoAttention()


def model_case(preset_name: str, n: int, window: int, block_size: int, rounds: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..attention.ops import block_sparse_attention
    from ..models.gpt_neox import GPTNeoX, preset

    models, opts = {}, {}
    for kind in ("dense", "local", "none"):
        torch.manual_seed(0)
        cfg = preset(preset_name, attention="dense" if kind == "none" else kind, window=window,
                     block_size=block_size, max_position_embeddings=n)
        models[kind] = GPTNeoX(cfg)
        opts[kind] = torch.optim.AdamW(models[kind].parameters(), lr=1e-4)
    for layer in models["none"].layers:  # the step without attention: the shared core returns v
        layer.attention.__dict__["core"] = _no_attention()
    cfg = models["local"].config
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, cfg.vocab_size, (1, n + 1), generator=g)
    x, y = ids[:, :-1], ids[:, 1:]
    L, nh, hs = cfg.num_layers, cfg.num_heads, cfg.head_dim
    q, k, v = (torch.randn(1, nh, n, hs, generator=g, requires_grad=True) for _ in range(3))
    layout = models["local"].layers[0].attention.core.layout(n)

    def step(kind):
        def run():
            logits = models[kind](x)
            F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1)).backward()
            opts[kind].step()
            opts[kind].zero_grad(set_to_none=True)
        return run

    def attn_sdpa():
        for _ in range(L):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def attn_ours():
        for _ in range(L):
            block_sparse_attention(q, k, v, layout).sum().backward()

    fns = {"step_dense": step("dense"), "step_local": step("local"), "step_none": step("none"),
           "attn_sdpa": attn_sdpa, "attn_ours": attn_ours}
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(s)) for name, s in samples.items()}
    f = float(np.clip(np.median([1 - z / dn for z, dn in zip(samples["step_none"], samples["step_dense"])]), 0.0, 1.0))
    s = float(np.median([a / b for a, b in zip(samples["attn_sdpa"], samples["attn_ours"])]))
    measured = float(np.median([a / b for a, b in zip(samples["step_dense"], samples["step_local"])]))
    predicted = 1.0 / ((1.0 - f) + f / s)
    return {
        "preset": preset_name, "n": n, "window": window, "block_size": block_size,
        "block_density": layout.block_density, "ms": {name: 1e3 * t for name, t in med.items()},
        "tokens_per_s": {"dense": n / med["step_dense"], "local": n / med["step_local"], "none": n / med["step_none"]},
        "attention_share_dense": f, "attention_core_share_dense": med["attn_sdpa"] / med["step_dense"],
        "kernel_speedup_fwdbwd": s,
        "speedup_measured": measured, "speedup_amdahl": predicted, "measured_over_predicted": measured / predicted,
    }
