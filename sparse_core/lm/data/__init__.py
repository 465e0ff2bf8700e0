"""Data for the language-model case study.

* :mod:`sparse_core.lm.data.wikitext` -- WikiText-2 from a data directory (checked by sha256), or
  downloaded with Hugging Face ``datasets`` when online;
* :mod:`sparse_core.lm.data.tokenizer` -- a byte-level BPE trained on the train split (cached);
* :mod:`sparse_core.lm.data.batching` -- contiguous sequences and seeded, resumable batch order.
"""
from .batching import TokenBatches, eval_batches
from .tokenizer import encode_split, load_or_train_tokenizer, train_bpe
from .wikitext import find_wikitext2, read_split, wikitext2_dir

__all__ = ["find_wikitext2", "wikitext2_dir", "read_split", "train_bpe", "load_or_train_tokenizer", "encode_split",
           "TokenBatches", "eval_batches"]
