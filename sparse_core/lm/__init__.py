"""Language modelling: WikiText-2 data and tokenizer (:mod:`sparse_core.lm.data`), the training
engine (:mod:`sparse_core.lm.engine`: one loop, checkpoints, resume, stop handling, metrics) and
its data-parallel mode under ``torchrun`` (:mod:`sparse_core.lm.distributed`), training
(:mod:`sparse_core.lm.train`) and distillation (:mod:`sparse_core.lm.distill`, a plug-in of the
engine) of the case study's models (Chapters 9 and 10)."""
