"""Language modelling: WikiText-2 data and tokenizer (:mod:`sparse_core.lm.data`), training
(:mod:`sparse_core.lm.train`) and distillation (:mod:`sparse_core.lm.distill`) of the case
study's models (Chapters 9 and 10)."""
