"""Runs the CUDA kernels in Numba's CUDA simulator; used by ``tests/test_cuda_kernels.py``.

``python tests/_cuda_sim_runner.py IN.npz OUT.npz``, with ``NUMBA_ENABLE_CUDASIM=1`` in the
environment (it must be set before numba is imported, hence a separate process). ``IN.npz``
holds, per case ``c``, the arrays ``c/q``, ``c/k``, ``c/v``, ``c/dout`` and a JSON spec
``c/spec`` (pattern built by :func:`make_pattern`); ``OUT.npz`` gets
``c/out``, ``c/lse``, ``c/dq``, ``c/dk``, ``c/dv``, ``c/splits_steps`` and ``simulator``.
"""
import json
import sys
import time

import numpy as np


def make_pattern(spec):
    """The pattern of a test case, from its JSON spec (``kind`` and the pattern's arguments)."""
    from sparse_core import patterns as P

    kind = spec["kind"]
    if kind == "window":
        return P.sliding_window(spec["window"], causal=True)
    if kind == "masked-rows":  # rows away from the global tokens allow no key at all
        return P.sliding_window(2) & P.global_tokens(spec["tokens"])
    if kind == "causal":
        return P.causal()
    if kind == "window-global":
        return P.sliding_window(4) | P.global_tokens([0])
    if kind == "random":
        return P.random_pattern(spec["density"], seed=spec["seed"])
    if kind == "bigbird":
        r = min(1, P.max_random_blocks(spec["n_q"], spec["block"]))  # short cases have no room for one
        return P.bigbird(spec["n_q"], spec["block"], num_random_blocks=r, n_heads=spec["layout_heads"])
    if kind == "dense":
        return P.dense()
    raise ValueError(f"unknown case kind {kind!r}")


def _through_autograd(c, data, layout):
    """Run the CUDA path's ``torch.autograd.Function`` on CPU tensors: its device views are numpy
    views of the tensors (the simulator's kernels write through them), its stream is 0."""
    import contextlib

    import torch

    from sparse_core.attention.ops import _make_cuda_function

    fn = _make_cuda_function((lambda *ts: [t.numpy() for t in ts], lambda dev: 0,
                              lambda dev: contextlib.nullcontext()))
    q, k, v = (torch.tensor(data[f"{c}/{name}"], requires_grad=True) for name in ("q", "k", "v"))
    out, lse = fn.apply(q, k, v, layout, q.shape[-1] ** -0.5)  # grouped-query k, v as they are: read in place
    (out * torch.from_numpy(data[f"{c}/dout"])).sum().backward()
    return {f"{c}/torch_{name}": x.detach().numpy() for name, x in
            (("out", out), ("lse", lse), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad))}


def main(src, dst):
    from numba import config

    from sparse_core.kernels import cuda as K

    data = np.load(src)
    cases = sorted({name.split("/")[0] for name in data.files})
    result = {"simulator": np.array(bool(config.ENABLE_CUDASIM))}
    for c in cases:
        spec = json.loads(str(data[f"{c}/spec"]))
        t0 = time.time()
        pattern = make_pattern(spec)
        layout = pattern.to_layout(spec["n_q"], spec["n_k"], spec["block"], spec["layout_heads"])
        tiles = tuple(spec["tiles"]) if spec.get("tiles") else None
        r = K.attention_numpy(data[f"{c}/q"], data[f"{c}/k"], data[f"{c}/v"], layout, dout=data[f"{c}/dout"],
                              tiles=tiles)
        for name, x in r.items():
            result[f"{c}/{name}"] = x
        ks = K.kernels(spec["block"], spec["d"], spec["d_v"], tiles)
        result[f"{c}/splits_steps"] = np.array([[ks[f"cfg_{kind}"].splits, ks[f"cfg_{kind}"].steps]
                                                for kind in ("forward", "dkdv", "dq")])
        if spec.get("torch"):  # the same case through block_sparse_attention's CUDA autograd Function
            result.update(_through_autograd(c, data, layout))
        print(f"{c}: {time.time() - t0:.1f} s", flush=True)
    np.savez(dst, **result)


if __name__ == "__main__":
    main(*sys.argv[1:3])
