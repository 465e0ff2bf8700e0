"""Every attention layer of the library is one head-splitting layer with an attention core; each
configuration gives the numbers the separate class it replaced gave.

``tests/data/layer_numbers.pt`` holds, for every case below, digests (:func:`digest`) of the
outputs, input and parameter gradients, the state-dict and parameter names and side results
(penalties, stats, moved centroids) that the separate classes computed from the same seeds
(written once with ``python tests/test_layer_configurations.py --write`` before the classes
became configurations). Each case builds its layer from a seed,
so equal numbers also mean equal initialisation (the same random draws in the same order).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_core import approx as A
from sparse_core import patterns as P
from sparse_core.attention.layer import SparseSelfAttention
from sparse_core.lm import distill as D
from sparse_core.models import GPTNeoX, GPTNeoXConfig, preset

NUMBERS = Path(__file__).parent / "data" / "layer_numbers.pt"
D_MODEL, HEADS, N = 16, 4, 13


def _x(seed=1, n=N, b=2):
    return torch.randn(b, n, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _seeded(make, seed=0):
    torch.manual_seed(seed)
    return make().double()


def _mha(batch_first):
    torch.manual_seed(5)
    return nn.MultiheadAttention(D_MODEL, HEADS, batch_first=batch_first).double()


def digest(t: torch.Tensor) -> torch.Tensor:
    """A float64 fingerprint of ``t``: sum, sum of squares, three seeded random projections and the
    first six entries (small tensors are kept whole)."""
    t = t.detach().double().flatten()
    if t.numel() <= 64:
        return t.clone()
    r = torch.randn(3, t.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(t.numel()))
    return torch.cat([t.sum()[None], t.square().sum()[None], r @ t, t[:6]])


# ------------------------------------------------------------------ layers on x [batch, n, d_model]

LAYERS = {
    "sparse_dense": lambda: SparseSelfAttention(D_MODEL, HEADS, block_size=4),
    "sparse_window": lambda: SparseSelfAttention(D_MODEL, HEADS, P.sliding_window(3, causal=True), block_size=4),
    "sparse_per_head": lambda: SparseSelfAttention(D_MODEL, HEADS, P.bigbird(N, 4, 0, n_heads=HEADS), block_size=4),
    "sparse_no_bias": lambda: SparseSelfAttention(D_MODEL, HEADS, P.causal(), block_size=8, bias=False),
    "sparse_from_mha": lambda: SparseSelfAttention.from_multihead(_mha(True), P.sliding_window(2), block_size=4),
    "sparse_from_mha_seq_first": lambda: SparseSelfAttention.from_multihead(_mha(False), None, block_size=4),
    "topk": lambda: A.TopKSelfAttention(D_MODEL, HEADS, topk=4),
    "topk_causal_blockwise": lambda: A.TopKSelfAttention(D_MODEL, HEADS, topk=3, causal=True, block_size=4),
    "topk_from_mha": lambda: A.TopKSelfAttention.from_multihead(_mha(True), topk=5, causal=True),
    "routing": lambda: A.RoutingSelfAttention(D_MODEL, HEADS, n_clusters=3, seed=2, chunk=5),
    "routing_causal_shared": lambda: A.RoutingSelfAttention(D_MODEL, HEADS, n_clusters=2, causal=True,
                                                            shared_qk=True, decay=0.9),
    "learned_mask": lambda: A.LearnedMaskSelfAttention(D_MODEL, HEADS, hidden=5, chunk=4),
    "learned_mask_causal_hard": lambda: A.LearnedMaskSelfAttention(D_MODEL, HEADS, causal=True, hard=True),
    "nsa": lambda: A.NSASelfAttention(D_MODEL, HEADS, block_size=4, n_select=2, window=3),
    "nsa_causal": lambda: A.NSASelfAttention(D_MODEL, HEADS, block_size=3, n_select=1, window=2, causal=True,
                                             chunk=5),
    "dense_synthesizer": lambda: A.DenseSynthesizerAttention(D_MODEL, HEADS, max_len=20, hidden=6),
    "dense_synthesizer_causal": lambda: A.DenseSynthesizerAttention(D_MODEL, HEADS, max_len=N, causal=True),
    "random_synthesizer": lambda: A.RandomSynthesizerAttention(D_MODEL, HEADS, max_len=20, seed=3),
    "random_synthesizer_fixed_causal": lambda: A.RandomSynthesizerAttention(D_MODEL, HEADS, max_len=20, causal=True,
                                                                           trainable=False),
    "linformer": lambda: A.LinformerSelfAttention(D_MODEL, HEADS, seq_len=20, k=5),
    "linformer_none": lambda: A.LinformerSelfAttention(D_MODEL, HEADS, seq_len=20, k=5, sharing="none"),
    "linformer_kv": lambda: A.LinformerSelfAttention(D_MODEL, HEADS, seq_len=20, k=5, sharing="kv"),
    "linformer_layerwise": lambda: A.LinformerSelfAttention(
        D_MODEL, HEADS, seq_len=20, k=5, projection=nn.Parameter(torch.rand(20, 5, dtype=torch.float64))),
    "performer": lambda: A.PerformerSelfAttention(D_MODEL, HEADS, n_features=7, seed=1),
    "performer_causal": lambda: A.PerformerSelfAttention(D_MODEL, HEADS, causal=True, chunk_size=4),
    "performer_package_iid": lambda: A.PerformerSelfAttention(D_MODEL, HEADS, n_features=6, orthogonal=False,
                                                              kernel="performer_pytorch", scaling=1),
    "performer_redraw": lambda: A.PerformerSelfAttention(D_MODEL, HEADS, feature_redraw_interval=1, seed=4),
}
TRAINING = {"routing", "routing_causal_shared", "performer_redraw"}  # cases whose training forward moves state
# The synthesizers draw their initial weights in another order now (they never drew a query/key projection):
# their cases load the weights saved from the old classes instead, which also checks old checkpoints load.
LOADED = {name for name in LAYERS if "synthesizer" in name}


def layer_numbers(name: str, state: dict | None = None) -> dict:
    layer = _seeded(LAYERS[name])
    if state is not None:
        layer.load_state_dict(state)
    layer.train(name in TRAINING)
    x = _x().requires_grad_()
    out = {"names": list(layer.state_dict()), "params": [n for n, _ in layer.named_parameters()]}
    ys = [layer(x) for _ in range(2 if name in TRAINING else 1)]  # twice: the second sees the moved state
    out["y"] = [digest(y) for y in ys]
    ys[-1].square().sum().backward()
    out["x_grad"] = digest(x.grad)
    out["param_grads"] = [None if p.grad is None else digest(p.grad) for p in layer.parameters()]
    if "routing" in name:
        out["centroids"] = digest(layer.centroids)
    if "learned_mask" in name:
        out["l1"] = layer.l1_penalty().detach()
        out["gates"] = digest(layer.gates(x.detach()))
    if "performer" in name:
        out["projection"] = digest(layer.projection_matrix)
    if name in LOADED:
        out["state"] = state if state is not None else {k: t.clone() for k, t in layer.state_dict().items()}
    return out


# ------------------------------------------------------------------ GPT-NeoX and its students

SMALL = dict(vocab_size=37, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, window=5, stride=4,
             block_size=8)
MODELS = {kind: dict(attention=kind) for kind in ("dense", "local", "strided", "fixed", "mixed")}
MODELS["custom"] = dict(pattern=P.union(P.sliding_window(2), P.global_tokens([0, 9])))


def _ids(b=2, n=29, seed=3, vocab=37):
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def model_numbers(name: str) -> dict:
    spec = dict(MODELS[name])
    pattern = spec.pop("pattern", None)
    torch.manual_seed(0)
    model = GPTNeoX(GPTNeoXConfig(**{**SMALL, **spec}), pattern=pattern).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ids = _ids()
    full = model(ids)
    cache = model.new_cache()
    steps = [model(ids[:, :11], cache=cache), model(ids[:, 11:14], cache=cache)]
    steps += [model(ids[:, t:t + 1], cache=cache) for t in range(14, ids.shape[1])]
    return {"names": list(model.state_dict()), "logits": digest(full), "decoded": digest(torch.cat(steps, 1))}


STUDENTS = {"mask": {}, "mask_hard": {}, "nsa": {}, "performer": dict(n_features=5, chunk_size=8), "topk": {},
            "block_local": dict(pattern="local"), "block_mixed": dict(pattern="mixed", stride=4),
            "block_strided": dict(pattern="strided", stride=4, block_size=4)}


def student_numbers(name: str) -> dict:
    kind = name.split("_")[0]
    torch.manual_seed(0)
    teacher = GPTNeoX(preset("tiny", vocab_size=37, hidden_size=32, intermediate_size=48))
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cfg = D.DistillConfig(**{**dict(student=kind, seq_len=24, topk=5, nsa_block=4, nsa_select=2, nsa_window=5,
                                     window=6, block_size=8, hidden=4, seed=1), **STUDENTS[name]})
    student = D.make_student(teacher, cfg).double()
    if name == "mask_hard":
        for layer in student.layers:
            layer.attention.hard = True
    ids = _ids(n=24)
    with D.record_stats(student) as stats:
        logits = student(ids)
    out = {"names": list(student.state_dict()), "params": [n for n, _ in student.named_parameters()],
           "logits": digest(logits), "stats": dict(stats),
           "trainable": D.attention_parameter_names(student, cfg.train_mode)}
    pen = D.l1_penalty(student)
    loss = logits.square().mean() + (0 if pen is None else pen)
    loss.backward()
    out["grads"] = [digest(p.grad) for p in student.parameters() if p.requires_grad]
    if pen is not None:
        out["l1"] = pen.detach()
    return out


def all_numbers() -> dict:
    return {**{f"layer/{k}": layer_numbers(k) for k in LAYERS}, **{f"model/{k}": model_numbers(k) for k in MODELS},
            **{f"student/{k}": student_numbers(k) for k in STUDENTS}}


# ------------------------------------------------------------------ the comparison

@pytest.fixture(scope="module")
def saved():
    return torch.load(NUMBERS, weights_only=False)


def _same(got, want, what):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, what
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10, msg=what)
    elif isinstance(want, dict):
        assert set(got) == set(want), what
        for key in want:
            _same(got[key], want[key], f"{what}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{what}[{i}]")
    else:
        assert got == want, what


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_configuration_equals_the_class_it_replaced(saved, name):
    want = saved[f"layer/{name}"]
    _same(layer_numbers(name, want.get("state")), want, name)


@pytest.mark.parametrize("name", list(MODELS))
def test_gpt_neox_attention_equals_the_old_model(saved, name):
    _same(model_numbers(name), saved[f"model/{name}"], name)


@pytest.mark.parametrize("name", list(STUDENTS))
def test_student_equals_the_old_student(saved, name):
    _same(student_numbers(name), saved[f"student/{name}"], name)


def test_saved_numbers_cover_every_case(saved):
    assert set(saved) == ({f"layer/{k}" for k in LAYERS} | {f"model/{k}" for k in MODELS}
                          | {f"student/{k}" for k in STUDENTS})


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    NUMBERS.parent.mkdir(exist_ok=True)
    torch.save(all_numbers(), NUMBERS)
    print(f"wrote {NUMBERS}")
