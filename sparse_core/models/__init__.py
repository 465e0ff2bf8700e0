"""Language models of the course's case study.

* :mod:`sparse_core.models.gpt_neox` -- the GPT-NeoX architecture as Pythia uses it, with
  pluggable attention (dense SDPA or any sparsity :class:`~sparse_core.patterns.Pattern` through
  the block-sparse kernel) and a key-value cache for generation;
* :mod:`sparse_core.models.hf_loading` -- real Pythia weights from Hugging Face GPT-NeoX
  safetensors checkpoints.
"""
from .gpt_neox import PRESETS, GPTNeoX, GPTNeoXConfig, KVCache, attention_pattern, forward_flops, generate, preset

__all__ = ["GPTNeoX", "GPTNeoXConfig", "KVCache", "PRESETS", "preset", "attention_pattern", "generate", "forward_flops"]
