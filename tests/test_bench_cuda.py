"""The CUDA benchmark: its bookkeeping (JSON, plot, README) with stand-in timings, and its
clean refusal without a GPU. The GPU measurement itself runs only on a GPU (no timing asserted)."""
import json

import pytest
import torch

from sparse_core import patterns as P
from sparse_core.bench import cuda as bench
from sparse_core.cli import main


def test_fp32_peak_from_device_properties():
    h100 = bench.fp32_peak(132, 1_980_000, (9, 0))  # H100 SXM: 132 SMs at 1.98 GHz, 128 FP32 lanes per SM
    assert h100["fp32_peak_tflops"] == pytest.approx(132 * 1.98e9 * 128 * 2 / 1e12)
    assert bench.fp32_peak(108, 1_410_000, (8, 0))["fp32_peak_tflops"] == pytest.approx(19.49, abs=0.01)  # A100
    assert bench.fp32_peak(10, 1_000_000, (1, 0))["fp32_peak_tflops"] is None  # unknown architecture


def test_configs_cover_both_sweeps_once():
    cfg = bench._configs([2048, 8192], [8192], [4, 8, 16, 32])
    assert cfg[:2] == [("length", 2048, 256), ("length", 8192, 1024)]
    assert [c[2] for c in cfg[2:]] == [2048, 512, 256]  # 8192 / 8 is already in the length sweep
    assert all(c[0] == "density" for c in cfg[2:])


def test_report_from_stand_in_timings(tmp_path):
    ours = 1e-3  # seconds; the others are fixed multiples, so every ratio is known

    def measure(n, window, block_size, batch, heads, d, rounds, flex):
        layout = P.sliding_window(window, causal=True).to_layout(n, n, block_size, 1)
        mult = {"ours_fwd": 1, "ours_fwdbwd": 3, "sdpa32_fwd": 4, "sdpa32_fwdbwd": 9, "sdpa16_fwd": 0.5,
                "sdpa16_fwdbwd": 1.5, "flex_fwd": 2, "flex_fwdbwd": 6}
        return layout, {name: [ours * m] * rounds for name, m in mult.items() if flex or "flex" not in name}

    device = {"name": "Stand-in GPU", "capability": [9, 0], "torch": "x", "cuda": "y", "numba": "z"}
    device.update(bench.fp32_peak(100, 1_000_000, (9, 0)))  # 25.6 TFLOP/s
    out = tmp_path / "c"
    rep = bench.run_cuda_bench([512, 1024], [1024], [4, 8], 64, 1, 2, 16, 2, out, log=None, measure=measure,
                               device=device, matmul=lambda rounds: [20e12] * rounds)
    data = json.loads((out / "cuda.json").read_text())
    assert data["command"].startswith("python -m sparse_core bench cuda --n 512 1024 --density-n 1024")
    assert data["device"]["name"] == "Stand-in GPU" and data["fp32_matmul_tflops_no_tf32"] == pytest.approx(20)
    assert [(r["sweep"], r["n"], r["window"]) for r in data["rows"]] == [
        ("length", 512, 64), ("length", 1024, 128), ("density", 1024, 256)]
    r = data["rows"][1]
    lay = P.sliding_window(128, causal=True).to_layout(1024, 1024, 64, 1)
    flops = lay.flops(16) * 2
    assert r["ms"]["ours_fwd"] == pytest.approx(1.0) and r["block_density"] == pytest.approx(lay.block_density)
    assert r["ours_fwd_tflops"] == pytest.approx(flops / ours / 1e12)
    assert r["ours_bwd_tflops"] == pytest.approx(2.5 * flops / (2 * ours) / 1e12)
    assert r["ours_fwd_fraction_of_fp32_peak"] == pytest.approx(flops / ours / 25.6e12)
    assert r["ours_fwd_fraction_of_fp32_matmul"] == pytest.approx(flops / ours / 20e12)
    assert (r["speedup_fwd_vs_sdpa32"], r["speedup_fwdbwd_vs_sdpa32"]) == (pytest.approx(4), pytest.approx(3))
    assert (r["speedup_fwd_vs_sdpa16"], r["speedup_fwd_vs_flex"]) == (pytest.approx(0.5), pytest.approx(2))
    assert r["faster_than_sdpa32_fwd"] is True and r["meets_fwd_peak_target"] is False
    text = (out / "README.md").read_text()
    assert data["command"] in text and "Stand-in GPU" in text and text.count("\n| ") == 4
    assert (out / "cuda.png").stat().st_size > 0
    assert rep["rows"] == data["rows"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_benchmark_refuses_clearly(tmp_path, capsys):
    assert main(["bench", "cuda", "--n", "1024", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "torch.cuda.is_available() is False" in err
    assert not (tmp_path / "c").exists()
