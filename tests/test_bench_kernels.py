"""The kernel benchmark runs end to end on tiny sizes and writes its files (no timing assertions)."""
import json

from sparse_core.cli import main


def test_bench_kernels_writes_json_plot_and_readme(tmp_path, capsys):
    out = tmp_path / "k"
    assert main(["bench", "kernels", "--n", "256", "--density-n", "256", "--block-size", "32", "--heads", "2",
                 "--d", "16", "--rounds", "1", "--no-flex", "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "kernels.json").read_text())
    assert data["command"].startswith("python -m sparse_core bench kernels --n 256")
    assert len(data["length_sweep"]) == 1 and len(data["density_sweep"]) == 4
    row = data["length_sweep"][0]
    for key in ("block_density", "ms", "matmul_peak_gflops", "ours_fwd_fraction_of_peak", "speedup_fwd_vs_sdpa",
                "speedup_fwdbwd_vs_sdpa", "ours_fwd_host_peak_bytes", "qkv_bytes", "tile_products_fraction_of_peak"):
        assert key in row
    assert set(row["ms"]) == {"mm", "tiles", "sdpa_fwd", "ours_fwd", "sdpa_fwdbwd", "ours_fwdbwd"}
    assert row["speedup_fwd_vs_flex"] is None
    assert (out / "kernels.png").stat().st_size > 0 and "| sweep |" in (out / "README.md").read_text()
    readme = (out / "README.md").read_text()
    assert "## Targets" in readme and "compiled FlexAttention (forward): n/a (not measured)" in readme
