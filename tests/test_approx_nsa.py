"""Native Sparse Attention: each branch equals the oracle with its mask (and compressed keys/values)."""
import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core import reference
from sparse_core.approx.nsa import (NSASelfAttention, compress_blocks, compressed_keep, nsa_attention, nsa_branches,
                                    select_blocks, selected_token_mask)


def _qkv(seed, shape=(2, 3), n=45, d=8, dv=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, n, dd, generator=g, dtype=dtype) for dd in (d, d, dv))


def _loop_compress(x, B, pos):
    n = x.shape[-2]
    return torch.stack([(x[..., s:s + B, :] + pos[: min(B, n - s)]).mean(-2) for s in range(0, n, B)], -2)


def _loop_selection(q, k_cmp, B, n_select, causal):
    """Brute force per query, float64 numpy: rank candidate blocks by compressed probability."""
    n, nb = q.shape[-2], k_cmp.shape[-2]
    qf, kf = q.reshape(-1, n, q.shape[-1]).numpy(), k_cmp.reshape(-1, nb, k_cmp.shape[-1]).numpy()
    out = np.zeros((qf.shape[0], n, n), dtype=bool)
    for b in range(qf.shape[0]):
        for i in range(n):
            vis = [c for c in range(nb) if not causal or c * B + B - 1 <= i]
            s = np.array([qf[b, i] @ kf[b, c] / np.sqrt(q.shape[-1]) for c in vis])
            p = dict(zip(vis, np.exp(s - s.max()) / np.exp(s - s.max()).sum())) if vis else {}
            cands = [c for c in range(nb) if not causal or c * B <= i]
            key = lambda c: (-(np.inf if causal and c == i // B else p.get(c, 0.0)), c)
            for c in sorted(cands, key=key)[:n_select]:
                cols = [j for j in range(c * B, min(n, c * B + B)) if not causal or j <= i]
                out[b, i, cols] = True
    return torch.from_numpy(out).reshape(*q.shape[:-2], n, n)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n,B,n_select,window,chunk", [(0, 45, 8, 2, 5, 16), (1, 64, 16, 1, 0, 64),
                                                            (2, 37, 4, 3, 9, 7), (3, 20, 8, 5, 3, 256)])
def test_every_branch_equals_the_oracle(seed, n, B, n_select, window, chunk, causal):
    q, k, v = _qkv(seed, (2, 3), n)
    g = torch.Generator().manual_seed(seed + 1)
    pos_k, pos_v = torch.randn(B, 8, generator=g, dtype=torch.float64), torch.randn(B, 5, generator=g, dtype=torch.float64)
    k_cmp, v_cmp = compress_blocks(k, B, pos_k), compress_blocks(v, B, pos_v)
    torch.testing.assert_close(k_cmp, _loop_compress(k, B, pos_k), atol=1e-12, rtol=0)
    torch.testing.assert_close(v_cmp, _loop_compress(v, B, pos_v), atol=1e-12, rtol=0)
    o_cmp, o_slc, o_win = nsa_branches(q, k, v, k_cmp, v_cmp, B, n_select, window, causal=causal, chunk=chunk)
    # compressed: the oracle over compressed keys/values with the "complete past block" mask
    ref_cmp = reference.attention(q, k_cmp, v_cmp, mask=compressed_keep(n, k_cmp.shape[-2], B, causal))
    torch.testing.assert_close(o_cmp, ref_cmp, atol=1e-12, rtol=0)
    if causal:  # queries before the first complete block see no compressed key: zero, not NaN
        assert torch.equal(o_cmp[..., : B - 1, :], torch.zeros_like(o_cmp[..., : B - 1, :]))
    # selected: brute-force selection, then the oracle over those tokens
    mask = _loop_selection(q, k_cmp, B, n_select, causal)
    sel = select_blocks(q, k_cmp, B, n_select, 8 ** -0.5, causal)
    torch.testing.assert_close(selected_token_mask(sel, B, n, causal), mask)
    torch.testing.assert_close(o_slc, reference.attention(q, k, v, mask=mask), atol=1e-12, rtol=0)
    # sliding window: the library's pattern
    win = torch.from_numpy(P.sliding_window(window, causal=causal).to_dense(n, n, 1)[0])
    torch.testing.assert_close(o_win, reference.attention(q, k, v, mask=win), atol=1e-12, rtol=0)
    # gated sum
    gates = torch.rand(2, 3, n, 3, generator=g, dtype=torch.float64)
    out = nsa_attention(q, k, v, gates, k_cmp, v_cmp, B, n_select, window, causal=causal, chunk=chunk)
    torch.testing.assert_close(out, gates[..., 0:1] * ref_cmp + gates[..., 1:2] * o_slc + gates[..., 2:3] * o_win,
                               atol=1e-12, rtol=0)


def test_selection_keeps_the_current_block_and_n_select_blocks():
    q, k, _ = _qkv(4, (1, 2), 50)
    sel = select_blocks(q, compress_blocks(k, 8), 8, 3, 8 ** -0.5, True)
    i = torch.arange(50)
    assert sel[..., i, i // 8].all()
    assert torch.equal(sel.sum(-1), torch.clamp(i // 8 + 1, max=3).expand(1, 2, 50))
    assert not (sel & (torch.arange(7)[None, :] * 8 > i[:, None])).any()  # never a block starting after i


def test_selecting_every_block_is_dense_attention():
    q, k, v = _qkv(5, (1, 2), 30)
    kc, vc = compress_blocks(k, 4), compress_blocks(v, 4)
    for causal in (False, True):
        _, o_slc, o_win = nsa_branches(q, k, v, kc, vc, 4, 8, 29, causal=causal)
        dense = reference.attention(q, k, v, causal=causal)
        torch.testing.assert_close(o_slc, dense, atol=1e-12, rtol=0)
        torch.testing.assert_close(o_win, dense, atol=1e-12, rtol=0)


def test_layer_is_the_gated_sum_and_causal_exactly():
    layer = NSASelfAttention(32, 4, block_size=8, n_select=2, window=6, causal=True, chunk=16).double()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    y = layer(x)
    q, k, v = layer.qkv(x).view(2, 45, 3, 4, 8).permute(2, 0, 3, 1, 4)
    kc = layer.phi_k(torch.stack([(k[..., s:s + 8, :] + layer.pos_k[: min(8, 45 - s)]).mean(-2) for s in range(0, 45, 8)], -2))
    vc = layer.phi_v(torch.stack([(v[..., s:s + 8, :] + layer.pos_v[: min(8, 45 - s)]).mean(-2) for s in range(0, 45, 8)], -2))
    o_c, o_s, o_w = nsa_branches(q, k, v, kc, vc, 8, 2, 6, causal=True)
    gates = torch.sigmoid(layer.gate(x)).view(2, 45, 4, 3).transpose(1, 2)
    o = gates[..., 0:1] * o_c + gates[..., 1:2] * o_s + gates[..., 2:3] * o_w
    torch.testing.assert_close(y, layer.out(o.transpose(1, 2).reshape(2, 45, 32)), atol=1e-12, rtol=0)
    x2 = x.clone()
    x2[:, 21:] = torch.randn(2, 24, 32, dtype=torch.float64) * 10
    assert torch.equal(layer(x2)[:, :21], y[:, :21])


def test_float32_layer_trains():
    layer = NSASelfAttention(32, 2, block_size=4, n_select=2, window=3)
    y = layer(torch.randn(2, 23, 32))
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("make,match", [
    (lambda: NSASelfAttention(32, 4, block_size=0), "`block_size` must be a positive integer"),
    (lambda: NSASelfAttention(32, 4, window=-1), "`window` must be a non-negative integer"),
    (lambda: compress_blocks(torch.zeros(1, 9, 4), 4, torch.zeros(3, 4)), "`pos` must have shape \\[block_size=4, d=4\\]"),
    (lambda: nsa_branches(*_qkv(0, (1,), 9), torch.zeros(1, 2, 8), torch.zeros(1, 3, 5), 4, 1, 1), "`k_cmp` must be a tensor \\[..., n_blocks=3, 8\\]"),
    (lambda: nsa_branches(*_qkv(0, (1,), 9)[:2], torch.zeros(1, 9, 5)[:, :8], torch.zeros(1, 3, 8), torch.zeros(1, 3, 5), 4, 1, 1), "`v` must have as many rows"),
    (lambda: nsa_branches(*_qkv(0, (1,), 8), torch.zeros(1, 2, 8), torch.zeros(1, 2, 5), 4, 1, 1), "`k_cmp` must have the dtype of `q`"),
    (lambda: nsa_attention(*_qkv(0, (1,), 8), torch.zeros(1, 8, 2), torch.zeros(1, 2, 8), torch.zeros(1, 2, 5), 4, 1, 1), "`gates` must be a tensor \\[..., n=8, 3\\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ---------------------------------------------------------------- the reference implementation, matched

class _MeanThenLinear(torch.nn.Module):
    """The course's compression as the reference's ``compress_mlp``: [b, h, w, n, d] -> phi(mean over n)."""

    def __init__(self, phi):
        super().__init__()
        self.phi = phi

    def forward(self, x):
        return self.phi(x.mean(-2))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,heads,d_head,B,n_select,window,n", [(0, 2, 8, 4, 2, 4, 32), (1, 3, 4, 8, 3, 6, 48),
                                                                     (2, 1, 8, 4, 1, 5, 20)])
def test_equals_native_sparse_attention_pytorch_in_a_matched_configuration(monkeypatch, causal, seed, heads, d_head,
                                                                            B, n_select, window, n):
    """native-sparse-attention-pytorch 0.2.3 with the course's choices: no RMSNorm, no rotary (patched out),
    compression = mean + linear over non-overlapping blocks (stride = block = selection block), one memory
    pair, one key/value head per query head, no projection biases, and a length that is a multiple of the
    block (the reference leaves a partial last block uncompressed) and of the window (its bidirectional
    window pads the sequence to a multiple of the window and lets the last rows see the zero padding).
    Causal: the reference adds the query's own block on top of its selected blocks (here it is one of
    n_select, so the reference selects n_select - 1), and shows a compressed block only from the token
    after its last one, where this library shows it from its last token on: rows i = aB + B - 1 differ
    by that one block and are left out. Everything else agrees in float64, outputs and input gradients."""
    nsa_ref = pytest.importorskip("native_sparse_attention_pytorch.native_sparse_attention",
                                  reason="native-sparse-attention-pytorch is not installed (extra 'equiv')")
    torch.manual_seed(seed)
    dim = heads * d_head
    ours = NSASelfAttention(dim, heads, block_size=B, n_select=n_select, window=window, causal=causal,
                            num_mem_kv=1).double()
    with torch.no_grad():
        ours.qkv.bias.zero_()
        ours.out.bias.zero_()
        ours.mem_k.normal_()
        ours.mem_v.normal_()
    theirs = nsa_ref.SparseAttention(
        dim=dim, dim_head=d_head, heads=heads, sliding_window_size=window, compress_block_size=B,
        compress_block_sliding_stride=B, selection_block_size=B,
        num_selected_blocks=n_select - 1 if causal else n_select, num_compressed_mem_kv=1, causal=causal,
        norm=False, compress_mlp=_MeanThenLinear(torch.nn.Linear(d_head, d_head, bias=False)),
        strategy_combine_mlp=torch.nn.Linear(dim, 3 * heads)).double()
    monkeypatch.setattr(theirs.rotary_emb, "rotate_queries_with_cached_keys", lambda q, k: (q, k))
    with torch.no_grad():
        theirs.to_qkv.weight.copy_(ours.qkv.weight)
        theirs.combine_heads.weight.copy_(ours.out.weight)
        theirs.k_compress.phi.weight.copy_(ours.phi_k.weight)
        theirs.v_compress.phi.weight.copy_(ours.phi_v.weight)
        theirs.k_intrablock_positions.copy_(ours.pos_k.expand(heads, -1, -1))
        theirs.v_intrablock_positions.copy_(ours.pos_v.expand(heads, -1, -1))
        theirs.compress_mem_kv.copy_(torch.stack([ours.mem_k, ours.mem_v]))
        theirs.to_strategy_combine[0].weight.copy_(ours.gate.weight)
        theirs.to_strategy_combine[0].bias.copy_(ours.gate.bias)
    x = torch.randn(2, n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    rows = torch.arange(n) % B != B - 1 if causal else torch.ones(n, dtype=torch.bool)
    torch.testing.assert_close(y1[:, rows], y2[:, rows], atol=1e-12, rtol=0)
    y1[:, rows].square().sum().backward()
    y2[:, rows].square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=0)
    if causal:  # the rows left out differ, and only through the compressed branch's one extra block
        assert not torch.allclose(y1[:, ~rows], y2[:, ~rows])


def test_memory_pairs_join_the_compressed_branch_only():
    q, k, v = _qkv(7, n=24)
    k_cmp, v_cmp = compress_blocks(k, 8), compress_blocks(v, 8)
    g = torch.Generator().manual_seed(8)
    k_mem, v_mem = torch.randn(3, 2, 8, generator=g, dtype=torch.float64), torch.randn(3, 2, 5, generator=g,
                                                                                        dtype=torch.float64)
    plain = nsa_branches(q, k, v, k_cmp, v_cmp, 8, 2, 3, causal=True)
    mem = nsa_branches(q, k, v, k_cmp, v_cmp, 8, 2, 3, causal=True, k_mem=k_mem, v_mem=v_mem)
    torch.testing.assert_close(mem[1], plain[1], atol=0, rtol=0)  # selection and window ignore the memory
    torch.testing.assert_close(mem[2], plain[2], atol=0, rtol=0)
    keep = torch.cat([torch.ones(24, 2, dtype=torch.bool), compressed_keep(24, 3, 8, True)], -1)
    kc = torch.cat([k_mem.expand(2, 3, 2, 8), k_cmp], -2)
    vc = torch.cat([v_mem.expand(2, 3, 2, 5), v_cmp], -2)
    torch.testing.assert_close(mem[0], reference.attention(q, kc, vc, mask=keep), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="`k_mem` and `v_mem` go together"):
        nsa_branches(q, k, v, k_cmp, v_cmp, 8, 2, 3, k_mem=k_mem)
