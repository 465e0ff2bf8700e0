"""The methods benchmark (``python -m sparse_core bench methods``): its bookkeeping (skips, fits, the
three files) with stand-in timings and memory, one real tiny run through the command line, and
clear errors for bad arguments. No timing is asserted."""
import json

import pytest
import torch

from sparse_core.approx.methods import COMPLEXITY, METHODS
from sparse_core.bench import methods as bench
from sparse_core.cli import main

NS = [256, 512, 1024, 2048, 4096, 8192]
ROW_FIELDS = {"method", "n", "causal", "fwd_ms", "fwdbwd_ms", "peak_mib", "skipped"}


def _stand_ins():
    """Known laws: dense a*n^2 (time), local b*n, synthesizer memory (n/256)^2 MiB; topk too slow,
    routing failing at 1024, nsa's memory subprocess killed at 512, flex forward only."""
    a, b = 1e-9, 1e-6
    calls = []

    def measure(n, methods, rounds, d_model, heads):
        calls.append((n, tuple(methods), rounds))
        out = {}
        for m in methods:
            if m == "dense":
                f, fb = a * n**2, 3 * a * n**2
            elif m == "topk":
                f, fb = 10.0, 30.0  # seconds per call: the longer lengths are skipped
            elif m == "routing" and n >= 1024:
                out[m] = {"fwd": None, "fwdbwd": None, "error": "RuntimeError: boom"}
                continue
            else:
                f, fb = b * n, 2 * b * n
            out[m] = {"fwd": [f * (1 + 0.01 * i) for i in range(rounds)],
                      "fwdbwd": None if m == "flex" else [fb] * rounds, "error": None}
        return out

    def memory(method, n, d_model, heads, timeout_s):
        if method == "nsa" and n >= 512:
            return {"peak_bytes": None, "error": "killed by signal 9 (out of memory?)",
                    "peak_reset": None, "of": None}
        mib = (n / 256) ** 2 if method == "synthesizer" else n / 256
        return {"peak_bytes": int(mib * 2**20), "error": None, "peak_reset": True, "peak_source": "VmHWM",
                "of": "forward" if method == "flex" else "forward+backward"}

    return measure, memory, calls


def test_bookkeeping_fits_skips_and_files(tmp_path):
    measure, memory, calls = _stand_ins()
    methods = ["dense", "local", "topk", "routing", "nsa", "linformer", "synthesizer", "flex"]
    out = tmp_path / "m"
    rep = bench.run_methods_bench(NS, methods, 3, 64, 2, max_gib=0.5, max_seconds=20, out=out, log=None,
                                  measure=measure, memory=memory)
    data = json.loads((out / "methods.json").read_text())
    assert data["command"] == ("python -m sparse_core bench methods --n 256 512 1024 2048 4096 8192 --rounds 3 "
                               f"--d-model 64 --heads 2 --methods {' '.join(methods)} --max-gib 0.5 --max-seconds 20 "
                               f"--threads {torch.get_num_threads()} --out {out}")
    assert {"command", "date", "machine", "settings", "rows", "fits", "complexity"} <= set(data)
    assert data["settings"]["methods"] == methods and data["settings"]["n"] == NS
    assert data["complexity"]["dense"] == COMPLEXITY["dense"] and data["complexity"]["flex"]["time"] == COMPLEXITY["local"]["time"]
    rows = {(r["method"], r["n"]): r for r in data["rows"]}
    assert len(data["rows"]) == len(methods) * len(NS) and all(ROW_FIELDS <= set(r) for r in data["rows"])
    # every length measured the methods still running together (interleaved), once
    assert [c[0] for c in calls] == NS and calls[0][1] == tuple(methods) and calls[0][2] == 3
    # exponents: n >= 2048 has 3 points here, so the fit uses them; exact laws give exact slopes
    fd, fl = data["fits"]["dense"], data["fits"]["local"]
    assert fd["fwd_exponent"] == pytest.approx(2, abs=1e-9) and fd["fwdbwd_exponent"] == pytest.approx(2, abs=1e-9)
    assert fl["fwd_exponent"] == pytest.approx(1, abs=1e-9) and fl["fwdbwd_exponent"] == pytest.approx(1, abs=1e-9)
    assert fd["memory_exponent"] == pytest.approx(1, abs=1e-9)
    assert [p[0] for p in fd["points"]["fwd"]] == [2048, 4096, 8192]
    assert fd["points"]["fwd"][0][1] == pytest.approx(1e3 * 1e-9 * 2048**2 * 1.01)  # ms, median of the rounds
    # synthesizer: memory (n/256)^2 MiB; 8192 would be 1 GiB > 0.5 GiB, predicted from 4096 -> skipped
    syn = data["fits"]["synthesizer"]
    assert rows["synthesizer", 4096]["peak_mib"] == pytest.approx(256)
    assert rows["synthesizer", 8192]["skipped"].startswith("not run: predicted peak 1 GiB (more than --max-gib 0.5)")
    assert rows["synthesizer", 8192]["predicted_peak_mib"] == pytest.approx(1024)
    assert [p[0] for p in syn["points"]["memory"]] == [256, 512, 1024, 2048, 4096]  # < 3 points at n >= 2048: all
    assert syn["memory_exponent"] == pytest.approx(2, abs=1e-9)
    # topk: 30 s per call at 256 > --max-seconds 20
    assert rows["topk", 256]["fwdbwd_ms"] == pytest.approx(30000) and rows["topk", 256]["skipped"] is None
    assert "took 30 s per call (more than --max-seconds 20)" in rows["topk", 512]["skipped"]
    assert rows["topk", 1024]["skipped"] == "not run: the shorter length n=512 was skipped or failed"
    assert data["fits"]["topk"]["fwd_exponent"] is None
    # routing fails at 1024; nsa's memory subprocess at 512: recorded, never silent, longer lengths not run
    assert rows["routing", 1024]["skipped"] == "failed: RuntimeError: boom"
    assert rows["routing", 2048]["skipped"].startswith("not run: the shorter length n=1024")
    assert rows["nsa", 512]["skipped"] == "failed in the memory subprocess: killed by signal 9 (out of memory?)"
    assert rows["nsa", 512]["fwd_ms"] is None and rows["nsa", 256]["skipped"] is None
    assert all("nsa" not in c[1] for c in calls[1:])
    # flex: forward only; linformer: not causal
    assert rows["flex", 1024]["fwd_ms"] > 0 and rows["flex", 1024]["fwdbwd_ms"] is None and rows["flex", 1024]["note"]
    assert data["fits"]["flex"]["fwdbwd_exponent"] is None and data["fits"]["flex"]["fwd_exponent"] == pytest.approx(1)
    assert rows["linformer", 256]["causal"] is False and rows["dense", 256]["causal"] is True
    text = (out / "README.md").read_text()
    assert data["command"] in text and "| method | causal | predicted time | measured fwd exponent |" in text
    assert "| dense | yes | n^2 | 2.00 | 2.00 | n^2 (n with flash-style kernels) | 1.00 |" in text
    assert (out / "methods.png").stat().st_size > 0
    assert rep["rows"] == data["rows"]


def test_fit_and_prediction_helpers():
    slope, used = bench.fit_exponent([(512, 1.0), (1024, None), (2048, 4.0)])
    assert slope == pytest.approx(1.0) and used == [(512, 1.0), (2048, 4.0)]
    assert bench.fit_exponent([(512, 1.0)]) == (None, [(512, 1.0)])
    exps = {m: bench.predicted_exponent(COMPLEXITY[m]["time"]) for m in METHODS}
    assert exps["dense"] == exps["nsa"] == exps["routing"] == exps["topk"] == exps["synthesizer"] == 2
    assert exps["strided"] == exps["fixed"] == 1.5 and exps["local"] == exps["linformer"] == exps["performer"] == 1
    hist = [{"n": 1024, "peak_mib": 10.0, "skipped": None, "fwd_ms": 1.0, "fwdbwd_ms": 2.0},
            {"n": 2048, "peak_mib": 20.0, "skipped": None, "fwd_ms": 1.0, "fwdbwd_ms": 2.0}]
    assert bench.predict_peak_mib(hist, 4096, 2.0) == pytest.approx(80)   # the predicted exponent (2) > slope 1
    assert bench.predict_peak_mib(hist, 4096, 1.0) == pytest.approx(40)
    assert bench.skip_reason([], 512, 8, 20, 2.0) == (None, None)
    assert bench.estimate_seconds([512, 1024], ["dense", "flex"], 3) > bench.FLEX_COMPILE_S


@pytest.mark.timeout(120)
def test_a_real_tiny_run_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["bench", "methods", "--n", "64", "128", "--methods", "dense", "linformer", "--rounds", "1",
                 "--d-model", "32", "--heads", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("bench methods: 2 methods x 2 lengths") and "expected duration" in printed
    assert "[4/4] n=   128 linformer" in printed
    data = json.loads((out / "methods.json").read_text())
    assert data["command"].startswith("python -m sparse_core bench methods --n 64 128 --rounds 1 --d-model 32")
    assert [(r["method"], r["n"]) for r in data["rows"]] == [("dense", 64), ("dense", 128), ("linformer", 64),
                                                              ("linformer", 128)]
    for r in data["rows"]:
        assert r["skipped"] is None, r
        assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and r["peak_mib"] >= 0 and r["memory_of"] == "forward+backward"
        assert r["causal"] is (r["method"] == "dense")
    assert set(data["fits"]) == {"dense", "linformer"} and (out / "methods.png").exists() and (out / "README.md").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--methods", "dense", "lokal"], "--methods: unknown method 'lokal'"),
    (["--heads", "3"], "--heads: must divide --d-model 256, got 3"),
    (["--quick", "--out", "results/methods"], "--out: --quick writes under results/tmp/"),
])
def test_bad_arguments_give_one_clear_line(argv, needle, capsys, tmp_path):
    assert main(["bench", "methods", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--n", "0"], "argument --n: expected a positive whole number, got '0'"),
    (["--max-gib", "-1"], "argument --max-gib: expected a positive number, got '-1'"),
    (["--rounds", "x"], "argument --rounds: expected a whole number, got 'x'"),
])
def test_bad_values_are_refused_by_the_parser(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "methods", *argv])
    assert e.value.code == 2 and needle in capsys.readouterr().err.strip().splitlines()[-1]


def test_quick_defaults_go_to_the_tmp_folder(monkeypatch):
    seen = {}

    def fake(ns, methods, rounds, d_model, heads, max_gib, max_seconds, out, log, quick):
        seen.update(ns=ns, methods=methods, rounds=rounds, out=out, quick=quick)
        return {"rows": [], "wall_s": 0.0}

    monkeypatch.setattr(bench, "run_methods_bench", fake)
    assert main(["bench", "methods", "--quick", "--quiet"]) == 0
    assert seen == {"ns": [256, 512], "methods": None, "rounds": 1, "out": "results/tmp/methods_quick", "quick": True}
    assert main(["bench", "methods", "--quiet", "--methods", "dense", "dense", "flex"]) == 0
    assert seen["ns"] == [512, 1024, 2048, 4096, 8192, 16384] and seen["rounds"] == 3 and seen["out"] == "results/methods"
    assert seen["methods"] == ["dense", "flex"]
