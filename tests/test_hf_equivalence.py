"""Our BigBird and Longformer attention equal Hugging Face ``transformers``' on the same weights and inputs.

BigBird: ``BigBirdBlockSparseAttention`` with an injected random-block plan (and with its own
train-mode draw) against ``sparse_core.patterns.bigbird`` with the same plan through the
block-sparse kernel and through the float64 oracle. Longformer: ``LongformerSelfAttention``
with the global projections set equal to the local ones against
``sparse_core.patterns.longformer``. Float32 throughout; tolerance ATOL.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (dev extra): the HF equivalence tests need it")

from transformers import BigBirdConfig, LongformerConfig  # noqa: E402
from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention  # noqa: E402
from transformers.models.longformer.modeling_longformer import LongformerSelfAttention  # noqa: E402

from sparse_core.models import hf_compat as hc  # noqa: E402
from sparse_core.patterns import bigbird, longformer, sample_plan  # noqa: E402

ATOL = 1e-5  # float32 inputs and float32 HF arithmetic


def _bigbird_layer(seed, hidden=32, heads=4, block=8, r=2, layer_seed=0, max_pos=512):
    torch.manual_seed(seed)
    cfg = BigBirdConfig(hidden_size=hidden, num_attention_heads=heads, block_size=block, num_random_blocks=r,
                        attention_type="block_sparse", max_position_embeddings=max_pos)
    return BigBirdBlockSparseAttention(cfg, seed=layer_seed).eval()


def _x(seed, batch, n, hidden):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(batch, n, hidden, generator=g)


# ---------------------------------------------------------------------------- BigBird

@pytest.mark.parametrize("seed,batch,heads,block,r,n_blocks", [
    (0, 2, 4, 8, 2, 12), (1, 3, 2, 4, 1, 9), (2, 2, 4, 8, 3, 16), (3, 1, 1, 16, 2, 10), (4, 2, 8, 4, 2, 7),
])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_bigbird_injected_plan_equals_hf(seed, batch, heads, block, r, n_blocks, mode):
    layer = _bigbird_layer(seed, heads=heads, block=block, r=r)
    layer.train(mode == "train")
    n = n_blocks * block
    x = _x(seed, batch, n, 32)
    plan = sample_plan(n_blocks, r, num_global_blocks=1, window_blocks=3, n_heads=heads, seed=seed)
    hf = hc.hf_bigbird_forward(layer, x, plan)
    ours = hc.bigbird_like_hf(layer, x, plan)
    oracle = hc.bigbird_like_hf(layer, x, plan, kernel=False)
    assert hf.shape == ours.shape == (batch, n, 32)
    assert (hf - ours).abs().max().item() < ATOL
    assert (hf - oracle).abs().max().item() < ATOL
    # the heads really use different random blocks, and the comparison notices a different plan
    if heads > 1 and r:
        assert not np.array_equal(plan[0], plan[1])
    other = sample_plan(n_blocks, r, num_global_blocks=1, window_blocks=3, n_heads=heads, seed=seed + 100)
    if not np.array_equal(other, plan):
        assert (hf - hc.bigbird_like_hf(layer, x, other)).abs().max().item() > 1e-3


@pytest.mark.parametrize("seed,layer_seed,n_blocks,r", [(5, 0, 12, 2), (6, 7, 20, 3), (7, 3, 8, 1), (8, 11, 30, 2)])
def test_bigbird_hf_own_training_draw(seed, layer_seed, n_blocks, r):
    layer = _bigbird_layer(seed, heads=4, block=8, r=r, layer_seed=layer_seed).train()
    n = n_blocks * 8
    x = _x(seed, 2, n, 32)
    state = np.random.get_state()[1].copy()
    rand_attn = hc.hf_bigbird_rand_attn(layer, n)
    assert np.array_equal(np.random.get_state()[1], state), "the helper must restore numpy's global random state"
    assert layer.training
    assert rand_attn.shape == (4, n_blocks - 2, r)
    plan = hc.plan_from_hf(rand_attn)
    hc._check_hf_plan(plan, n_blocks)  # HF's own draw obeys the rules our pattern assumes
    hf = hc.hf_bigbird_forward(layer, x)  # no injection: HF draws its plan itself
    assert (hf - hc.bigbird_like_hf(layer, x, plan)).abs().max().item() < ATOL


def test_bigbird_legacy_lengths_use_the_injected_plan_too():
    # n = 1024 takes HF's other sampler (_bigbird_block_rand_mask, once per head)
    layer = _bigbird_layer(9, hidden=16, heads=2, block=64, r=2, max_pos=1024).train()
    n_blocks = 16
    x = _x(9, 2, 1024, 16)
    plan = sample_plan(n_blocks, 2, n_heads=2, seed=9)
    hf = hc.hf_bigbird_forward(layer, x, plan)
    assert (hf - hc.bigbird_like_hf(layer, x, plan)).abs().max().item() < ATOL


def test_bigbird_eval_mode_points_every_random_slot_at_block_zero():
    """In eval mode HF has no random blocks: each random slot is block 0, a global block already
    attended, so block 0's keys count 1 + r times: a log(1 + r) bonus on their scores."""
    r, H, B, nb = 3, 2, 4, 10
    layer = _bigbird_layer(10, heads=H, block=B, r=r).eval()
    n = nb * B
    x = _x(10, 2, n, 32)
    hf = hc.hf_bigbird_forward(layer, x)
    mask = torch.from_numpy(bigbird(n, B, num_random_blocks=0, num_global_blocks=1, window_blocks=3).to_dense(n, n)[0])
    with torch.no_grad():
        q, k, v = (hc.project_heads(x, lin, H).double() for lin in (layer.query, layer.key, layer.value))
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    bonus = torch.zeros(n, n, dtype=torch.float64)
    bonus[B:n - B, :B] = math.log(1 + r)  # rows of blocks 1..nb-2, keys of block 0
    s = (s + bonus).masked_fill(~mask, -math.inf)
    expected = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(2, n, 32)
    assert (hf.double() - expected).abs().max().item() < ATOL
    # and without the bonus it is a different function
    no_random = hc.bigbird_like_hf(layer, x, np.zeros((H, nb, 0), dtype=np.int64))
    assert (hf - no_random).abs().max().item() > 1e-3


def test_plan_conversion_round_trip_and_checks():
    plan = sample_plan(11, 2, n_heads=3, seed=4)
    rand = hc.plan_to_hf(plan)
    assert rand.shape == (3, 9, 2) and rand.dtype == np.int32
    assert np.array_equal(hc.plan_from_hf(rand), plan)
    assert np.array_equal(hc.plan_from_hf(list(rand)), plan)
    pattern = hc.bigbird_pattern_from_hf(rand, 11 * 4, 4)
    assert np.array_equal(pattern.plan, plan)
    with pytest.raises(ValueError, match="-1"):
        hc.plan_to_hf(sample_plan(6, 3, seed=0))  # too few candidates: unused slots
    layer = _bigbird_layer(0, heads=1, block=4, r=2)
    bad = sample_plan(11, 2, seed=1)
    bad[0, 5] = [4, 8]  # 4 is in the window of block 5
    with pytest.raises(ValueError, match="window"):
        with hc.inject_bigbird_plan(layer, bad):
            pass
    bad[0, 5] = [8, 8]  # a repeated block
    with pytest.raises(ValueError, match="distinct"):
        with hc.inject_bigbird_plan(layer, bad):
            pass
    with pytest.raises(ValueError, match="heads"):
        with hc.inject_bigbird_plan(layer, sample_plan(11, 2, n_heads=2, seed=1)):
            pass
    # the layer is restored after the block
    good = sample_plan(11, 2, seed=1)
    with hc.inject_bigbird_plan(layer, good):
        assert "_bigbird_block_rand_mask_with_head" in layer.__dict__
    assert "_bigbird_block_rand_mask_with_head" not in layer.__dict__


# ---------------------------------------------------------------------------- Longformer

def _longformer_layer(seed, hidden=32, heads=4, window=3, share=True):
    torch.manual_seed(seed)
    cfg = LongformerConfig(hidden_size=hidden, num_attention_heads=heads, attention_window=[2 * window],
                           attention_probs_dropout_prob=0.0)
    layer = LongformerSelfAttention(cfg, 0).eval()
    return hc.share_global_projections(layer) if share else layer


@pytest.mark.parametrize("seed,batch,heads,window,n,glob", [
    (0, 2, 4, 3, 48, [0]),           # n a multiple of attention_window = 6
    (1, 3, 2, 3, 50, [0, 17, 49]),   # n not a multiple: padded and cut; a global token at the end
    (2, 2, 4, 2, 33, []),            # window only
    (3, 2, 8, 4, 70, [3, 4, 5]),     # adjacent global tokens inside each other's window
    (4, 1, 1, 2, 7, [6]),            # shorter than one window
    (5, 2, 4, 8, 100, list(range(0, 100, 9))),
])
def test_longformer_equals_hf(seed, batch, heads, window, n, glob):
    layer = _longformer_layer(seed, heads=heads, window=window)
    assert layer.one_sided_attn_window_size == window  # HF's attention_window = 2 * our window
    x = _x(seed, batch, n, 32)
    hf = hc.hf_longformer_forward(layer, x, glob)
    assert hf.shape == (batch, n, 32)
    for block in (8, 16):
        assert (hf - hc.longformer_like_hf(layer, x, glob, block_size=block)).abs().max().item() < ATOL
    assert (hf - hc.longformer_like_hf(layer, x, glob, kernel=False)).abs().max().item() < ATOL
    # an off-by-one window is a different function
    H = heads
    with torch.no_grad():
        q, k, v = (hc.project_heads(x, lin, H) for lin in (layer.query, layer.key, layer.value))
    from sparse_core.attention.ops import block_sparse_attention

    wrong = longformer(window + 1, glob).to_layout(n, n, 16, 1)
    o = block_sparse_attention(q, k, v, wrong).transpose(1, 2).reshape(batch, n, -1)
    assert (hf - o).abs().max().item() > 1e-4


def test_longformer_separate_global_projections_change_only_global_rows():
    glob = [0, 10]
    layer = _longformer_layer(6, share=False)
    x = _x(6, 2, 36, 32)
    hf = hc.hf_longformer_forward(layer, x, glob)
    ours = hc.longformer_like_hf(layer, x, glob)
    diff = (hf - ours).abs().amax(dim=(0, 2))
    assert diff[glob].min().item() > 1e-3, "global rows use query_global/key_global/value_global"
    rest = np.setdiff1d(np.arange(36), glob)
    assert diff[rest].max().item() < ATOL, "non-global rows use the local projections for every key"


def test_longformer_helper_explains_the_window_hf_cannot_run():
    layer = _longformer_layer(7, window=1)
    with pytest.raises(ValueError, match="attention_window=2"):
        hc.hf_longformer_forward(layer, _x(7, 1, 8, 32), [0])
