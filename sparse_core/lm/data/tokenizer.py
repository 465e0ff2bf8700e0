"""A byte-level BPE tokenizer trained on WikiText-2's train split (``tokenizers`` library).

Choice: *byte-level* pre-tokenization (GPT-2's: split into words with their leading space, bytes
mapped to printable characters), no prefix space, no normalization. It is lossless --
``decode(encode(text)) == text`` for any text, including WikiText's ``<unk>``, its ``@-@`` and
non-Latin scripts -- so generated samples print exactly what the model produced, and it is the
tokenization Pythia itself uses. A whitespace pre-tokenizer would drop the spacing instead.

The vocabulary is 10,000 by default (256 bytes + one special ``<|endoftext|>`` + merges).
Training is deterministic (tokenizers breaks ties between equal pair counts by the pair itself),
takes a few seconds, and is cached in the *cache directory* (``SPARSE_COURSE_CACHE``, default
``~/.cache/sparse_course``) under a name holding the vocabulary size and the train file's
checksum; encoded splits are cached there too (``.npy``, keyed by the tokenizer's and the
split's checksums), so the text files are read only when the cache misses. Training runs copy
the tokenizer next to their checkpoints (``tokenizer.json``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .wikitext import SHA256, read_split

__all__ = ["CACHE_ENV_VAR", "SPECIAL_TOKENS", "cache_dir", "train_bpe", "load_or_train_tokenizer", "encode_lines",
           "encode_split", "tokenizer_hash"]

CACHE_ENV_VAR = "SPARSE_COURSE_CACHE"
SPECIAL_TOKENS = ["<|endoftext|>"]
_VERSION = "bytebpe1"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "sparse_course").expanduser()


def train_bpe(lines: Iterable[str], vocab_size: int = 10000):
    """Train a byte-level BPE of ``vocab_size`` tokens on ``lines`` (an iterable of strings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257 + len(SPECIAL_TOKENS):
        raise ValueError(f"`vocab_size` must be an integer >= {257 + len(SPECIAL_TOKENS)} (256 bytes, the special "
                         f"tokens and at least one merge), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_or_train_tokenizer(vocab_size: int = 10000, data_dir=None, path: str | os.PathLike | None = None):
    """The WikiText-2 BPE of ``vocab_size`` tokens: read from ``path`` or the cache, else trained
    on the train split and cached.

    Defined in Chapter 9.
    """
    from tokenizers import Tokenizer

    if path is not None:
        return Tokenizer.from_file(str(path))
    cached = cache_dir() / f"wikitext2-{_VERSION}-{vocab_size}-{SHA256['train'][:12]}.json"
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    tok = train_bpe(read_split("train", data_dir).splitlines(keepends=True), vocab_size)
    _atomic_write(cached, tok.to_str().encode("utf-8"))
    return tok


def tokenizer_hash(tok) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def encode_lines(tok, text: str) -> np.ndarray:
    """Token ids (int32) of ``text``, encoded line by line (lossless: decoding gives ``text``)."""
    ids = [e.ids for e in tok.encode_batch(text.splitlines(keepends=True))]
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int32)
    return flat


def encode_split(tok, split: str, data_dir=None, cache: bool = True) -> np.ndarray:
    """Token ids of a WikiText-2 split, cached per tokenizer and split.

    Defined in Chapter 9.
    """
    path = cache_dir() / f"tokens-{tokenizer_hash(tok)[:16]}-{split}-{SHA256.get(split, '')[:12]}.npy"
    if cache and path.is_file():
        return np.load(path)
    ids = encode_lines(tok, read_split(split, data_dir))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, ids)
        os.replace(tmp, path)
    return ids
