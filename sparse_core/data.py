"""``sparse_core.data`` is :mod:`sparse_core.lm.data`; this name (and its submodules) is kept for
the README's entry points."""
import sys

from .lm import data
from .lm.data import batching, tokenizer, wikitext

sys.modules[__name__] = data
for module in (batching, tokenizer, wikitext):
    sys.modules[f"{__name__}.{module.__name__.rsplit('.', 1)[1]}"] = module
