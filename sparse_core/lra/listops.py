r"""ListOps (Nangia and Bowman 2018), with the generator rules of the Long Range Arena (Tay et al.
2021): nested lists of single digits under four operators, and the value of the whole expression
(a digit, so ten classes) to predict from its tokens.

* ``[MAX a b ...]``, ``[MIN ...]``: the largest, the smallest argument;
* ``[MED ...]``: the median, rounded down to an integer (``int(numpy.median(args))``);
* ``[SM ...]``: the sum modulo 10.

Generation, as in the LRA: a node at depth ``< max_depth`` is a digit with probability 0.75 and
otherwise an operator with 2..``max_args`` arguments, each generated the same way one level down
(a node at ``max_depth`` is a digit); expressions are drawn until their token count lies in
``[min_length, max_length]`` (only the root is forced to be an operator, so that no example is a
bare digit). The value depends on every token, often far apart: the LRA's long-range task.

Tokens: ``0`` pad, digits ``1..10`` (digit ``d`` is token ``d + 1``), the four operators and ``]``
(:data:`VOCAB`). Defined in Chapter 11.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["VOCAB", "OPERATORS", "PAD", "generate_listops", "listops_value", "encode", "listops_examples",
           "ListOpsBatches"]

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
VOCAB = ("<pad>",) + tuple(str(d) for d in range(10)) + OPERATORS + ("]",)
PAD = 0
_ID = {t: i for i, t in enumerate(VOCAB)}
VALUE_P = 0.75  # probability that a node above the depth limit is a digit


def _tree(rng: np.random.Generator, depth: int, max_depth: int, max_args: int, out: list, limit: int,
          force_op: bool = False) -> None:
    if len(out) > limit:  # already too long: stop growing (the example is rejected)
        return
    if not force_op and (depth >= max_depth or rng.random() < VALUE_P):
        out.append(str(int(rng.integers(0, 10))))
        return
    out.append(OPERATORS[int(rng.integers(0, 4))])
    for _ in range(int(rng.integers(2, max_args + 1))):
        _tree(rng, depth + 1, max_depth, max_args, out, limit)
    out.append("]")


def generate_listops(rng: np.random.Generator, max_depth: int = 10, max_args: int = 10, min_length: int = 1,
                     max_length: int = 2000, max_tries: int = 100000) -> list[str]:
    """One expression as a list of tokens, ``min_length <= len <= max_length`` (module docstring)."""
    if max_depth < 1 or max_args < 2 or not 1 <= min_length <= max_length:
        raise ValueError(f"need max_depth >= 1, max_args >= 2 and 1 <= min_length <= max_length, got "
                         f"max_depth={max_depth}, max_args={max_args}, min_length={min_length}, max_length={max_length}")
    for _ in range(max_tries):
        out: list[str] = []
        _tree(rng, 1, max_depth, max_args, out, max_length, force_op=True)
        if min_length <= len(out) <= max_length:
            return out
    raise ValueError(f"no expression of {min_length}..{max_length} tokens in {max_tries} tries with "
                     f"max_depth={max_depth}, max_args={max_args}: lower `min_length` or raise `max_depth`")


def _apply(op: str, args: list[int]) -> int:
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(np.median(args))
    return sum(args) % 10


def listops_value(tokens) -> int:
    """The value of an expression given as tokens (strings, or ids of :data:`VOCAB`; pads ignored)."""
    stack: list = []
    for t in tokens:
        t = VOCAB[int(t)] if not isinstance(t, str) else t
        if t == "<pad>":
            continue
        if t in OPERATORS:
            stack.append([t])
        elif t == "]":
            if not stack or not isinstance(stack[-1], list) or len(stack[-1]) < 2:
                raise ValueError("malformed expression: ']' closes no operator with arguments")
            op, *args = stack.pop()
            v = _apply(op, args)
            if stack:
                stack[-1].append(v)
            else:
                stack.append(v)
        elif t.isdigit() and len(t) == 1:
            if stack and isinstance(stack[-1], list):
                stack[-1].append(int(t))
            else:
                stack.append(int(t))
        else:
            raise ValueError(f"unknown ListOps token {t!r}")
    if len(stack) != 1 or isinstance(stack[0], list):
        raise ValueError("malformed expression: unclosed operator or several top-level values")
    return int(stack[0])


def encode(tokens: list[str], seq_len: int) -> np.ndarray:
    """Token ids padded with :data:`PAD` to ``seq_len``."""
    if len(tokens) > seq_len:
        raise ValueError(f"expression of {len(tokens)} tokens does not fit `seq_len`={seq_len}")
    ids = np.full(seq_len, PAD, dtype=np.int64)
    ids[:len(tokens)] = [_ID[t] for t in tokens]
    return ids


def listops_examples(rng: np.random.Generator, count: int, seq_len: int, max_depth: int = 10, max_args: int = 10,
                     min_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` expressions of ``min_length`` (default ``seq_len // 4``) to ``seq_len`` tokens:
    ids ``(count, seq_len)`` and values ``(count,)``."""
    lo = max(1, seq_len // 4) if min_length is None else min_length
    x = np.empty((count, seq_len), dtype=np.int64)
    y = np.empty(count, dtype=np.int64)
    for i in range(count):
        toks = generate_listops(rng, max_depth, max_args, lo, seq_len)
        x[i], y[i] = encode(toks, seq_len), listops_value(toks)
    return x, y


class ListOpsBatches:
    """The engine's batch source: a fixed training pool of ``pool`` expressions (seeded) from which
    step ``s`` draws its batch (a fixed function of ``(seed, s, rank)``), and a held-out set from
    another stream."""

    def __init__(self, seq_len: int, batch_size: int, pool: int = 20000, max_depth: int = 10, max_args: int = 10,
                 min_length: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"`batch_size`={batch_size} must be divisible by the {world_size} processes")
        self.seq_len, self.batch_size, self.pool_size = seq_len, batch_size, pool
        self.max_depth, self.max_args, self.min_length = max_depth, max_args, min_length
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._pool = None

    def _gen(self, stream: int, count: int):
        return listops_examples(np.random.default_rng([self.seed, stream]), count, self.seq_len, self.max_depth,
                                self.max_args, self.min_length)

    def batch(self, step: int):
        if self._pool is None:
            self._pool = self._gen(0, self.pool_size)
        rng = np.random.default_rng([self.seed, 2, step, self.rank])
        idx = rng.integers(0, self.pool_size, self.batch_size // self.world_size)
        return torch.from_numpy(self._pool[0][idx]), torch.from_numpy(self._pool[1][idx])

    def held_out(self, batches: int):
        x, y = self._gen(1, batches * self.batch_size)
        for b in range(batches):
            s = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield torch.from_numpy(x[s]), torch.from_numpy(y[s])

    def describe(self) -> dict:
        return {"task": "listops", "seed": self.seed, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "pool": self.pool_size, "max_depth": self.max_depth, "max_args": self.max_args,
                "min_length": self.min_length}
