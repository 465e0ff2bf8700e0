"""``sparse_core.hf_compat`` is :mod:`sparse_core.models.hf_compat`; this name is kept for the README's entry points."""
import sys

from .models import hf_compat

sys.modules[__name__] = hf_compat
