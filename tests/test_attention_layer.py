"""The one attention layer (MultiHeadAttention) and its cores: nn.MultiheadAttention's conventions,
the key-value cache, a core's weights registered on its layer, and the library's one layout cache."""
import copy

import pytest
import torch
from torch import nn

from sparse_core import approx as A
from sparse_core import patterns as P
from sparse_core.approx.learned_mask import LearnedMaskCore
from sparse_core.approx.topk import TopKCore
from sparse_core.attention.cores import LAYOUT_CACHE_SIZE, BlockSparseCore, DenseCore, layout_for
from sparse_core.attention.layer import KVCache, MultiHeadAttention, SparseSelfAttention
from sparse_core.models import GPTNeoX, preset

D, H = 32, 4


def _x(n=23, b=2, seed=0):
    return torch.randn(b, n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_core_layer_equals_multihead_attention(batch_first, causal):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(D, H, batch_first=batch_first).double()
    layer = MultiHeadAttention.from_multihead(mha, DenseCore(causal=causal))
    x = _x()
    mask = torch.ones(23, 23, dtype=torch.bool).triu(1) if causal else None  # True = not allowed
    xm = x if batch_first else x.transpose(0, 1)
    want, _ = mha(xm, xm, xm, attn_mask=mask, need_weights=False)
    want = want if batch_first else want.transpose(0, 1)
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=0)


def test_kv_cache_decoding_equals_the_whole_sequence():
    torch.manual_seed(1)
    for core in (DenseCore(causal=True), BlockSparseCore(P.sliding_window(4, causal=True), 8, H, causal=True)):
        layer = MultiHeadAttention(D, H, core).double()
        x = _x(n=19)
        full = layer(x)
        cache = KVCache(1)
        steps = [layer(x[:, :7], cache=cache)]
        steps += [layer(x[:, t:t + 1], cache=cache, offset=t) for t in range(7, 19)]
        assert cache.length == 19
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-12, rtol=0)


def test_whole_sequence_cores_refuse_a_cache():
    layer = A.TopKSelfAttention(D, H, topk=3, causal=True)
    with pytest.raises(ValueError, match="TopKCore computes whole sequences only \\(no key-value cache\\)"):
        layer(torch.zeros(1, 4, D), cache=KVCache(1))


def test_core_weights_are_the_layers_under_their_own_names():
    torch.manual_seed(2)
    layer = A.LearnedMaskSelfAttention(D, H, hidden=5, causal=True)
    assert list(layer.state_dict()) == ["qkv.weight", "qkv.bias", "out.weight", "out.bias", "gate.w_q.weight",
                                        "gate.w_q.bias", "gate.w_k.weight", "gate.w_2.weight", "gate.w_2.bias"]
    assert layer.gate is layer.core.gate
    assert {id(p) for p in layer.parameters()} >= {id(p) for p in layer.core.gate.parameters()}


def test_conversions_copies_and_modes_reach_the_core():
    layer = A.PerformerSelfAttention(D, H, feature_redraw_interval=3)
    layer.double()  # a buffer conversion replaces the tensor: the core must see the new one
    assert layer.core.projection_matrix.dtype == torch.float64
    assert layer.core.projection_matrix is layer.projection_matrix
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.qkv.weight.zero_()
        twin.projection_matrix.fill_(1.0)
    assert twin.core.projection_matrix.eq(1.0).all() and not layer.projection_matrix.eq(1.0).all()
    layer.eval()
    assert not layer.core.training
    layer.train()
    assert layer.core.training
    routing = A.RoutingSelfAttention(D, H, n_clusters=2, decay=0.5).double()
    c0 = routing.centroids.clone()
    routing.eval()(_x())
    assert torch.equal(routing.centroids, c0)  # eval mode: the core leaves its centroids alone
    routing.train()(_x())
    assert not torch.equal(routing.centroids, c0)


def test_core_settings_read_and_write_through_the_layer():
    torch.manual_seed(3)
    layer = A.TopKSelfAttention(D, H, topk=23).double()
    x = _x()
    dense = MultiHeadAttention(D, H, DenseCore(causal=False)).double()
    dense.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), dense(x), atol=1e-12, rtol=0)  # top-n of n is dense
    assert layer.topk == 23
    layer.topk = 2
    assert layer.core.topk == 2 and "topk=2" in repr(layer)
    assert not torch.allclose(layer(x), dense(x))


def test_a_core_with_weights_belongs_to_one_layer():
    core = LearnedMaskCore(D // H, hidden=4)
    MultiHeadAttention(D, H, core)
    with pytest.raises(ValueError, match="belongs to one layer"):
        MultiHeadAttention(D, H, core)
    shared = DenseCore()  # a core without weights may serve many layers (a model's layers share one)
    assert MultiHeadAttention(D, H, shared).core is MultiHeadAttention(D, H, shared).core


@pytest.mark.parametrize("make,match", [
    (lambda: MultiHeadAttention(D, H, "dense"), "`core` must be a sparse_core.attention.cores.AttentionCore"),
    (lambda: MultiHeadAttention(D, H, qkv_layout="interleaved"), "`qkv_layout` must be one of"),
    (lambda: MultiHeadAttention(D, H, bias=1), "`bias` must be a bool"),
    (lambda: MultiHeadAttention(D, H)(torch.zeros(1, 3, D)), "no attention core"),
    (lambda: MultiHeadAttention(D, H, DenseCore(causal=1)), "`causal` must be a bool"),
    (lambda: MultiHeadAttention.from_multihead(nn.Linear(D, D), DenseCore()), "`mha` must be a torch.nn.Multihead"),
    (lambda: layout_for("window", 8, 8, 4), "`pattern` must be a sparse_core.patterns.Pattern"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        make()


# ------------------------------------------------------------------ the layout cache

def test_layers_with_one_pattern_share_its_layouts():
    pattern = P.sliding_window(5, causal=True)
    a, b = SparseSelfAttention(D, H, pattern, block_size=8), SparseSelfAttention(D, H, pattern, block_size=8)
    assert a.layout(40) is b.layout(40) is layout_for(pattern, 40, 40, 8) is layout_for(pattern, 40, 40, 8, n_heads=1)
    assert a.layout(40) is not a.layout(48)
    assert SparseSelfAttention(D, H, pattern, block_size=16).layout(40).block_size == 16
    model = GPTNeoX(preset("tiny", vocab_size=20, num_layers=3, attention="local", window=8, block_size=8))
    cores = {id(layer.attention.core) for layer in model.layers}
    assert len(cores) == 1  # one core for every layer, so one layout (and one decoding mask) per length
    assert model.layers[0].attention.core.layout(24) is layout_for(model.pattern, 24, 24, 8, 1)


def test_layout_cache_is_bounded():
    pattern = P.causal()
    layout_for.cache_clear()
    first = layout_for(pattern, 1, 1, 4)
    for n in range(2, LAYOUT_CACHE_SIZE + 10):
        layout_for(pattern, n, n, 4)
    info = layout_for.cache_info()
    assert info.maxsize == LAYOUT_CACHE_SIZE and info.currsize == LAYOUT_CACHE_SIZE
    again = layout_for(pattern, 1, 1, 4)  # dropped as the least recently used, so built anew
    assert again is not first and again.n_q == first.n_q == 1


def test_the_model_core_is_the_hook_every_layer_calls():
    """Wrapping the shared core's ``full`` (as Chapter 9 times the attention) sees every layer."""
    model = GPTNeoX(preset("tiny", vocab_size=20, num_layers=3)).eval()
    core = model.layers[0].attention.backend
    inner, calls = core.full, []
    core.full = lambda *args: calls.append(1) or inner(*args)
    with torch.no_grad():
        model(torch.zeros(1, 9, dtype=torch.long))
    assert len(calls) == 3


def test_topk_core_counts_what_it_computes():
    from collections import Counter

    core = TopKCore(3, causal=True)
    core.stats = Counter()
    q = torch.randn(2, H, 10, 8)
    core(q, q, q)
    assert core.stats["pairs"] == 2 * H * sum(min(3, i + 1) for i in range(10))
    assert core.stats["macs"] == 2 * H * 55 * 8 + core.stats["pairs"] * 8


def test_every_student_kind_has_a_core_and_the_cache_is_refused():
    from sparse_core.lm import distill as D
    from sparse_core.lm import students

    assert tuple(students.STUDENT_CORES) == D.STUDENT_KINDS
    teacher = GPTNeoX(preset("tiny", vocab_size=20, num_layers=1, hidden_size=32, intermediate_size=32))
    for kind in D.STUDENT_KINDS:
        student = D.make_student(teacher, D.DistillConfig(student=kind, window=8, block_size=8, nsa_block=4))
        layer = student.layers[0].attention
        assert isinstance(layer, students.StudentAttention) and type(layer.core) is type(
            students.STUDENT_CORES[kind](student.config, 0, D.DistillConfig(student=kind)))
        with pytest.raises(ValueError, match="no key-value cache"):
            student(torch.zeros(1, 3, dtype=torch.long), cache=student.new_cache())
