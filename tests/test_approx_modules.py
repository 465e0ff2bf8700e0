"""Every approximate layer is a drop-in for SparseSelfAttention: same call, shapes, dtypes; no NaN."""
import pytest
import torch
from torch import nn

from sparse_core import approx as A
from sparse_core.attention.layer import SparseSelfAttention

D, H = 32, 4
MAKERS = {
    "topk": lambda causal: A.TopKSelfAttention(D, H, topk=5, causal=causal),
    "topk_blockwise": lambda causal: A.TopKSelfAttention(D, H, topk=5, causal=causal, block_size=8),
    "routing": lambda causal: A.RoutingSelfAttention(D, H, n_clusters=3, causal=causal, shared_qk=True),
    "learned_mask": lambda causal: A.LearnedMaskSelfAttention(D, H, causal=causal),
    "learned_mask_hard": lambda causal: A.LearnedMaskSelfAttention(D, H, causal=causal, hard=True),
    "nsa": lambda causal: A.NSASelfAttention(D, H, block_size=8, n_select=2, window=5, causal=causal),
    "dense_synthesizer": lambda causal: A.DenseSynthesizerAttention(D, H, max_len=64, causal=causal),
    "random_synthesizer": lambda causal: A.RandomSynthesizerAttention(D, H, max_len=64, causal=causal),
    "linformer": lambda causal: A.LinformerSelfAttention(D, H, seq_len=64, k=8),
    "performer": lambda causal: A.PerformerSelfAttention(D, H, causal=causal, chunk_size=8),
}
CAUSAL = [name for name in MAKERS if name != "linformer"]


class Block(nn.Module):
    """A pre-norm Transformer block whose attention can be swapped."""

    def __init__(self, attn):
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(D), attn
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

    def forward(self, x):
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_drop_in_shapes_dtypes_and_finite_gradients(name, dtype):
    torch.manual_seed(0)
    block = Block(SparseSelfAttention(D, H))
    block.attn = MAKERS[name](False)  # the swap a model does
    block = block.to(dtype)
    for n in (1, 13, 50):  # odd lengths, a single token
        x = torch.randn(3, n, D, dtype=dtype, requires_grad=True)
        y = block(x)
        assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all()
    assert isinstance(block.attn, nn.Module) and f"d_model={D}" in repr(block.attn)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_layers_never_look_ahead(name):
    torch.manual_seed(1)
    layer = MAKERS[name](True).double().eval()
    x = torch.randn(2, 37, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 19:] = torch.randn(2, 18, D, dtype=torch.float64) * 5
    y, y2 = layer(x), layer(x2)
    assert torch.equal(y[:, :19], y2[:, :19])
    assert not torch.allclose(y[:, 19:], y2[:, 19:])


@pytest.mark.parametrize("name", ["topk", "routing", "learned_mask", "nsa", "performer"])
def test_from_multihead_copies_the_projections(name):
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    cls = type(MAKERS[name](False))
    kwargs = {"topk": {"topk": 3}, "routing": {"n_clusters": 2}, "learned_mask": {}, "nsa": {}, "performer": {}}[name]
    layer = cls.from_multihead(mha, **kwargs)
    assert torch.equal(layer.qkv.weight, mha.in_proj_weight) and torch.equal(layer.out.bias, mha.out_proj.bias)


def test_topk_with_k_equal_n_equals_multihead_attention():
    """The drop-in claim, checked against PyTorch: top-n of n keys is dense attention."""
    mha = nn.MultiheadAttention(D, H, batch_first=True).double()
    layer = A.TopKSelfAttention.from_multihead(mha, topk=40, block_size=16)
    x = torch.randn(2, 40, D, dtype=torch.float64)
    torch.testing.assert_close(layer(x), mha(x, x, x, need_weights=False)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_bad_input_is_named(name):
    layer = MAKERS[name](False)
    for bad in (torch.zeros(4, D), torch.zeros(1, 4, D + 1), "x"):
        with pytest.raises(ValueError, match="`x` must be a tensor \\[batch, n, d_model=32\\]"):
            layer(bad)
