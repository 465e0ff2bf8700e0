"""The decoding kernel (sparse_core.kernels.decode): a few query rows against a long key-value
cache, checked against the float64 masked-softmax rows of the pattern's mask_mod."""
import math

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.cores import BlockSparseCore, CausalCore
from sparse_core.attention.layer import KVCache
from sparse_core.kernels import decode
from sparse_core.models.gpt_neox import GPTNeoX, generate, preset


def reference_rows(q, k, v, keep, scale):
    """float64 oracle: softmax over the kept keys; rows that keep nothing give 0."""
    q, k, v = (x.double() for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, -math.inf)
    p = torch.softmax(s, -1)
    p = torch.where(keep.any(-1, keepdim=True), p, 0.0)
    return p @ v


PATTERNS = {
    "local": lambda: P.sliding_window(40, causal=True),
    "strided": lambda: P.strided(16),
    "fixed": lambda: P.fixed(16, c=2),
    "longformer": lambda: P.longformer(8, [0, 5, 70]),
    "bigbird": lambda: P.bigbird(320, 16, num_random_blocks=2, seed=3),
    "dilated": lambda: P.dilated(9, 3),
    "per_head": lambda: P.per_head([P.sliding_window(12, causal=True), P.strided(8),
                                    P.sliding_window(50, causal=True), P.global_tokens([1, 2])]),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_rows_match_oracle(name, dtype, tol):
    pat = PATTERNS[name]()
    nh = 4
    core = BlockSparseCore(pat, 16, nh, causal=True)
    g = torch.Generator().manual_seed(1)
    for B, nkv, S, T, d in [(1, 4, 1, 1, 8), (2, 2, 37, 1, 24), (2, 1, 100, 5, 16), (1, 4, 259, 16, 33), (3, 2, 64, 3, 64)]:
        q = torch.randn(B, nh, T, d, generator=g, dtype=dtype)
        k, v = (torch.randn(B, nkv, S, d, generator=g, dtype=dtype) for _ in range(2))
        with torch.no_grad():
            out = core.rows(q, k, v, S - T)
        keep = core.keep(torch.arange(S - T, S), S)
        ref = reference_rows(q, k, v, keep, 1 / math.sqrt(d))
        assert out.dtype == dtype and out.shape == (B, nh, T, d)
        err = float((out.double() - ref).abs().max())
        assert err < tol, f"{name} {dtype} B={B} kv={nkv} S={S} T={T} d={d}: yours vs expected max |diff| {err:.2e}"


def test_tables_read_only_kept_blocks():
    """A window's rows list only the blocks near the diagonal, whatever the cache length."""
    pat = P.intersection(P.sliding_window(64, causal=True), P.causal())
    for S in (2048, 32768):
        t = decode.decode_tables(pat, 1, 64, S - 1, 1, S)
        assert list(t["indices"]) == [S // 64 - 2, S // 64 - 1]
        assert t["tile_of"][0] >= 0  # the far block is partial (window edge)


def test_fully_masked_and_nan_rows():
    """Rows that keep no key give 0 and lse -inf; a NaN key gives NaN in the rows that see it."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 3, 8))
    k, v = rng.standard_normal((1, 2, 40, 8)), rng.standard_normal((1, 2, 40, 8))
    tables = decode.decode_tables(P.sliding_window(4, causal=True), 1, 16, 37, 3, 40)
    tables["tiles"][:, 1, :] = 0  # row 1 keeps nothing
    out, lse = decode.run_decode(q, k, v, tables, 16, 1, 0.5)
    assert np.all(out[:, :, 1] == 0) and np.all(np.isneginf(lse[:, :, 1]))
    assert np.all(np.isfinite(out[:, :, [0, 2]]))
    k[0, 0, 39, 3] = np.nan
    out, lse = decode.run_decode(q, k, v, tables, 16, 1, 0.5)
    assert np.isnan(out[0, 0, 2]).all() and np.isfinite(out[0, 1]).all()


def test_split_merge_equals_one_task():
    """Splitting the kept blocks of a head over tasks (one head, many threads) changes nothing."""
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 1, 2, 32))
    k, v = rng.standard_normal((1, 1, 900, 32)), rng.standard_normal((1, 1, 900, 32))
    t = decode.decode_tables(P.sliding_window(300, causal=True), 1, 32, 898, 2, 900)
    a, la = decode.run_decode(q, k, v, t, 32, 1, 0.3, threads=1)
    b, lb = decode.run_decode(q, k, v, t, 32, 1, 0.3, threads=8)
    assert np.abs(a - b).max() < 1e-12 and np.abs(la - lb).max() < 1e-12


def test_cache_is_read_in_place():
    """The cache's views (spare capacity behind them) reach the kernel without a copy."""
    cache = KVCache(1)
    for n in (5, 1, 1, 30, 1):
        kv = torch.randn(2, 3, n, 8)
        k, v = cache.append(0, kv, kv + 1)
    assert k.shape == (2, 3, 38, 8) and not k.is_contiguous()
    base = decode.cache_base(k.numpy())
    assert base.flags.c_contiguous and np.shares_memory(base, k.numpy())
    assert np.array_equal(base[:, :, :38], k.numpy())
    odd = torch.randn(2, 8, 3, 37).permute(0, 2, 3, 1)  # any other strides are copied
    assert np.array_equal(decode.cache_base(odd.numpy()), odd.numpy())


def test_kv_cache_appends_like_concatenation():
    cache, ks = KVCache(2), []
    g = torch.Generator().manual_seed(0)
    for n in (3, 1, 17, 1, 40):
        k = torch.randn(1, 2, n, 4, generator=g)
        ks.append(k)
        got, _ = cache.append(1, k, -k)
        assert torch.equal(got, torch.cat(ks, dim=-2))
    assert cache.layers[0] is None
    with pytest.raises(ValueError, match="cannot append"):
        cache.append(1, torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))


def test_gradients_use_the_differentiable_rows():
    """With gradients wanted, rows() takes the autograd path (the kernel is inference only)."""
    core = BlockSparseCore(P.sliding_window(8, causal=True), 16, 2, causal=True)
    q = torch.randn(1, 2, 2, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8)
    core.rows(q, k, v, 18).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    base = CausalCore.rows(core, q.detach(), k, v, 18)
    with torch.no_grad():
        assert torch.allclose(core.rows(q.detach(), k, v, 18), base, atol=1e-6)


@pytest.mark.parametrize("attention", ["local", "mixed"])
def test_generate_matches_whole_sequence(attention):
    """Greedy decoding with the kernel: every step's logits equal the whole-sequence forward's."""
    torch.manual_seed(0)
    model = GPTNeoX(preset("tiny", vocab_size=97, window=24, stride=8, block_size=16, attention=attention)).eval()
    prompt = torch.randint(0, 97, (2, 13))
    ids = generate(model, prompt, 40, temperature=0)
    with torch.no_grad():
        full = model(ids[:, :-1])
        cache = model.new_cache()
        steps = [model(prompt, cache=cache)[:, -1]]
        for t in range(13, ids.shape[1] - 1):
            steps.append(model(ids[:, t:t + 1], cache=cache)[:, -1])
    step_logits = torch.stack(steps, 1)
    assert (step_logits - full[:, 12:]).abs().max() < 1e-4
