r"""The float64 dense masked-softmax oracle.

Every sparse kernel in the course is checked against :func:`attention`. It is written for
clarity and exactness, not speed: it materialises the whole ``[..., n_q, n_k]`` score matrix
in float64.

.. math::

    \operatorname{Attn}(Q, K, V)_i = \sum_{j : M_{ij}} \frac{\exp(s_{ij} - m_i)}{\sum_{j' : M_{ij'}}
    \exp(s_{ij'} - m_i)} V_j, \qquad s_{ij} = \tau\, q_i \cdot k_j,\quad m_i = \max_{j : M_{ij}} s_{ij}

Conventions (shared by the whole library):

* shapes ``q: [..., n_q, d]``, ``k: [..., n_k, d]``, ``v: [..., n_k, d_v]``; leading dimensions
  (batch, heads, ...) broadcast;
* ``mask`` is boolean, ``True`` means *may attend*, broadcastable to ``[..., n_q, n_k]``;
* ``causal=True`` keeps key ``j`` for query ``i`` when ``j <= i`` (top-left aligned, as
  ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)`` and FlexAttention's
  ``q_idx >= kv_idx``); it is combined with ``mask`` by logical AND;
* a query row with no allowed key (a *fully masked row*) gets output zero, log-sum-exp
  ``-inf`` and zero gradient -- never NaN;
* NaN or inf in the inputs propagate exactly as in dense attention; they are not hidden.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validation as V

__all__ = ["attention", "attention_weights", "masked_softmax", "causal_mask"]


def causal_mask(n_q: int, n_k: int) -> np.ndarray:
    """Boolean ``[n_q, n_k]`` mask with ``True`` where ``j <= i`` (top-left aligned).

    Defined in Chapter 1 (Exercise 1.2).
    """
    n_q = V.check_nonnegative_int("n_q", n_q)
    n_k = V.check_nonnegative_int("n_k", n_k)
    return np.arange(n_k)[None, :] <= np.arange(n_q)[:, None]


def _prepare(q, k, v, mask, scale, causal):
    backend = V.backend_of(q=q, k=k, v=v)
    V.check_float("q", q)
    V.check_float("k", k)
    if v is not None:
        V.check_float("v", v)
    V.check_ndim("q", q, 2, "[..., n_q, d]")
    V.check_ndim("k", k, 2, "[..., n_k, d]")
    if v is not None:
        V.check_ndim("v", v, 2, "[..., n_k, d_v]")
    n_q, d = q.shape[-2], q.shape[-1]
    n_k = k.shape[-2]
    if k.shape[-1] != d:
        raise ValueError(
            f"`k` must have the same head dimension as `q` (d={d}), got k of shape {tuple(k.shape)}"
        )
    shapes = {"q": tuple(q.shape[:-2]), "k": tuple(k.shape[:-2])}
    if v is not None:
        if v.shape[-2] != n_k:
            raise ValueError(
                f"`v` must have as many rows as `k` (n_k={n_k}), got v of shape {tuple(v.shape)}"
            )
        shapes["v"] = tuple(v.shape[:-2])
    batch = V.broadcast_batch(shapes)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"`causal` must be a bool, got {type(causal).__name__}")
    scale = V.check_scale(scale, d)

    keep = None
    if mask is not None:
        if backend == "torch":
            import torch

            if isinstance(mask, np.ndarray):
                mask = torch.from_numpy(V.as_numpy_bool_mask(mask))
            elif not isinstance(mask, torch.Tensor):
                raise TypeError(f"`mask` must be a boolean numpy array or torch tensor, got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"`mask` must be boolean (True = may attend), got dtype {mask.dtype}")
            mask = mask.to(q.device)
        else:
            mask = V.as_numpy_bool_mask(mask)
        V.check_mask_shape(tuple(mask.shape), batch, n_q, n_k)
        keep = mask
    if causal:
        cm = causal_mask(n_q, n_k)
        if backend == "torch":
            import torch

            cm = torch.from_numpy(cm).to(q.device)
        keep = cm if keep is None else (keep & cm)
    return backend, scale, keep


def _scores(backend, q, k, scale):
    if backend == "torch":
        import torch

        return torch.matmul(q.to(torch.float64), k.to(torch.float64).transpose(-1, -2)) * scale
    return np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale


def _softmax_parts(backend, s, keep):
    """Return (p, l, m): unnormalised weights, row sums and row maxima (-inf when masked)."""
    if backend == "torch":
        import torch

        if keep is not None:
            s = torch.where(keep, s, torch.tensor(-torch.inf, dtype=s.dtype, device=s.device))
        if s.shape[-1] == 0:  # no keys at all: every row is fully masked
            m = torch.full(s.shape[:-1] + (1,), -torch.inf, dtype=s.dtype, device=s.device)
        else:
            m = s.amax(dim=-1, keepdim=True).detach()
        m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m_safe)
        l = p.sum(dim=-1, keepdim=True)
        return p, l, m
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    # max over an empty allowed set is -inf; keep it finite for the shift.
    m = s.max(axis=-1, keepdims=True) if s.shape[-1] else np.full(s.shape[:-1] + (1,), -np.inf)
    m_safe = np.where(np.isneginf(m), 0.0, m)
    with np.errstate(invalid="ignore"):  # inf - inf = NaN: inf inputs propagate as NaN, as in dense attention
        p = np.exp(s - m_safe)
    l = p.sum(axis=-1, keepdims=True)
    return p, l, m


def masked_softmax(scores: Any, mask: Any = None) -> Any:
    """Row-wise softmax of ``scores`` in float64 over the entries where ``mask`` is True.

    Defined in Chapter 1 (Exercise 1.1).

    Fully masked rows are all zeros. Returns the same kind of array (numpy or torch) as given.
    """
    backend = V.backend_of(scores=scores)
    V.check_float("scores", scores)
    V.check_ndim("scores", scores, 2, "[..., n_q, n_k]")
    if mask is not None:
        if backend == "numpy":
            mask = V.as_numpy_bool_mask(mask)
        V.check_mask_shape(tuple(mask.shape), tuple(scores.shape[:-2]), *scores.shape[-2:])
    if backend == "torch":
        import torch

        s = scores.to(torch.float64)
        if mask is not None and isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask).to(s.device)
        p, l, _ = _softmax_parts(backend, s, mask)
        return p / torch.where(l > 0, l, torch.ones_like(l))
    p, l, _ = _softmax_parts(backend, scores.astype(np.float64), mask)
    return p / np.where(l > 0, l, 1.0)


def attention_weights(q, k, mask=None, scale=None, causal=False):
    """The float64 attention probability matrix ``P`` of shape ``[..., n_q, n_k]``.

    Defined in Chapter 1.
    """
    backend, scale, keep = _prepare(q, k, None, mask, scale, causal)
    s = _scores(backend, q, k, scale)
    p, l, _ = _softmax_parts(backend, s, keep)
    if backend == "torch":
        import torch

        return p / torch.where(l > 0, l, torch.ones_like(l))
    return p / np.where(l > 0, l, 1.0)


def attention(q, k, v, mask=None, scale=None, causal=False, *, return_lse=False):
    """Dense masked scaled dot-product attention, computed in float64.

    Defined in Chapter 1 (Exercise 1.3).

    Parameters
    ----------
    q, k, v:
        ``[..., n_q, d]``, ``[..., n_k, d]``, ``[..., n_k, d_v]``; all numpy arrays or all torch
        tensors, of a floating dtype. Leading dimensions broadcast.
    mask:
        Optional boolean array broadcastable to ``[..., n_q, n_k]``; ``True`` = may attend.
    scale:
        Multiplier of the scores; ``1/sqrt(d)`` when None.
    causal:
        Also require ``j <= i``.
    return_lse:
        Also return the log-sum-exp of the scaled scores per query, ``[..., n_q]``
        (``-inf`` for fully masked rows).

    Returns
    -------
    ``out`` of shape ``[..., n_q, d_v]`` in float64 (numpy array for numpy inputs; float64 tensor,
    differentiable, on the input's device for torch inputs), and ``lse`` if requested.
    """
    backend, scale, keep = _prepare(q, k, v, mask, scale, causal)
    s = _scores(backend, q, k, scale)
    p, l, m = _softmax_parts(backend, s, keep)
    if backend == "torch":
        import torch

        vv = v.to(torch.float64)
        out = torch.matmul(p, vv) / torch.where(l > 0, l, torch.ones_like(l))
        if return_lse:
            m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
            lse = (m_safe + torch.log(l)).squeeze(-1)
            return out, lse
        return out
    out = np.matmul(p, v.astype(np.float64)) / np.where(l > 0, l, 1.0)
    if return_lse:
        m_safe = np.where(np.isneginf(m), 0.0, m)
        with np.errstate(divide="ignore"):
            lse = (m_safe + np.log(l))[..., 0]
        return out, lse
    return out
