"""The layout benchmark on tiny sizes: the JSON it writes, the plot, the README and the command line.

No timing is asserted: only that every number is there, has the right type and is consistent
with the layouts themselves.
"""
import json

import pytest

from sparse_core import patterns as P
from sparse_core.bench import TARGETS
from sparse_core.bench.layouts import pattern_cases, run_layouts
from sparse_core.cli.main import build_parser, main

NAMES = ["sliding_window_causal", "longformer", "bigbird", "strided", "fixed", "axial", "dense", "random"]
OK_FIELDS = {"build_s_median": float, "build_s_iqr": list, "build_s_samples": list, "repeats": int,
             "peak_bytes": int, "layout_bytes": int, "dense_bool_bytes": int, "nnz": int, "n_full": int,
             "n_partial": int, "n_blocks": int, "block_density": float, "construct_s": float}


def test_run_writes_json_png_and_readme(tmp_path):
    report = run_layouts(ns=[512, 256], block_size=64, repeats=2, out=tmp_path, random_max_n=256, log=None)
    data = json.loads((tmp_path / "layouts.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert data["benchmark"] == "layouts"
    assert data["command"].startswith("python -m sparse_core bench layouts --n 256 512 --block-size 64 --repeats 2")
    assert f"--out {tmp_path}" in data["command"] and "--random-max-n 256" in data["command"]
    assert data["date"][:2] == "20"
    for key in ("platform", "cpu_count", "numpy", "torch", "python"):
        assert data["machine"][key], key
    assert data["settings"]["ns"] == [256, 512] and data["settings"]["block_size"] == 64

    rows = data["results"]
    assert [r["pattern"] for r in rows[::2]] == NAMES and len(rows) == 2 * len(NAMES)
    for r in rows:
        assert r["n"] in (256, 512) and r["block_size"] == 64 and r["n_heads"] == 1
        if r["pattern"] == "random" and r["n"] == 512:
            assert r["status"] == "skipped" and "random-max-n" in r["reason"]
            assert r["estimate_s"] > 0 and "n^2" in r["estimate_basis"]
            continue
        if r["pattern"] == "bigbird" and r["n"] == 256:  # 4 blocks of 64 have no room for 3 random blocks
            assert r["status"] == "skipped" and "`num_random_blocks`=3 cannot be placed" in r["reason"]
            continue
        assert r["status"] == "ok", r
        for key, kind in OK_FIELDS.items():
            assert isinstance(r[key], kind), (r["pattern"], key, r[key])
        assert r["repeats"] == 2 and len(r["build_s_samples"]) == 2
        assert r["dense_bool_bytes"] == r["n"] ** 2
        assert 0 < r["nnz"] == r["n_full"] + r["n_partial"] <= r["n_blocks"] == (r["n"] // 64) ** 2
        assert 0 < r["density"] <= r["block_density"] <= 1
        assert r["peak_bytes"] >= r["layout_bytes"] > 0
    dense = next(r for r in rows if r["pattern"] == "dense" and r["n"] == 512)
    lay = P.dense().to_layout(512, 512, 64)
    assert dense["nnz"] == lay.nnz == 64 and dense["density"] == 1.0
    assert dense["layout_bytes"] == lay.indptr.nbytes + lay.indices.nbytes + lay.full.nbytes
    assert set(data["fits"]) == set(NAMES) - {"random", "bigbird"}  # a single measured n each

    png = (tmp_path / "layouts.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    readme = (tmp_path / "README.md").read_text()
    assert data["command"] in readme and "| random | 512 | not run" in readme


def test_density_is_skipped_above_the_limit_and_nothing_written_without_out(tmp_path):
    report = run_layouts(ns=[256], block_size=64, repeats=1, out=None, density_max_n=128,
                         patterns=["dense", "strided"], log=None)
    assert [r["pattern"] for r in report["results"]] == ["strided", "dense"]
    assert all(r["density"] is None for r in report["results"])
    assert "--density-max-n 128" in report["command"] and "--pattern strided --pattern dense" in report["command"]
    assert not list(tmp_path.iterdir())


def test_pattern_cases_build_valid_patterns():
    cases = pattern_cases(64)
    assert [c[0] for c in cases] == NAMES
    for name, params, factory in cases:
        p = factory(4096)
        assert isinstance(p, P.Pattern) and params
        p.to_layout(4096, 4096, 64)  # defined at this length (axial grid, bigbird seq_len)


def test_command_line_bench_layouts(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["bench", "layouts", "--n", "128", "256", "--block-size", "64", "--repeats", "1", "--out", str(out),
               "--pattern", "dense", "--pattern", "random", "--random-max-n", "128"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "random" in printed
    data = json.loads((out / "layouts.json").read_text())
    assert {r["pattern"] for r in data["results"]} == {"dense", "random"}
    assert (out / "layouts.png").exists() and (out / "README.md").exists()
    assert main(["bench", "layouts", "--n", "128", "--out", str(out), "--pattern", "nope", "--quiet"]) == 2


def test_bench_is_a_target_group_and_other_commands_are_intact():
    parser = build_parser()
    assert "layouts" in TARGETS
    args = parser.parse_args(["bench", "layouts"])
    assert args.command == "bench" and args.target == "layouts" and args.n == [1024, 4096, 16384, 65536]
    assert args.block_size == 128 and args.repeats == 5 and args.out == "results/layouts"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench"])  # a target is required
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "layouts", "--n", "0"])
    assert parser.parse_args(["cost", "--n", "8"]).n == [8]
    assert parser.parse_args(["info"]).command == "info"
    assert parser.parse_args(["grade", "--chapter", "1"]).chapter == [1]


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="at least one sequence length"):
        run_layouts(ns=[], out=None, log=None)
    with pytest.raises(ValueError, match="unknown pattern name"):
        run_layouts(ns=[128], out=None, patterns=["nope"], log=None)
    with pytest.raises(ValueError, match="`repeats` must be"):
        run_layouts(ns=[128], repeats=0, out=None, log=None)
