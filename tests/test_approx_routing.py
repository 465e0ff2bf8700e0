"""Routing attention: k-means clusters, exact attention within clusters (the oracle with the cluster mask)."""
import numpy as np
import pytest
import torch

from sparse_core import reference
from sparse_core.approx.routing import RoutingSelfAttention, assign_clusters, kmeans, routing_attention, routing_mask


def _qkv(seed, shape=(2, 3), n=37, d=8, dv=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, n, dd, generator=g, dtype=dtype) for dd in (d, d, dv))


def _cluster_mask_numpy(q, k, cent, causal):
    """Independent: nearest centroid by cosine in numpy, same cluster (and j <= i)."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    q, k, c = (unit(t.detach().double().numpy()) for t in (q, k, cent))
    cq, ck = (np.argmax(x @ np.swapaxes(c, -1, -2), -1) for x in (q, k))
    m = cq[..., :, None] == ck[..., None, :]
    if causal:
        m = m & np.tril(np.ones(m.shape[-2:], dtype=bool))
    return torch.from_numpy(m)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n,clusters,chunk", [(0, 37, 3, 8), (1, 64, 1, 64), (2, 50, 7, 13), (3, 5, 2, 2)])
def test_equals_oracle_with_cluster_mask(seed, n, clusters, chunk, causal):
    q, k, v = _qkv(seed, (2, 3), n)
    cent = torch.randn(3, clusters, 8, generator=torch.Generator().manual_seed(seed + 50), dtype=torch.float64)
    mask = _cluster_mask_numpy(q, k, cent, causal)
    torch.testing.assert_close(routing_mask(q, k, cent, causal), mask)
    ref = reference.attention(q, k, v, mask=mask)
    out = routing_attention(q, k, v, cent, causal=causal, chunk=chunk)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    empty = ~mask.any(-1)
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))


def test_query_whose_cluster_has_no_key_gets_zero_not_nan():
    g = torch.Generator().manual_seed(9)
    e = torch.eye(4, dtype=torch.float64)
    q = e[0] + 0.1 * torch.randn(1, 2, 12, 4, generator=g, dtype=torch.float64)
    q[..., ::3, :] = e[1] + 0.1 * torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)  # a third in cluster 1
    k = e[1] + 0.1 * torch.randn(1, 2, 12, 4, generator=g, dtype=torch.float64)  # every key in cluster 1
    v = torch.randn(1, 2, 12, 3, generator=g, dtype=torch.float64)
    for causal in (False, True):
        mask = routing_mask(q, k, e[:2], causal)
        out = routing_attention(q, k, v, e[:2], causal=causal)
        empty = ~mask.any(-1)
        assert empty.sum() == 2 * 8 and not empty[..., ::3].any()
        assert torch.equal(out[empty], torch.zeros_like(out[empty]))
        torch.testing.assert_close(out, reference.attention(q, k, v, mask=mask), atol=1e-12, rtol=0)


def test_float32_and_one_cluster_is_dense():
    q, k, v = _qkv(4, (2, 2), 30, dtype=torch.float32)
    cent = torch.randn(1, 8)
    torch.testing.assert_close(routing_attention(q, k, v, cent, causal=True).double(),
                               reference.attention(q, k, v, causal=True), atol=2e-6, rtol=0)


def test_kmeans_recovers_separated_groups_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    dirs = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))[0][:3] * 5  # 3 orthogonal centres
    labels = torch.randint(0, 3, (2, 90), generator=g)
    x = dirs[labels] + 0.3 * torch.randn(2, 90, 8, generator=g, dtype=torch.float64)
    for seed in range(8):
        cent = kmeans(x, 3, n_iters=10, seed=seed)
        a = assign_clusters(x, cent)
        for b in range(2):  # same partition as the true labels (up to renaming)
            pairs = {(int(l), int(c)) for l, c in zip(labels[b], a[b])}
            assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    torch.testing.assert_close(kmeans(x, 3, seed=5), kmeans(x, 3, seed=5), atol=0, rtol=0)


def test_kmeans_is_a_lloyd_fixed_point():
    x = torch.randn(1, 200, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cent = kmeans(x, 4, n_iters=50, seed=0)
    a = assign_clusters(x, cent)
    xn = x / x.norm(dim=-1, keepdim=True)
    for c in range(4):
        mean = xn[0][a[0] == c].mean(0)
        torch.testing.assert_close(cent[0, c], mean / mean.norm(), atol=1e-12, rtol=0)


def test_layer_matches_oracle_and_shared_qk_has_no_empty_rows():
    layer = RoutingSelfAttention(32, 4, n_clusters=4, causal=True, shared_qk=True, chunk=16).double().eval()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    layer.fit_centroids(x)
    q, _, v = layer.qkv(x).view(2, 45, 3, 4, 8).permute(2, 0, 3, 1, 4)
    mask = _cluster_mask_numpy(q, q, layer.centroids[None], True)
    assert mask.any(-1).all() and mask.diagonal(dim1=-2, dim2=-1).all()
    o = reference.attention(q, q, v, mask=mask)
    torch.testing.assert_close(layer(x), layer.out(o.transpose(1, 2).reshape(2, 45, 32)), atol=1e-12, rtol=0)
    assert len(torch.unique(mask.sum(-1))) > 1  # clusters really differ in size: not dense


def test_causal_layer_never_looks_ahead_and_centroids_move_only_in_training():
    layer = RoutingSelfAttention(32, 4, n_clusters=3, causal=True, decay=0.5).double().eval()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    c0 = layer.centroids.clone()
    y = layer(x)
    x2 = x.clone()
    x2[:, 25:] = torch.randn(2, 15, 32, dtype=torch.float64) * 10
    assert torch.equal(layer(x2)[:, :25], y[:, :25])
    assert torch.equal(layer.centroids, c0)
    layer.train()
    y_train = layer(x)
    torch.testing.assert_close(y_train, y, atol=0, rtol=0)  # output uses the centroids from before the update
    assert not torch.equal(layer.centroids, c0)
    torch.testing.assert_close(layer.centroids.norm(dim=-1), torch.ones(4, 3, dtype=torch.float64))


def test_layer_trains_in_float32():
    layer = RoutingSelfAttention(32, 2, n_clusters=2)
    y = layer(torch.randn(3, 20, 32))
    y.square().mean().backward()
    assert torch.isfinite(y).all() and all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("make,match", [
    (lambda: kmeans(torch.randn(5, 3), 6), "`n_clusters`=6 must not exceed"),
    (lambda: kmeans(torch.randn(5, 3), 0), "`n_clusters` must be a positive integer"),
    (lambda: routing_attention(*_qkv(0, (1,), 4), torch.randn(2, 3)), "`centroids` must be a tensor \\[..., n_clusters, d=8\\]"),
    (lambda: RoutingSelfAttention(32, 4, n_clusters=2, decay=2.0), "`decay` must be a number in \\[0, 1\\]"),
    (lambda: RoutingSelfAttention(32, 4, n_clusters=2, causal="yes"), "`causal` must be a bool"),
    (lambda: RoutingSelfAttention(32, 4, n_clusters=2)(torch.zeros(1, 0, 32)), "at least one position"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
