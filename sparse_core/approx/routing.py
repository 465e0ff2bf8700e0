r"""Routing attention (Roy et al. 2021, "Efficient Content-Based Sparse Attention with Routing
Transformers"): cluster queries and keys with :math:`k`-means, attend only within a cluster.

Queries and keys are put on the unit sphere (:math:`\hat x = x / \lVert x \rVert`) and assigned
to the nearest of :math:`C` centroids :math:`\mu_c` (largest cosine, ties to the smaller index):

.. math::

    c(x) = \arg\max_c \hat x \cdot \mu_c, \qquad
    S = \{(i, j) : c(q_i) = c(k_j)\} \;(\cap\ \{j \le i\} \text{ if causal}).

The attention is then exact softmax attention over :math:`S` (the dense oracle with this mask);
a query whose cluster holds no allowed key gets output 0 (the oracle's fully-masked-row rule).

Centroids are *state*, not recomputed per sequence: the assignment of token :math:`i` depends on
token :math:`i` only, so the causal version is truly causal. :func:`kmeans` (spherical Lloyd
iterations from a seeded initialisation) fits them, e.g. on a first batch
(:meth:`RoutingSelfAttention.fit_centroids`); during training the layer moves them toward the
mean of their members by an exponential moving average, as in the paper. With ``shared_qk=True``
keys are the queries (the paper's setting), so every query is in its own key's cluster and no row
is ever empty.

Cost: this implementation computes the masked scores ``chunk`` queries at a time (exact,
``O(chunk * n)`` memory); the paper's speed comes from sorting tokens by cluster into equal-size
buckets, which changes the set :math:`S` (it caps the cluster size).

:class:`RoutingCore` is the attention core of :class:`RoutingSelfAttention`. Defined in Chapter 6.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import check_bool, check_qkv, chunked_masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["kmeans", "assign_clusters", "routing_mask", "routing_attention", "RoutingCore", "RoutingSelfAttention"]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)


def assign_clusters(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid by cosine similarity: ``x [..., n, d]``, ``centroids [..., C, d]`` -> long ``[..., n]``."""
    sim = torch.matmul(_unit(x.detach()), _unit(centroids.detach()).transpose(-1, -2))
    return sim.argmax(dim=-1)  # first maximum: ties go to the smaller cluster index


def _kmeanspp_init(pts, n_clusters, g):
    """k-means++ seeding with cosine distance ``1 - cos``: ``pts [B, n, d]`` (unit rows) -> ``[B, C, d]``."""
    B, n, d = pts.shape
    rows = torch.arange(B, device=pts.device)
    first = torch.randint(0, n, (B,), generator=g).to(pts.device)
    chosen = [pts[rows, first]]
    dist = (1 - torch.einsum("bnd,bd->bn", pts, chosen[0])).clamp(min=0)
    for _ in range(1, n_clusters):
        w = dist.square()
        w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))  # all points on centroids: uniform
        nxt = torch.multinomial(w.cpu().double(), 1, generator=g)[:, 0].to(pts.device)
        chosen.append(pts[rows, nxt])
        dist = torch.minimum(dist, (1 - torch.einsum("bnd,bd->bn", pts, chosen[-1])).clamp(min=0))
    return torch.stack(chosen, dim=1).clone()


@torch.no_grad()
def kmeans(x: torch.Tensor, n_clusters: int, n_iters: int = 10, seed: int = 0) -> torch.Tensor:
    """Spherical k-means on ``x [..., n, d]`` (one clustering per leading index) -> centroids ``[..., C, d]``.

    Initial centroids: k-means++ seeding (Arthur & Vassilvitskii 2007) with the cosine distance
    ``1 - cos``, drawn with ``torch.Generator().manual_seed(seed)``; each Lloyd step assigns points to the nearest centroid (cosine) and moves every non-empty
    centroid to the normalised mean of its members (an empty cluster keeps its centroid).
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"`x` must be a tensor [..., n, d], got {getattr(x, 'shape', type(x).__name__)}")
    n_clusters = V.check_positive_int("n_clusters", n_clusters)
    n_iters = V.check_nonnegative_int("n_iters", n_iters)
    n, d = x.shape[-2:]
    if n_clusters > n:
        raise ValueError(f"`n_clusters`={n_clusters} must not exceed the number of points n={n}")
    lead = x.shape[:-2]
    pts = _unit(x.reshape(-1, n, d).float() if x.dtype == torch.float16 else x.reshape(-1, n, d))
    cent = _kmeanspp_init(pts, n_clusters, torch.Generator().manual_seed(int(seed)))
    for _ in range(n_iters):
        a = assign_clusters(pts, cent)
        sums = torch.zeros_like(cent).scatter_add_(1, a[..., None].expand(-1, -1, d), pts)
        counts = torch.zeros(cent.shape[:2], dtype=pts.dtype, device=pts.device).scatter_add_(
            1, a, torch.ones_like(a, dtype=pts.dtype))
        cent = torch.where(counts[..., None] > 0, _unit(sums), cent)
    return cent.reshape(*lead, n_clusters, d).to(x.dtype)


def routing_mask(q, k, centroids, causal: bool = False) -> torch.Tensor:
    """Boolean ``[..., n_q, n_k]``: True where ``q_i`` and ``k_j`` share a cluster (and ``j <= i`` if causal)."""
    cq, ck = assign_clusters(q, centroids), assign_clusters(k, centroids)
    keep = cq[..., :, None] == ck[..., None, :]
    if causal:
        n_q, n_k = keep.shape[-2:]
        keep = keep & (torch.arange(n_k, device=keep.device)[None, :] <= torch.arange(n_q, device=keep.device)[:, None])
    return keep


def routing_attention(q, k, v, centroids, scale=None, causal: bool = False, chunk: int = 256) -> torch.Tensor:
    """Exact softmax attention within clusters.

    ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``, ``centroids [..., C, d]``
    (broadcast against the leading dimensions) -> ``[..., n_q, d_v]``.
    Equals ``reference.attention(q, k, v, mask=routing_mask(q, k, centroids, causal))``.
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    check_bool("causal", causal)
    chunk = V.check_positive_int("chunk", chunk)
    if not isinstance(centroids, torch.Tensor) or centroids.ndim < 2 or centroids.shape[-1] != q.shape[-1]:
        raise ValueError(f"`centroids` must be a tensor [..., n_clusters, d={q.shape[-1]}], "
                         f"got {getattr(centroids, 'shape', type(centroids).__name__)}")
    cq, ck = assign_clusters(q, centroids), assign_clusters(k, centroids)
    n_k = k.shape[-2]

    def keep_fn(i0, i1):
        keep = cq[..., i0:i1, None] == ck[..., None, :]
        if causal:
            keep = keep & (torch.arange(n_k, device=q.device)[None, :] <= torch.arange(i0, i1, device=q.device)[:, None])
        return keep

    return chunked_masked_attention(q, k, v, scale, keep_fn, chunk)


class RoutingCore(AttentionCore):
    """Routing attention on ``(B, nh, T, hs)`` with centroids ``[n_heads, n_clusters, d_head]`` (a buffer,
    seeded random unit vectors). In training mode each forward moves every centroid toward the
    normalised mean of its members, ``mu <- normalise(decay * mu + (1 - decay) * mean)``, after
    computing the output. The layer that uses it is defined in Chapter 6."""

    def __init__(self, n_heads: int, d_head: int, n_clusters: int, causal: bool = False, shared_qk: bool = False,
                 decay: float = 0.999, seed: int = 0, chunk: int = 256):
        super().__init__()
        self.n_clusters = V.check_positive_int("n_clusters", n_clusters)
        self.causal = check_bool("causal", causal)
        self.shared_qk = check_bool("shared_qk", shared_qk)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay <= 1.0:
            raise ValueError(f"`decay` must be a number in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.seed = int(seed)
        self.chunk = V.check_positive_int("chunk", chunk)
        self.n_heads, self.d_head = n_heads, d_head
        g = torch.Generator().manual_seed(self.seed)
        self.register_buffer("centroids", _unit(torch.randn(n_heads, n_clusters, d_head, generator=g)))

    def _points(self, q, k):
        """Queries and keys (queries only if shared) of every head: ``[n_heads, points, d_head]``."""
        pts = torch.cat([q, k], dim=2) if not self.shared_qk else q  # (B, nh, T or 2T, hs)
        return pts.transpose(0, 1).reshape(self.n_heads, -1, self.d_head)

    @torch.no_grad()
    def fit(self, q, k, n_iters: int = 10) -> None:
        """Set the centroids by :func:`kmeans` on the (normalised) ``q`` and ``k`` ``(B, nh, T, hs)``."""
        self.centroids.copy_(kmeans(self._points(q, k), self.n_clusters, n_iters, self.seed))

    def forward(self, q, k, v, x=None):
        if self.shared_qk:
            k = q
        out = routing_attention(q, k, v, self.centroids[None], causal=self.causal, chunk=self.chunk)
        if self.training and self.decay < 1.0:
            self._ema_update(q, k)
        return out

    @torch.no_grad()
    def _ema_update(self, q, k):
        pts = _unit(self._points(q.detach(), k.detach()))
        a = assign_clusters(pts, self.centroids)
        sums = torch.zeros_like(self.centroids).scatter_add_(1, a[..., None].expand(-1, -1, self.d_head), pts)
        counts = torch.zeros(self.centroids.shape[:2], dtype=pts.dtype, device=pts.device).scatter_add_(
            1, a, torch.ones_like(a, dtype=pts.dtype))
        means = sums / counts.clamp(min=1)[..., None]
        moved = _unit(self.decay * self.centroids + (1 - self.decay) * means)
        self.centroids.copy_(torch.where(counts[..., None] > 0, moved, self.centroids))

    def extra_repr(self):
        return f"n_clusters={self.n_clusters}, causal={self.causal}, shared_qk={self.shared_qk}"


class RoutingSelfAttention(MultiHeadAttention):
    """Multi-head routing attention: ``x [batch, n, d_model] -> [batch, n, d_model]``. Defined in Chapter 6.

    ``centroids`` is a buffer ``[n_heads, n_clusters, d_head]`` (seeded random unit vectors at
    construction; :meth:`fit_centroids` runs :func:`kmeans` on a batch). In training mode each
    forward moves every centroid toward the normalised mean of its members,
    ``mu <- normalise(decay * mu + (1 - decay) * mean)`` (after computing the output, so the output
    only ever depends on the centroids from before the call).
    """

    def __init__(self, d_model: int, n_heads: int, n_clusters: int, causal: bool = False,
                 shared_qk: bool = False, decay: float = 0.999, seed: int = 0, chunk: int = 256,
                 bias: bool = True):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(RoutingCore(n_heads, self.d_head, n_clusters, causal, shared_qk, decay, seed, chunk))

    @torch.no_grad()
    def fit_centroids(self, x: torch.Tensor, n_iters: int = 10) -> "RoutingSelfAttention":
        """Set the centroids by k-means on the (normalised) queries and keys of ``x [batch, n, d_model]``."""
        self.check_input(x)
        q, k, _ = self.qkv_heads(x)
        self.core.fit(q, k, n_iters)
        return self
