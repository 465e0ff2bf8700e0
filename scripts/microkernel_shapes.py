"""Measure the register block (RR x CC) of the fused CPU kernels: forward and backward time of
each candidate shape, for head dimensions 32/64/128 and blocks 32/64/128, float32.

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/microkernel_shapes.py \
        [--n 2048] [--heads 4] [--rounds 5] [--out results/kernels/microkernel_shapes.json]

Every shape runs the same kernel source (``sparse_core.kernels.cpu.variant``); the shapes are timed
interleaved, round by round, and compared by the median over rounds of the ratio to the shape in use
(``cpu.RR x cpu.CC``), so a slow period of the machine hits all of them. Layout: a sliding window of
n / 8 tokens each side. Writes JSON (with the command) and prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse_core import patterns as P  # noqa: E402
from sparse_core.kernels import cpu  # noqa: E402
from sparse_core.kernels import microkernels as mk  # noqa: E402

SHAPES = [(4, 16), (8, 16), (4, 32), (8, 32)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--out", default=str(ROOT / "results/kernels/microkernel_shapes.json"))
    a = ap.parse_args(argv)
    t0 = time.time()
    kernels = {s: cpu.variant(*s) for s in SHAPES}
    rng = np.random.default_rng(0)
    rows = []
    for d in a.dims:
        q, k, v, do = (rng.standard_normal((1, a.heads, a.n, d)).astype(np.float32) for _ in range(4))
        for block in a.blocks:
            lay = P.sliding_window(a.n // 8).to_layout(a.n, a.n, block, 1)
            scale = d ** -0.5
            out, lse = cpu.run_forward(q, k, v, lay, scale)
            fns = {}
            for s, ks in kernels.items():
                fa = cpu.forward_args(q, k, v, lay, scale, cc=s[1])
                ba, bq = cpu.backward_args(q, k, v, out, lse, do, lay, scale, cc=s[1])
                with mk.slp_compile():  # compile (and check) each variant once
                    ks["forward"](*fa)
                    ks["backward_dkdv"](*ba)
                    ks["backward_dq"](*bq)
                np.testing.assert_allclose(fa[-2].reshape(out.shape), out, atol=2e-5)
                fns[s] = (lambda ks=ks, fa=fa: ks["forward"](*fa),
                          lambda ks=ks, ba=ba, bq=bq: (ks["backward_dkdv"](*ba), ks["backward_dq"](*bq)))
            times = {s: ([], []) for s in SHAPES}
            for _ in range(a.rounds):
                for s, (f, b) in fns.items():
                    for i, fn in enumerate((f, b)):
                        t = time.perf_counter()
                        fn()
                        times[s][i].append(time.perf_counter() - t)
            flop = lay.flops(d) * a.heads
            base = times[(cpu.RR, cpu.CC)]
            for s in SHAPES:
                fw, bw = times[s]
                rows.append({"d": d, "block": block, "shape": f"{s[0]}x{s[1]}",
                             "fwd_ms": 1e3 * float(np.median(fw)), "bwd_ms": 1e3 * float(np.median(bw)),
                             "fwd_gflops": flop / float(np.median(fw)) / 1e9,
                             "bwd_gflops": 2.5 * flop / float(np.median(bw)) / 1e9,
                             "fwd_vs_used": float(np.median([x / y for x, y in zip(base[0], fw)])),
                             "bwd_vs_used": float(np.median([x / y for x, y in zip(base[1], bw)]))})
                r = rows[-1]
                print(f"d={d:4d} block={block:4d} {r['shape']:>5}: fwd {r['fwd_ms']:7.2f} ms "
                      f"({r['fwd_gflops']:6.1f} GFLOP/s, x{r['fwd_vs_used']:.2f} of {cpu.RR}x{cpu.CC})  "
                      f"bwd {r['bwd_ms']:7.2f} ms ({r['bwd_gflops']:6.1f} GFLOP/s, x{r['bwd_vs_used']:.2f})", flush=True)
    res = {"command": "python scripts/microkernel_shapes.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "n": a.n, "heads": a.heads, "rounds": a.rounds, "dtype": "float32", "used": f"{cpu.RR}x{cpu.CC}",
           "note": "x = median over rounds of (time of the shape in use / time of this shape): > 1 is faster",
           "seconds": time.time() - t0, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
