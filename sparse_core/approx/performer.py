r"""Performer / FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers").

The softmax kernel is an expectation over Gaussian directions :math:`w \sim \mathcal N(0, I_d)`:

.. math::

    e^{x \cdot y} = \mathbb E_w\!\left[e^{w \cdot x - \lVert x\rVert^2/2}\; e^{w \cdot y - \lVert y\rVert^2/2}\right],
    \qquad \phi(x) = \tfrac{1}{\sqrt m}\big(e^{w_r \cdot x - \lVert x \rVert^2 / 2}\big)_{r=1}^{m} > 0 ,

so with :math:`x = \sqrt\tau\, q_i`, :math:`y = \sqrt\tau\, k_j` (:math:`\tau` the score scale),
:math:`e^{s_{ij}} \approx \phi(x_i) \cdot \phi(y_j)` and attention becomes linear in :math:`n`:

.. math::

    o_i = \frac{\phi(x_i)^\top \sum_j \phi(y_j) v_j^\top}{\phi(x_i)^\top \sum_j \phi(y_j)} ,
    \qquad \text{causal: } \sum_j \to \sum_{j \le i} \text{ (prefix sums).}

The rows :math:`w_r` of the projection matrix ``W [m, d]`` are drawn i.i.d. or *orthogonal*
(blocks of :math:`d` orthonormal rows, rescaled to Gaussian norms, ``scaling=0``, or to
:math:`\sqrt d`, ``scaling=1``), which lowers the variance. They can be redrawn during
training (``feature_redraw_interval``).

**Numerical stability** (our default ``kernel="stable"``). Write :math:`a_{ir} = w_r \cdot x_i -
\lVert x_i\rVert^2/2`, :math:`b_{jr}` likewise for keys, so the weight of :math:`(i, j)` is
:math:`\sum_r e^{a_{ir} + b_{jr}}`. Any shifts that cancel leave the result unchanged; we take
:math:`c_r = \max_j b_{jr}` (per feature, over the keys -- in the causal case over the prefix,
:math:`c_r(i) = \max_{j \le i} b_{jr}`) and :math:`M_i = \max_r (a_{ir} + c_r)`, and use
:math:`e^{a_{ir} + c_r - M_i}` and :math:`e^{b_{jr} - c_r}`. Every exponent is :math:`\le 0` (no
overflow), and the pair :math:`(r^*, j^*)` attaining :math:`M_i` contributes exactly
:math:`e^0 \cdot e^0 = 1` to the denominator, so it is :math:`\ge 1`: no 0/0, no NaN, at any
length or logit size, and no :math:`\epsilon` bias. The causal version runs over chunks of
``chunk_size`` queries: a state :math:`\sum_j e^{b_{jr} - c_r} v_j` carried from chunk to chunk
(rescaled when :math:`c_r` grows) plus the exact masked quadratic form inside the chunk, with
the factor :math:`e^{c_r(j) - c_r(i)} \le 1` linking key :math:`j` to query :math:`i`. Memory is
``O(chunk_size^2 m + m d_v)`` per batch-head, and every quantity used for query :math:`i` depends
only on keys :math:`j \le i`, so it is causal exactly (bit for bit). The intra-chunk term costs
``chunk_size^2 m`` per chunk, so the default chunk is small (16): a causal layer of width 64, 2
heads, ``m = 64``, 32 sequences of 256 tokens trained 6.4x faster (forward + backward, one thread)
than with chunks of 64, with the same outputs.

``kernel="performer_pytorch"`` reproduces ``performer_pytorch.softmax_kernel`` exactly
(non-causal): data scaled by :math:`d^{-1/4}`, queries shifted by their own
:math:`\max_r w_r \cdot x_i`, keys by the single :math:`\max_{j, r} w_r \cdot y_j` of the whole
(batch, head), then ``ratio * (exp(...) + 1e-4)`` with ``ratio = m^{-1/2}``. The ``+1e-4`` biases
the estimate and the shared key shift can underflow at large logits, which is why it is not the
default.

:class:`FavorCore` (a fixed projection matrix) and :class:`PerformerCore` (seeded draws, optional
redraws) are the attention cores of the distillation's ``performer`` student and of
:class:`PerformerSelfAttention`. Defined in Chapter 8.
"""
from __future__ import annotations

import math

import torch

from ._common import check_bool, check_qkv, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["gaussian_orthogonal_random_matrix", "favor_log_features", "favor_attention",
           "favor_attention_quadratic", "FavorCore", "PerformerCore", "PerformerSelfAttention"]

_KERNELS = ("stable", "performer_pytorch")


def gaussian_orthogonal_random_matrix(n_features: int, d: int, scaling: int = 0, orthogonal: bool = True,
                                      generator: torch.Generator | None = None,
                                      dtype: torch.dtype = torch.float32, haar: bool = False) -> torch.Tensor:
    """Random projection ``W [n_features, d]``.

    ``orthogonal=True``: stacked blocks of ``d`` orthonormal rows (QR of a Gaussian ``d x d``;
    the last block truncated), row norms drawn as norms of Gaussian vectors (``scaling=0``) or all
    ``sqrt(d)`` (``scaling=1``) -- the construction of ``performer_pytorch``. ``orthogonal=False``:
    i.i.d. ``N(0, 1)`` entries.

    ``haar=True`` multiplies the columns of each ``Q`` by the signs of ``diag(R)``, which makes
    every block exactly Haar-distributed (Mezzadri 2007), so every row is marginally
    ``N(0, I_d)`` (``scaling=0``) and the kernel estimate is unbiased. Without it (the default,
    as in ``performer_pytorch``) Householder QR returns columns whose diagonal entry is biased
    (``Q[0, 0] < 0`` always), so row ``r`` of a block leans towards ``-e_r`` and the estimate of
    ``exp(x . y)`` is biased for ``x + y`` along a coordinate axis. Same draws either way.
    """
    m = V.check_positive_int("n_features", n_features)
    d = V.check_positive_int("d", d)
    check_bool("orthogonal", orthogonal)
    check_bool("haar", haar)
    if scaling not in (0, 1):
        raise ValueError(f"`scaling` must be 0 (Gaussian row norms) or 1 (norm sqrt(d)), got {scaling!r}")
    if not orthogonal:
        return torch.randn(m, d, generator=generator, dtype=torch.float64).to(dtype)
    blocks = []
    for _ in range(-(-m // d)):
        g = torch.randn(d, d, generator=generator, dtype=torch.float64)
        qm, r = torch.linalg.qr(g, mode="reduced")
        if haar:
            qm = qm * torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(qm.dtype)
        blocks.append(qm.T)
    w = torch.cat(blocks)[:m]
    if scaling == 0:
        norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    else:
        norms = torch.full((m,), math.sqrt(d), dtype=torch.float64)
    return (norms[:, None] * w).to(dtype)


def favor_log_features(x: torch.Tensor, projection: torch.Tensor, scale: float) -> torch.Tensor:
    r"""``a_r = w_r . x' - |x'|^2 / 2`` with ``x' = sqrt(scale) x``: ``[..., n, d] -> [..., n, m]``.

    ``phi(x) = exp(a) / sqrt(m)``; ``phi(x') . phi(y') -> exp(scale * x . y)`` in expectation.
    """
    xs = x * math.sqrt(scale)
    return torch.matmul(xs, projection.to(x.dtype).transpose(-1, -2)) - 0.5 * (xs * xs).sum(-1, keepdim=True)


def _check_projection(projection, d):
    if not isinstance(projection, torch.Tensor) or projection.ndim != 2 or projection.shape[1] != d:
        raise ValueError(f"`projection` must be a tensor [n_features, d={d}], got "
                         f"{getattr(projection, 'shape', type(projection).__name__)}")


def _package_features(x, projection, is_query, eps=1e-4):
    """``performer_pytorch.softmax_kernel`` (normalize_data=True), written out."""
    normalizer = x.shape[-1] ** -0.25
    ratio = projection.shape[0] ** -0.5
    dash = torch.matmul(normalizer * x, projection.to(x.dtype).transpose(-1, -2))
    diag = ((x ** 2).sum(-1) / 2.0 * normalizer ** 2)[..., None]
    if is_query:
        shift = dash.amax(dim=-1, keepdim=True).detach()
    else:
        shift = dash.amax(dim=(-1, -2), keepdim=True).detach()
    return ratio * (torch.exp(dash - diag - shift) + eps)


def favor_attention(q, k, v, projection, scale=None, causal: bool = False, chunk_size: int = 16,
                    kernel: str = "stable") -> torch.Tensor:
    """FAVOR+ attention. ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``,
    ``projection [m, d]`` -> ``[..., n_q, d_v]`` in the input dtype (see the module docstring).

    Causal (``n_q == n_k``): chunked prefix sums, equal to :func:`favor_attention_quadratic`.
    """
    q, k, v, scale = check_qkv(q, k, v, scale, same_length=causal)
    check_bool("causal", causal)
    chunk_size = V.check_positive_int("chunk_size", chunk_size)
    _check_projection(projection, q.shape[-1])
    if kernel not in _KERNELS:
        raise ValueError(f"`kernel` must be one of {_KERNELS}, got {kernel!r}")
    if kernel == "performer_pytorch":
        if causal:
            raise ValueError("kernel='performer_pytorch' reproduces the package's non-causal path only; "
                             "use kernel='stable' for causal attention")
        if not math.isclose(scale, q.shape[-1] ** -0.5, rel_tol=1e-12):
            raise ValueError("kernel='performer_pytorch' uses the scale 1/sqrt(d) (data normalised by d^-1/4)")
        fq, fk = _package_features(q, projection, True), _package_features(k, projection, False)
        ctx = torch.matmul(fk.transpose(-1, -2), v)
        return torch.matmul(fq, ctx) / torch.matmul(fq, fk.sum(-2)[..., None])
    a = favor_log_features(q, projection, scale)
    b = favor_log_features(k, projection, scale)
    if not causal:
        c = b.amax(dim=-2, keepdim=True).detach()                   # [..., 1, m]
        fk = torch.exp(b - c)                                        # <= 1
        aq = a + c
        fq = torch.exp(aq - aq.amax(dim=-1, keepdim=True).detach())  # <= 1, max 1
        num = torch.matmul(fq, torch.matmul(fk.transpose(-1, -2), v))
        den = torch.matmul(fq, fk.sum(-2)[..., None])                # >= 1
        return num / den
    return _favor_causal(a, b, v, chunk_size)


def _favor_causal(a, b, v, chunk):
    n = a.shape[-2]
    c = torch.cummax(b.detach(), dim=-2).values                      # c_r(i) = max_{j<=i} b_jr
    aq = a + c
    fq = torch.exp(aq - aq.amax(dim=-1, keepdim=True).detach())      # [..., n, m], <= 1
    fk = torch.exp(b - c)                                            # key j relative to c(j), <= 1
    lead, m, dv = a.shape[:-2], a.shape[-1], v.shape[-1]
    S = v.new_zeros(*lead, m, dv)                                    # sum_j e^{b_j - c_prev} v_j
    z = v.new_zeros(*lead, m)
    c_prev = torch.full((*lead, m), -math.inf, dtype=a.dtype, device=a.device)
    neg_inf = torch.full((), -math.inf, dtype=a.dtype, device=a.device)
    outs = []
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        cc = c[..., i0:i1, :]                                         # [..., C, m]
        fq_c = fq[..., i0:i1, :]
        qd = fq_c * torch.exp(c_prev[..., None, :] - cc)             # inter-chunk decay, <= 1
        num = torch.matmul(qd, S)
        den = torch.matmul(qd, z[..., None])[..., 0]
        tri = torch.ones(i1 - i0, i1 - i0, dtype=torch.bool, device=a.device).tril()
        diff = torch.where(tri[..., None], cc[..., None, :, :] - cc[..., :, None, :], neg_inf)  # [.., i, j, m]
        P = torch.einsum("...ir,...ijr,...jr->...ij", fq_c, torch.exp(diff), fk[..., i0:i1, :])
        num = num + torch.matmul(P, v[..., i0:i1, :])
        den = den + P.sum(-1)
        outs.append(num / den[..., None])
        c_end = cc[..., -1, :]
        S = torch.exp(c_prev - c_end)[..., None] * S + torch.matmul(
            torch.exp(b[..., i0:i1, :] - c_end[..., None, :]).transpose(-1, -2), v[..., i0:i1, :])
        z = torch.exp(c_prev - c_end) * z + torch.exp(b[..., i0:i1, :] - c_end[..., None, :]).sum(-2)
        c_prev = c_end
    return torch.cat(outs, dim=-2)


def favor_attention_quadratic(q, k, v, projection, scale=None, causal: bool = False) -> torch.Tensor:
    r"""The same estimate through the explicit ``[n_q, n_k]`` kernel matrix (for checking; O(n^2 m) memory).

    ``A_ij = sum_r exp(a_ir + b_jr)`` is formed in log space, ``log A = logsumexp_r(a_ir + b_jr)``,
    and ``o = softmax_j(log A_ij) v`` over ``j`` (``j <= i`` if causal) -- algebraically identical to
    ``A v / A 1``.
    """
    q, k, v, scale = check_qkv(q, k, v, scale, same_length=causal)
    _check_projection(projection, q.shape[-1])
    a = favor_log_features(q, projection, scale)
    b = favor_log_features(k, projection, scale)
    log_a = torch.logsumexp(a[..., :, None, :] + b[..., None, :, :], dim=-1)
    keep = None
    if causal:
        n = q.shape[-2]
        keep = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return masked_attention(log_a, keep, v)


class FavorCore(AttentionCore):
    """FAVOR+ attention on ``(B, nh, T, hs)`` with the projection matrix ``projection_matrix [m, hs]``
    (a buffer, shared by the heads). Stats (no pairs: nothing is attended pair by pair): features
    ``2 T m hs``, the prefix state and its read-out ``2 T m hs`` and the intra-chunk terms
    ``T c (m + hs)`` per head, ``c`` the chunk size. The layer that uses it is defined in Chapter 8."""

    def __init__(self, projection: torch.Tensor | None, causal: bool = False, chunk_size: int = 16,
                 kernel: str = "stable"):
        super().__init__()
        self.causal = check_bool("causal", causal)
        if kernel not in _KERNELS:
            raise ValueError(f"`kernel` must be one of {_KERNELS}, got {kernel!r}")
        if kernel == "performer_pytorch" and causal:
            raise ValueError("kernel='performer_pytorch' supports causal=False only")
        self.kernel = kernel
        self.chunk_size = V.check_positive_int("chunk_size", chunk_size)
        self.register_buffer("projection_matrix", projection)

    def forward(self, q, k, v, x=None):
        if self.stats is not None:
            B, nh, T, hs = q.shape
            m, c = self.projection_matrix.shape[0], min(self.chunk_size, T)
            self.stats.update(macs=B * nh * (2 * T * m * hs + 2 * T * m * hs + T * c * (m + hs)))
        return favor_attention(q, k, v, self.projection_matrix, causal=self.causal, chunk_size=self.chunk_size,
                               kernel=self.kernel)

    def extra_repr(self):
        return f"n_features={self.projection_matrix.shape[0]}, causal={self.causal}, kernel={self.kernel!r}"


class PerformerCore(FavorCore):
    """:class:`FavorCore` whose matrix is drawn from a generator seeded with ``seed`` (Haar-distributed
    orthogonal blocks except with ``kernel="performer_pytorch"``, which keeps the package's plain QR);
    with ``feature_redraw_interval=N`` a training-mode forward redraws it once ``N`` forwards have run
    since the last draw (the package's ``ProjectionUpdater`` rule). The layer that uses it is defined in Chapter 8."""

    def __init__(self, d_head: int, n_features: int | None = None, causal: bool = False, orthogonal: bool = True,
                 scaling: int = 0, feature_redraw_interval: int | None = None, kernel: str = "stable",
                 chunk_size: int = 16, seed: int = 0):
        super().__init__(None, causal, chunk_size, kernel)
        self.d_head = d_head
        self.n_features = V.check_positive_int(
            "n_features", n_features if n_features is not None else max(1, int(d_head * math.log(d_head))))
        self.orthogonal = check_bool("orthogonal", orthogonal)
        if scaling not in (0, 1):
            raise ValueError(f"`scaling` must be 0 or 1, got {scaling!r}")
        self.scaling = scaling
        if feature_redraw_interval is not None:
            V.check_positive_int("feature_redraw_interval", feature_redraw_interval)
        self.feature_redraw_interval = feature_redraw_interval
        self._generator = torch.Generator().manual_seed(int(seed))
        self.projection_matrix = self._draw()
        self.register_buffer("calls_since_redraw", torch.zeros((), dtype=torch.long))

    def _draw(self):
        # Unbiased (Haar) orthogonal blocks by default; the package-compatible kernel keeps the
        # package's plain QR so that both draw the same matrix from the same generator.
        return gaussian_orthogonal_random_matrix(self.n_features, self.d_head, self.scaling, self.orthogonal,
                                                 self._generator, torch.get_default_dtype(),
                                                 haar=self.kernel != "performer_pytorch")

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw a new projection matrix (in place, keeping dtype and device)."""
        self.projection_matrix.copy_(self._draw())
        self.calls_since_redraw.zero_()

    def forward(self, q, k, v, x=None):
        if self.training and self.feature_redraw_interval is not None:
            if int(self.calls_since_redraw) >= self.feature_redraw_interval:
                self.redraw_features()
            else:
                self.calls_since_redraw += 1
        return super().forward(q, k, v, x)


class PerformerSelfAttention(MultiHeadAttention):
    """Multi-head FAVOR+ attention: ``x [batch, n, d_model] -> [batch, n, d_model]``. Defined in Chapter 8.

    ``projection_matrix`` is a buffer ``[n_features, d_head]`` shared by the heads (default
    ``n_features = int(d_head * log(d_head))`` as in ``performer_pytorch``). With
    ``feature_redraw_interval=N`` a training-mode forward redraws it once ``N`` forwards have run
    since the last draw (the package's ``ProjectionUpdater`` rule); :meth:`redraw_features` does it
    by hand. Draws come from a generator seeded with ``seed``; orthogonal blocks are Haar-distributed
    (``haar=True`` of :func:`gaussian_orthogonal_random_matrix`, an unbiased kernel estimate) except
    with ``kernel="performer_pytorch"``, which keeps the package's plain QR (:class:`PerformerCore`).
    """

    def __init__(self, d_model: int, n_heads: int, n_features: int | None = None, causal: bool = False,
                 orthogonal: bool = True, scaling: int = 0, feature_redraw_interval: int | None = None,
                 kernel: str = "stable", chunk_size: int = 16, seed: int = 0, bias: bool = True):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(PerformerCore(self.d_head, n_features, causal, orthogonal, scaling, feature_redraw_interval,
                                    kernel, chunk_size, seed))
