r"""Counting baselines for the language model: unigram and bigram perplexities of the same tokens.

A trained model is only evidence about attention if it has learned more than counting can: these
two numbers, computed on the same tokenizer and the same validation tokens, are the floor a
model must beat (Chapter 9).

* **Unigram**, add-one (Laplace) smoothed: :math:`p(w) = (c(w) + 1) / (N + V)`.
* **Bigram**, interpolated Kneser-Ney with absolute discount :math:`D` (Chen and Goodman 1999):

  .. math:: p(w \mid v) = \frac{\max(c(v, w) - D, 0)}{c(v)}
            + \frac{D\, N_{1+}(v\,\cdot)}{c(v)}\, p_\text{cont}(w),
     \qquad p_\text{cont}(w) = \frac{N_{1+}(\cdot\, w) + 1}{N_{1+}(\cdot\,\cdot) + V},

  where :math:`N_{1+}(v\,\cdot)` is the number of distinct tokens seen after :math:`v` and
  :math:`N_{1+}(\cdot\, w)` the number of distinct tokens seen before :math:`w`. The continuation
  probability is add-one smoothed so that no validation token has probability 0; a context never
  seen in training falls back to :math:`p_\text{cont}` alone.

Every token of ``valid`` from the second on is scored (each has one token of context), the same
tokens the language model predicts up to the first token of each of its sequences.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["unigram_loss", "bigram_loss", "ngram_baselines"]


def _check(tokens, name: str, vocab_size: int) -> np.ndarray:
    t = np.asarray(tokens)
    if t.ndim != 1 or t.size < 2 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"`{name}` must be a 1-D integer array of at least 2 tokens, got shape {t.shape} "
                         f"and dtype {t.dtype}")
    if t.min() < 0 or t.max() >= vocab_size:
        raise ValueError(f"`{name}` must hold token ids in [0, {vocab_size}), got {t.min()} .. {t.max()}")
    return t.astype(np.int64)


def unigram_loss(train, valid, vocab_size: int) -> float:
    """Mean negative log-likelihood (nats) of ``valid[1:]`` under the add-one unigram of ``train``."""
    train, valid = _check(train, "train", vocab_size), _check(valid, "valid", vocab_size)
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + 1.0) - math.log(train.size + vocab_size)
    return float(-logp[valid[1:]].mean())


def bigram_loss(train, valid, vocab_size: int, discount: float = 0.75) -> float:
    """Mean negative log-likelihood (nats) of ``valid[1:]`` given the previous token, under the
    interpolated Kneser-Ney bigram of ``train`` (module docstring)."""
    if not 0.0 < float(discount) < 1.0:
        raise ValueError(f"`discount` must be in (0, 1), got {discount!r}")
    train, valid = _check(train, "train", vocab_size), _check(valid, "valid", vocab_size)
    V = vocab_size
    pair_ids, pair_counts = np.unique(train[:-1] * V + train[1:], return_counts=True)
    first, second = pair_ids // V, pair_ids % V
    context = np.bincount(train[:-1], minlength=V).astype(np.float64)  # c(v) as a context
    followers = np.bincount(first, minlength=V).astype(np.float64)  # N1+(v .)
    preceders = np.bincount(second, minlength=V).astype(np.float64)  # N1+(. w)
    p_cont = (preceders + 1.0) / (pair_ids.size + V)
    v, w = valid[:-1], valid[1:]
    # c(v, w) of every validation pair, looked up in the sorted training pairs
    q = v * V + w
    at = np.searchsorted(pair_ids, q).clip(max=pair_ids.size - 1)
    c_vw = np.where(pair_ids[at] == q, pair_counts[at], 0).astype(np.float64)
    c_v = context[v]
    seen = c_v > 0
    safe = np.where(seen, c_v, 1.0)
    p = np.where(seen, np.maximum(c_vw - discount, 0.0) / safe + discount * followers[v] / safe * p_cont[w],
                 p_cont[w])
    return float(-np.log(p).mean())


def ngram_baselines(train, valid, vocab_size: int) -> dict:
    """``{"unigram": {"loss", "ppl"}, "bigram": {...}, "tokens": scored tokens}``.

    Defined in Chapter 9.
    """
    out = {}
    for name, loss in (("unigram", unigram_loss(train, valid, vocab_size)),
                       ("bigram", bigram_loss(train, valid, vocab_size))):
        out[name] = {"loss": loss, "ppl": math.exp(loss)}
    out["tokens"] = int(np.asarray(valid).size - 1)
    return out
