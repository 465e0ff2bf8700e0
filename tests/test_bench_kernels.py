"""The kernel benchmark runs end to end on tiny sizes and writes its files (no timing assertions)."""
import json

import pytest

from sparse_core.cli import main


def test_bench_kernels_writes_json_plot_and_readme(tmp_path, capsys):
    out = tmp_path / "k"
    assert main(["bench", "kernels", "--n", "256", "--density-n", "256", "--block-size", "32", "--heads", "2",
                 "--d", "16", "--rounds", "1", "--no-flex", "--quiet", "--out", str(out), "--reference", "none",
                 "--kv-heads", "1", "--decode-cache", "300", "--decode-rows", "1", "3",
                 "--model-n", "64", "--model-presets", "tiny"]) == 0
    data = json.loads((out / "kernels.json").read_text())
    assert data["command"].startswith("python -m sparse_core bench kernels --n 256")
    assert "--reference none --kv-heads 1 --decode-cache 300 --decode-rows 1 3 --model-n 64" in data["command"]
    assert len(data["length_sweep"]) == 1 and len(data["density_sweep"]) == 4 and len(data["gqa"]) == 1
    row = data["length_sweep"][0]
    for key in ("block_density", "ms", "matmul_peak_gflops", "ours_fwd_fraction_of_peak", "speedup_fwd_vs_sdpa",
                "speedup_fwdbwd_vs_sdpa", "ours_fwd_host_peak_bytes", "qkv_bytes", "tile_products_fraction_of_peak",
                "ours_fwd_gflops", "ours_bwd_gflops", "fwd_flops_per_byte", "speedup_fwd_vs_reference"):
        assert key in row
    assert set(row["ms"]) == {"mm", "tiles", "sdpa_fwd", "ours_fwd", "sdpa_fwdbwd", "ours_fwdbwd"}
    assert row["speedup_fwd_vs_flex"] is None and row["speedup_fwd_vs_reference"] is None
    assert data["gqa"][0]["kv_heads"] == 1 and data["gqa"][0]["qkv_bytes"] == (2 + 1 + 1) * 256 * 16 * 4
    assert set(data["ceilings"]) == {"matmul_gflops", "microkernel_gflops", "memory_gb_per_s"}
    assert all(v > 0 for v in data["ceilings"].values())
    # decoding: one row per (cache, rows) and a grouped-query case for one row; the answers agree with SDPA
    assert [(r["cache"], r["rows"], r["kv_heads"]) for r in data["decode"]] == [(300, 1, 2), (300, 1, 1), (300, 3, 2)]
    assert all(r["max_abs_error_vs_masked_sdpa"] < 1e-4 for r in data["decode"])
    (m,) = data["model"]
    assert m["preset"] == "tiny" and m["n"] == 64 and 0 <= m["attention_share_dense"] <= 1 and m["tokens_per_s"]["none"] > 0
    assert m["speedup_amdahl"] > 0 and m["measured_over_predicted"] > 0
    assert (out / "kernels.png").stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "| sweep |" in readme and "## Decoding" in readme and "## Whole model" in readme
    assert "## Targets" in readme and "compiled FlexAttention (forward) at n >= 4096: n/a (not measured)" in readme
    assert "Reference kernel: not available." in readme


def test_bench_kernels_rejects_bad_lists(capsys):
    with pytest.raises(SystemExit, match="--kv-heads, --decode-cache and --model-n take integers"):
        main(["bench", "kernels", "--kv-heads", "two", "--quiet"])


def test_reference_kernel_loads_when_present(tmp_path):
    """A missing file gives None (the benchmark then reports 'not available'); a file that defines
    make_bsa_gemm is loaded and wrapped to compile with the SLP vectoriser on."""
    from sparse_core.bench import ceilings

    assert ceilings.load_reference(str(tmp_path / "missing.py")) is None
    assert ceilings.load_reference(None) is None
    f = tmp_path / "ref.py"
    f.write_text("from numba import njit\n\ndef make_bsa_gemm(rr, cc):\n"
                 "    @njit\n    def k(q, kk, v, rp, ci, bs):\n        return q.sum() + rr + cc\n    return k\n")
    import numpy as np

    run = ceilings.load_reference(str(f))
    assert run(np.ones(3), None, None, None, None, 1) == 23.0
