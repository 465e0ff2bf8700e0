"""Real Pythia weights: Hugging Face GPT-NeoX checkpoints -> :class:`~.gpt_neox.GPTNeoX`
(defined in Chapter 9, the Pythia case study).

``from_pretrained("EleutherAI/pythia-70m")`` downloads the checkpoint with ``huggingface_hub``
(when the name is not a local folder); ``from_pretrained("/path/to/folder")`` reads a folder
holding ``config.json`` and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``),
as written by ``GPTNeoXForCausalLM.save_pretrained(folder)`` or ``huggingface-cli download``.

Names map one to one after dropping the ``gpt_neox.`` prefix; the output matrix is
``embed_out.weight`` in Pythia's files and ``lm_head.weight`` in checkpoints saved by
transformers 5. Buffers some old files carry (``attention.bias``, ``attention.masked_bias``,
``rotary_emb.inv_freq``) are recomputed, not loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..patterns import Pattern
from .gpt_neox import GPTNeoX, GPTNeoXConfig

__all__ = ["config_from_hf", "convert_state_dict", "load_hf_state_dict", "from_pretrained", "resolve_checkpoint"]

_IGNORED_SUFFIXES = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                     "tokenizer.json")


def config_from_hf(hf: dict, **overrides: Any) -> GPTNeoXConfig:
    """Our config from a Hugging Face GPT-NeoX ``config.json`` (transformers 4.x or 5.x keys).

    GPT-NeoX has one key/value head per query head: an override ``num_kv_heads`` other than None or
    ``num_heads`` raises ValueError (the weights cannot be grouped)."""
    if hf.get("model_type", "gpt_neox") != "gpt_neox":
        raise ValueError(f"expected a GPT-NeoX checkpoint (model_type 'gpt_neox'), got {hf.get('model_type')!r}")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only the default rotary embedding is supported, got rope_type={rope.get('rope_type')!r}")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"only hidden_act='gelu' (exact GELU, as Pythia) is supported, got {act!r}")
    if hf.get("tie_word_embeddings", False):
        raise ValueError("tied input/output embeddings are not GPT-NeoX's layout (tie_word_embeddings=True)")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != hf["hidden_size"] // hf["num_attention_heads"]:
        raise ValueError(f"head_dim={head_dim} differs from hidden_size / num_attention_heads")
    fields = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        rotary_pct=rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25)),
        rotary_base=float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0))),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        use_parallel_residual=hf.get("use_parallel_residual", True),
        attention_bias=hf.get("attention_bias", True),
        init_std=hf.get("initializer_range", 0.02),
    )
    fields.update(overrides)
    config = GPTNeoXConfig(**fields)
    if config.kv_heads != config.num_heads:  # GPT-NeoX's query_key_value has every head's k and v
        raise ValueError(f"Hugging Face GPT-NeoX checkpoints have no grouped-query attention: `num_kv_heads` "
                         f"must be None or num_heads={config.num_heads}, got {config.num_kv_heads!r}")
    return config


def convert_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``GPTNeoXForCausalLM`` state dict to ours (drops recomputed buffers)."""
    out = {}
    for name, tensor in hf_state.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        if name.startswith("gpt_neox."):
            key = name[len("gpt_neox."):]
        elif name in ("embed_out.weight", "lm_head.weight"):
            key = "embed_out.weight"
        else:
            raise KeyError(f"unexpected tensor {name!r} in a GPT-NeoX checkpoint")
        out[key] = tensor
    return out


def load_hf_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors checkpoint in ``folder`` (single file or sharded)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder} "
                            "(only safetensors checkpoints are read)")


def resolve_checkpoint(name_or_dir: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder for ``name_or_dir``: the folder itself, or a Hub download (needs network)."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; expected a Hugging Face GPT-NeoX checkpoint folder")
        return path
    name = str(name_or_dir)
    if os.sep in name.rstrip("/").replace("/", "", 1) or name.startswith((".", "~")):
        raise FileNotFoundError(f"no checkpoint folder at {path}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise ImportError("downloading checkpoints needs huggingface_hub (pip install huggingface_hub)") from e
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=list(_CHECKPOINT_FILES)))
    except Exception as e:
        raise RuntimeError(
            f"could not download {name!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
            f"Without network access, download it elsewhere (e.g. `hf download {name} "
            f"--local-dir pythia`), copy the folder here and pass its path instead of the name."
        ) from e


def from_pretrained(name_or_dir: str | os.PathLike, *, revision: str | None = None, pattern: Pattern | None = None,
                    dtype: torch.dtype = torch.float32, **config_overrides: Any) -> GPTNeoX:
    """A :class:`GPTNeoX` with the weights of a Hugging Face GPT-NeoX checkpoint.

    ``name_or_dir`` is a local folder or a Hub name such as ``"EleutherAI/pythia-70m"`` (downloaded
    with ``huggingface_hub``; offline this raises a ``RuntimeError`` saying how to supply a
    folder). ``pattern`` or ``attention=...`` in ``config_overrides`` swap the attention for a
    sparse one (the weights stay those of the dense model).
    """
    folder = resolve_checkpoint(name_or_dir, revision)
    config = config_from_hf(json.loads((folder / "config.json").read_text()), **config_overrides)
    model = GPTNeoX(config, pattern=pattern)
    state = convert_state_dict(load_hf_state_dict(folder))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint in {folder} does not fit the config: missing {missing}, unexpected {unexpected}")
    return model.to(dtype)
