"""Grouped-query attention (``num_kv_heads``): the layer against a hand-written float64 reference
(both qkv layouts, dense and block-sparse cores), gradients, the GPT-NeoX model (cache decoding,
cached heads, parameter count, config), the Hugging Face loader's refusal and the train command."""
import dataclasses
import math
import os
import signal

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.cores import BlockSparseCore, DenseCore
from sparse_core.attention.layer import KVCache, MultiHeadAttention
from sparse_core.cli import lm as lm_cli
from sparse_core.cli.main import build_parser
from sparse_core.lm.distill import DistillConfig, make_student
from sparse_core.lm.train import CHECKPOINT, TrainConfig, load_run, train
from sparse_core.models import GPTNeoX, GPTNeoXConfig, forward_flops, preset
from sparse_core.models.hf_loading import config_from_hf

D, H = 32, 4
HS = D // H
KV_HEADS = (1, 2, H)


def _x(n, b=2, seed=0):
    return torch.randn(b, n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _layer(core, n_kv, layout, seed=0):
    torch.manual_seed(seed)
    layer = MultiHeadAttention(D, H, core, qkv_layout=layout, num_kv_heads=n_kv).double()
    with torch.no_grad():  # non-zero biases: a misplaced bias row shows
        layer.qkv_proj.bias.normal_()
        layer.out_proj.bias.normal_()
    return layer


def _reference(layer, x, keep):
    """The layer by hand: the documented row order of the fused projection, one key/value head per
    group of ``G`` query heads, dense softmax attention over ``keep (nh or 1, T, S)``, in float64."""
    nh, n_kv = layer.n_heads, layer.n_kv_heads
    G = nh // n_kv
    y = x @ layer.qkv_proj.weight.T + layer.qkv_proj.bias                     # (B, T, C + 2 n_kv hs)
    assert y.shape[-1] == D + 2 * n_kv * HS

    def cols(start):
        return y[..., start * HS:(start + 1) * HS]                            # (B, T, hs)

    if layer.qkv_layout == "stacked":  # [q_0 .. q_{nh-1}; k_0 .. k_{n_kv-1}; v_0 .. v_{n_kv-1}]
        q = [cols(h) for h in range(nh)]
        k = [cols(nh + g) for g in range(n_kv)]
        v = [cols(nh + n_kv + g) for g in range(n_kv)]
    else:  # per key/value head g: [q_{gG} .. q_{gG+G-1} | k_g | v_g]
        q = [cols((h // G) * (G + 2) + h % G) for h in range(nh)]
        k = [cols(g * (G + 2) + G) for g in range(n_kv)]
        v = [cols(g * (G + 2) + G + 1) for g in range(n_kv)]
    outs = []
    for h in range(nh):
        s = q[h] @ k[h // G].transpose(-1, -2) / math.sqrt(HS)                 # (B, T, S)
        s = s.masked_fill(~keep[h % keep.shape[0]], float("-inf"))
        outs.append(torch.softmax(s, dim=-1) @ v[h // G])                      # (B, T, hs)
    return torch.cat(outs, dim=-1) @ layer.out_proj.weight.T + layer.out_proj.bias


def _causal(n):
    return torch.ones(1, n, n, dtype=torch.bool).tril()


def _check_grads_against_reference(layer, x, keep, seed):
    w = torch.randn(x.shape[0], x.shape[1], D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    params = [layer.qkv_proj.weight, layer.qkv_proj.bias, layer.out_proj.weight, layer.out_proj.bias]
    got = torch.autograd.grad((layer(x) * w).sum(), params)
    want = torch.autograd.grad((_reference(layer, x, keep) * w).sum(), params)
    for p, g, r in zip(params, got, want):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        if g.ndim == 2:  # every row of every q, k, v head and of the output (the key bias's gradient is 0:
            assert (g.abs().sum(-1) > 0).all(), f"rows of {tuple(p.shape)} get no gradient"  # softmax ignores it)
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("layout", ["stacked", "per_head"])
@pytest.mark.parametrize("n_kv", KV_HEADS)
@pytest.mark.parametrize("causal", [False, True])
def test_dense_core_layer_equals_the_grouped_reference(layout, n_kv, causal):
    n = 23
    layer = _layer(DenseCore(causal=causal), n_kv, layout, seed=n_kv)
    assert layer.qkv_proj.weight.shape == (D + 2 * n_kv * HS, D)
    x = _x(n, seed=n_kv)
    keep = _causal(n) if causal else torch.ones(1, n, n, dtype=torch.bool)
    torch.testing.assert_close(layer(x), _reference(layer, x, keep), atol=1e-12, rtol=0)
    q, k, v = layer.qkv_heads(x)
    assert q.shape == (2, H, n, HS) and k.shape == v.shape == (2, n_kv, n, HS)
    _check_grads_against_reference(layer, x, keep, seed=n_kv)


BLOCK_PATTERNS = {
    "window": (lambda: P.sliding_window(5), False),
    "causal window": (lambda: P.sliding_window(9, causal=True), True),
    "per-head windows": (lambda: P.per_head([P.sliding_window(w) for w in (1, 4, 9, 20)]), False),
}


@pytest.mark.parametrize("layout", ["stacked", "per_head"])
@pytest.mark.parametrize("n_kv", KV_HEADS)
@pytest.mark.parametrize("name", list(BLOCK_PATTERNS))
def test_block_sparse_core_layer_equals_its_dense_mask_reference(layout, n_kv, name):
    n, block = 67, 16  # odd: the last block is partial
    make, causal = BLOCK_PATTERNS[name]
    pattern = make()
    layer = _layer(BlockSparseCore(pattern, block, H, causal=causal), n_kv, layout, seed=10 + n_kv)
    x = _x(n, seed=10 + n_kv)
    keep = torch.from_numpy(pattern.to_dense(n, n, pattern.n_heads or 1))
    torch.testing.assert_close(layer(x), _reference(layer, x, keep), atol=1e-12, rtol=0)
    _check_grads_against_reference(layer, x, keep, seed=n_kv)


class _HeadsMustMatch(DenseCore):
    """A core without grouped-query support: the layer must repeat k, v before calling it."""

    supports_gqa = False

    def full(self, q, k, v, scale):
        assert k.shape[-3] == v.shape[-3] == q.shape[-3]
        return super().full(q, k, v, scale)

    def rows(self, q, k, v, offset):
        assert k.shape[-3] == v.shape[-3] == q.shape[-3]
        return super().rows(q, k, v, offset)


@pytest.mark.parametrize("core", [
    lambda: DenseCore(causal=True),
    lambda: _HeadsMustMatch(causal=True),
    lambda: BlockSparseCore(P.sliding_window(6, causal=True), 8, H, causal=True),
], ids=["dense", "no gqa support", "block-sparse"])
@pytest.mark.parametrize("n_kv", [1, 2])
def test_cache_keeps_the_key_value_heads_and_decoding_equals_the_whole_sequence(core, n_kv):
    n = 19
    layer = _layer(core(), n_kv, "per_head", seed=20 + n_kv)
    x = _x(n, seed=20 + n_kv)
    full = layer(x)
    cache = KVCache(1)
    steps = [layer(x[:, :7], cache=cache)]
    steps += [layer(x[:, t:t + 1], cache=cache, offset=t) for t in range(7, n)]
    k, v = cache.layers[0]
    assert k.shape == v.shape == (2, n_kv, n, HS)  # the memory saving: n_kv heads, not n_heads
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [0, -2, 3, 8, True, "2", 2.0])
def test_layer_rejects_bad_num_kv_heads(bad):
    with pytest.raises(ValueError, match=r"`num_kv_heads` must be None or a positive integer dividing `n_heads`=4"):
        MultiHeadAttention(D, H, DenseCore(), num_kv_heads=bad)


def test_defaults_repr_and_from_multihead():
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True)
    layer = MultiHeadAttention.from_multihead(mha, DenseCore())
    assert layer.n_kv_heads == H and "num_kv_heads" not in repr(layer)
    assert MultiHeadAttention(D, H, DenseCore(), num_kv_heads=H).qkv_proj.weight.shape == (3 * D, D)
    assert "num_kv_heads=2" in repr(MultiHeadAttention(D, H, DenseCore(), num_kv_heads=2))
    with pytest.raises(ValueError, match="`num_kv_heads` must be None or 4"):
        MultiHeadAttention.from_multihead(mha, DenseCore(), num_kv_heads=2)


# ---------------------------------------------------------------------------- GPT-NeoX

def _model(n_kv, kind="dense", seed=0):
    torch.manual_seed(seed)
    return GPTNeoX(preset("tiny", vocab_size=61, num_kv_heads=n_kv, attention=kind, window=8,
                          block_size=16)).double().eval()


@pytest.mark.parametrize("kind", ["dense", "local"])
@pytest.mark.parametrize("n_kv", [1, 2])
def test_gpt_neox_decoding_token_by_token_equals_the_whole_sequence(kind, n_kv):
    model = _model(n_kv, kind, seed=n_kv)
    ids = torch.randint(0, 61, (2, 37), generator=torch.Generator().manual_seed(n_kv))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, t:t + 1], cache=cache) for t in range(37)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=0)
    hs = model.config.head_dim
    assert all(k.shape == v.shape == (2, n_kv, 37, hs) for k, v in cache.layers)


@pytest.mark.parametrize("n_kv", [1, 2])
def test_gpt_neox_parameters_and_flops_shrink_by_the_key_value_projections(n_kv):
    base, grouped = _model(None), _model(n_kv)
    cfg = grouped.config
    h, L, kv_dim = cfg.hidden_size, cfg.num_layers, n_kv * cfg.head_dim
    assert base.num_parameters() - grouped.num_parameters() == L * 2 * (h - kv_dim) * (h + 1)  # weights + biases
    assert grouped.layers[0].attention.query_key_value.weight.shape == (h + 2 * kv_dim, h)
    n = 50
    weights = sum(m.attention.query_key_value.weight.numel() + m.attention.dense.weight.numel()
                  for m in grouped.layers)
    assert forward_flops(cfg, n)["projections"] == 2 * n * weights
    assert forward_flops(base.config, n)["projections"] == L * 2 * n * 4 * h * h  # unchanged without GQA


def test_gpt_neox_config_round_trip_old_configs_and_bad_values():
    cfg = preset("tiny", num_kv_heads=2)
    d = cfg.to_dict()
    assert d["num_kv_heads"] == 2 and GPTNeoXConfig.from_dict(d) == cfg
    old = {k: v for k, v in d.items() if k != "num_kv_heads"}  # saved before the field existed
    assert GPTNeoXConfig.from_dict(old).num_kv_heads is None and GPTNeoXConfig.from_dict(old).kv_heads == 4
    assert preset("tiny", num_kv_heads=4).kv_heads == 4
    for bad in (0, 3, True, "2"):
        with pytest.raises(ValueError, match="`num_kv_heads`") as e:
            preset("tiny", num_kv_heads=bad)
        assert "\n" not in str(e.value)
    assert "`num_heads`=4" in str(pytest.raises(ValueError, preset, "tiny", num_kv_heads=3).value)


def test_hugging_face_checkpoints_have_no_grouped_query_attention():
    hf = dict(model_type="gpt_neox", vocab_size=61, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
              intermediate_size=64)
    assert config_from_hf(hf).kv_heads == 4 and config_from_hf(hf, num_kv_heads=4).kv_heads == 4
    with pytest.raises(ValueError, match="no grouped-query attention: `num_kv_heads` must be None or num_heads=4"):
        config_from_hf(hf, num_kv_heads=2)


@pytest.mark.parametrize("student", ["topk", "block", "mask"])
def test_distillation_students_of_a_grouped_query_teacher(student):
    teacher = _model(2, seed=3).float()
    cfg = DistillConfig(student=student, topk=64, pattern="local", window=64, block_size=16, hidden=4)
    s = make_student(teacher, cfg)  # the teacher's query_key_value fits the student's
    ids = torch.randint(0, 61, (1, 29), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        zs, zt = s(ids), teacher(ids)
    assert torch.isfinite(zs).all()
    if student != "mask":  # top-64 and a 64-wide window of 29 tokens are the dense causal attention
        torch.testing.assert_close(zs, zt, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- the train command

def _tokens(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 64, n).astype(np.int32)


def test_train_option_num_kv_heads_trains_and_resumes(tmp_path):
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--num-kv-heads", "2"])
    assert "num_kv_heads" in lm_cli.MODEL_FIELDS and args.num_kv_heads == 2
    assert build_parser().parse_args(["train", "--out", str(tmp_path)]).num_kv_heads is None
    with pytest.raises(ValueError, match="`num_kv_heads`"):
        TrainConfig(num_kv_heads=3)

    cfg = TrainConfig(preset="tiny", vocab_size=64, seq_len=16, batch_size=2, steps=4, warmup=1, eval_interval=4,
                      eval_batches=1, checkpoint_interval=2, num_kv_heads=2)
    data = dict(train_tokens=_tokens(800, 0), val_tokens=_tokens(200, 1), progress=False, log=lambda s: None)
    full = train(cfg, tmp_path / "full", **data)

    def ctrl_c(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    part = train(cfg, tmp_path / "cut", callback=ctrl_c, **data)
    assert part["interrupted"] and part["step"] == 2
    with pytest.raises(ValueError, match="num_kv_heads"):
        train(dataclasses.replace(cfg, num_kv_heads=1), tmp_path / "cut", resume=True, **data)
    rest = train(cfg, tmp_path / "cut", resume=True, **data)
    assert rest["finished"] and rest["history"] == full["history"]
    model, _, state = load_run(tmp_path / "cut")
    assert state["model_config"]["num_kv_heads"] == 2 and model.layers[0].attention.n_kv_heads == 2
    assert (tmp_path / "cut" / CHECKPOINT).is_file()
