"""GPT-NeoX model: shapes, causality for every attention kind, KV-cache decoding, sparse-with-dense-
pattern equals dense, and equal logits with transformers' GPTNeoXForCausalLM on the same weights."""
import json

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.models import GPTNeoX, GPTNeoXConfig, attention_pattern, generate, preset
from sparse_core.models.gpt_neox import ATTENTION_KINDS
from sparse_core.models.hf_loading import config_from_hf, from_pretrained

# head_dim 16 -> 4 rotary dims; windows/strides smaller than the test lengths so sparsity matters
SMALL = dict(vocab_size=61, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=96, window=5,
             stride=4, block_size=8)


def _model(kind="dense", seed=0, pattern=None, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    model = GPTNeoX(GPTNeoXConfig(**{**SMALL, "attention": kind, **kw}), pattern=pattern).to(dtype).eval()
    with torch.no_grad():  # larger random weights than the init, so every part of the block matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _ids(b, n, seed=1, vocab=61):
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def test_pythia_70m_preset_has_the_published_parameter_count():
    config = preset("pythia-70m")
    assert (config.num_layers, config.hidden_size, config.num_heads, config.intermediate_size, config.rotary_ndims) \
        == (6, 512, 8, 2048, 16)
    model = GPTNeoX(config)
    assert model.num_parameters() == 70_426_624  # EleutherAI's count for pythia-70m (embeddings included)
    assert model.num_parameters(embeddings=False) == 70_426_624 - 2 * 50304 * 512


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_logits_shape_and_finite(kind):
    model = _model(kind, dtype=torch.float32)
    for b, n in ((1, 1), (2, 19), (3, 40)):  # 19, 40: not multiples of the block size 8
        out = model(_ids(b, n))
        assert out.shape == (b, n, 61) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ATTENTION_KINDS + ("custom",))
def test_no_future_token_influence(kind):
    """Changing token t leaves the logits of positions < t unchanged (and changes position t's)."""
    pattern = P.union(P.sliding_window(3, causal=False), P.global_tokens([0, 20])) if kind == "custom" else None
    model = _model("dense" if kind == "custom" else kind, pattern=pattern)
    ids = _ids(2, 37)
    base = model(ids)
    for t in (0, 9, 20, 36):
        other = ids.clone()
        other[:, t] = (other[:, t] + 1) % 61
        out = model(other)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-12, rtol=0)
        assert (out[:, t] - base[:, t]).abs().max() > 1e-3


def test_custom_non_causal_pattern_is_made_causal():
    """A bidirectional pattern handed to the model is intersected with causal()."""
    model = _model(pattern=P.sliding_window(3))
    mask = model.pattern.to_dense(12, 12)[0]
    np.testing.assert_array_equal(mask, P.sliding_window(3, causal=True).to_dense(12, 12)[0])


@pytest.mark.parametrize("kind", ["local", "strided", "fixed", "global_local"])
def test_one_layer_influence_follows_the_pattern(kind):
    """With one layer, token s can change position i's logits exactly when (i, s) is in the pattern."""
    model = _model(kind, num_layers=1, num_global=4)
    n = 29
    allowed = attention_pattern(model.config).to_dense(n, n)[0]
    ids = _ids(1, n)
    base = model(ids)
    for s in (0, 3, 8, 13):
        other = ids.clone()
        other[:, s] = (other[:, s] + 7) % 61
        changed = (model(other) - base).abs().amax(dim=-1)[0] > 1e-9
        expected = torch.from_numpy(allowed[:, s].copy())
        expected[s] = True  # the token's own embedding reaches its logits through the residual stream
        assert torch.equal(changed, expected), (kind, s)


def test_sparse_with_the_dense_pattern_equals_dense():
    dense_model = _model("dense")
    sparse_model = _model("dense", pattern=P.dense())
    sparse_model.load_state_dict(dense_model.state_dict())
    assert sparse_model.pattern is not None  # really goes through the block-sparse kernel
    ids = _ids(2, 45)
    a, b = dense_model(ids), sparse_model(ids)
    torch.testing.assert_close(b, a, atol=1e-10, rtol=0)
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, pa), pb in zip(dense_model.named_parameters(), sparse_model.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-9, rtol=1e-7, msg=name)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_kv_cache_decode_equals_full_forward(kind):
    model = _model(kind)
    ids = _ids(2, 43)
    full = model(ids)
    cache = model.new_cache()
    pieces = [model(ids[:, :21], cache=cache)]
    pieces.append(model(ids[:, 21:24], cache=cache))  # a chunk of 3 new tokens at once
    for t in range(24, 43):  # then one at a time
        pieces.append(model(ids[:, t:t + 1], cache=cache))
    assert cache.length == 43
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-10, rtol=0)


def test_global_local_decodes_from_a_prompt_shorter_than_its_global_positions():
    """num_global = 16 and a 5-token prompt: position 15 becomes global when the sequence reaches
    it, and decoding token by token from the cache equals the full forward pass at every step."""
    model = _model("global_local", num_global=16)
    ids = _ids(2, 31)
    full = model(ids)
    cache = model.new_cache()
    pieces = [model(ids[:, :5], cache=cache)]
    for t in range(5, 31):
        pieces.append(model(ids[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-10, rtol=0)
    mask = attention_pattern(model.config).to_dense(31, 31)[0]
    assert mask[30, :16].all() and not mask[30, 16:30 - SMALL["window"]].any()


def test_generate_greedy_equals_argmax_of_full_forward():
    model = _model("mixed")
    prompt = _ids(2, 11)
    out = generate(model, prompt, 9, temperature=0)
    assert out.shape == (2, 20) and torch.equal(out[:, :11], prompt)
    seq = prompt
    for _ in range(9):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    # top_k=1 sampling is greedy; a seeded generator repeats its samples
    assert torch.equal(generate(model, prompt, 9, temperature=0.7, top_k=1), out)
    s1 = generate(model, prompt, 9, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3))
    s2 = generate(model, prompt, 9, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)


def test_bad_arguments_have_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="vocab_size=61"):
        model(torch.full((1, 3), 61))
    with pytest.raises(ValueError, match="attention"):
        GPTNeoXConfig(**{**SMALL, "attention": "sparse"})
    with pytest.raises(ValueError, match="divisible"):
        GPTNeoXConfig(**{**SMALL, "hidden_size": 66})
    with pytest.raises(ValueError, match="3 heads"):
        GPTNeoX(GPTNeoXConfig(**SMALL), pattern=P.per_head([P.causal()] * 3))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("pythia-7b")
    with pytest.raises(ValueError, match="top_k"):
        generate(model, _ids(1, 3), 2, top_k=0)


# ------------------------------------------------------------------ Hugging Face checkpoints

transformers = pytest.importorskip("transformers", reason="transformers (dev extra) checks the loader")


@pytest.mark.parametrize("parallel", [True, False])
def test_loads_a_transformers_checkpoint_with_equal_logits(tmp_path, parallel):
    config = transformers.GPTNeoXConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=256, rotary_pct=0.25, use_parallel_residual=parallel,
                                        max_position_embeddings=128)
    torch.manual_seed(0)
    hf = transformers.GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    ours = from_pretrained(tmp_path).eval()
    assert ours.config.rotary_ndims == 4 and ours.config.use_parallel_residual == parallel
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters())
    ids = torch.randint(0, 100, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert expected.abs().max() > 1.0  # logits large enough for a difference to show
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # with the cache too: transformers' incremental decoding against ours
    with torch.no_grad():
        cache = ours.new_cache()
        step = torch.cat([ours(ids[:, :30], cache=cache), ours(ids[:, 30:], cache=cache)], dim=1)
    torch.testing.assert_close(step, expected, atol=1e-5, rtol=0)


def test_config_from_transformers_4_keys():
    old = {"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
           "num_attention_heads": 8, "intermediate_size": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
           "max_position_embeddings": 2048, "layer_norm_eps": 1e-5, "use_parallel_residual": True,
           "hidden_act": "gelu", "tie_word_embeddings": False}
    config = config_from_hf(old)
    assert config == preset("pythia-70m")
    with pytest.raises(ValueError, match="gelu"):
        config_from_hf({**old, "hidden_act": "relu"})


def test_hub_name_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(RuntimeError, match=r"EleutherAI/pythia-70m.*pass its path"):
        from_pretrained("EleutherAI/pythia-70m")
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="gpt_neox"):
        from_pretrained(tmp_path)


def test_decode_rows_with_no_allowed_key_give_zero_attention_like_the_kernel():
    """A pattern can leave a query with no key (here odd positions see odd keys and even positions
    nothing); the block-sparse kernel returns zeros there, and so must the cached decoding path."""
    class OddOnly(P.Pattern):
        def _mask(self, h, i, j):
            return ((i % 2) == 1) & ((j % 2) == 1)

    model = _model(pattern=OddOnly())
    assert not model.pattern.to_dense(20, 20)[0, ::2].any()  # even positions see nothing
    ids = _ids(1, 20)
    full = model(ids)
    cache = model.new_cache()
    steps = [model(ids[:, :1], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(1, 20)]
    out = torch.cat(steps, dim=1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, full, atol=1e-10, rtol=0)


def test_forward_flops_matches_torch_flop_counter_and_the_cost_model():
    from torch.utils.flop_counter import FlopCounterMode

    from sparse_core.attention.cost import attention_cost
    from sparse_core.models import forward_flops

    config = preset("tiny", vocab_size=300, num_layers=3, intermediate_size=200)
    model = GPTNeoX(config).eval()
    n = 70
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, n, dtype=torch.long))
    flops = forward_flops(config, n)
    # every matrix product outside the attention core (PyTorch counts 2 FLOPs per multiply-add too)
    assert flops["projections"] + flops["mlp"] + flops["output"] == counter.get_total_flops()
    core = attention_cost(n, n, config.head_dim, n_heads=config.num_heads, causal=True).matmul_flops
    assert flops["attention"] == config.num_layers * core
    assert flops["total"] == sum(flops[k] for k in ("projections", "mlp", "attention", "output"))
    assert forward_flops(config, n, pairs=0)["attention_fraction"] == 0.0
    with pytest.raises(ValueError, match="pairs"):
        forward_flops(config, n, pairs=n * n + 1)
    with pytest.raises(ValueError, match="`n`"):
        forward_flops(config, 0)
