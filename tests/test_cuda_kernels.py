"""The Numba CUDA kernels (sparse_core.kernels.cuda) against the float64 oracle.

Without a GPU (CI, this machine) every kernel runs in Numba's CUDA simulator, in a subprocess
started with ``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before numba is imported, and
this process imports numba without it), on tiny sizes: forward output and log-sum-exp, and the
gradients dQ, dK, dV against torch autograd through the dense oracle. The simulator runs every
thread of a block as a Python thread, so it checks indexing, masking and the online softmax, not
races or speed. The tests marked ``gpu`` need a CUDA GPU and skip, with the reason, without one.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _cuda_sim_runner import make_pattern
from sparse_core.kernels import cuda as K
from sparse_core.attention.reference import attention

HERE = Path(__file__).resolve().parent
ATOL = 2e-5  # float32 kernels vs the float64 oracle (inputs rounded to float32 first)

# name -> spec; lengths are not multiples of the block size; "tiles" forces small tiles so that a
# query block is split over several thread blocks (splits > 1) and a key block is visited in
# several column steps (steps > 1).
CASES = {
    "window": dict(kind="window", window=5, n_q=21, n_k=21, block=8, heads=2, layout_heads=2, batch=2, d=8, d_v=8,
                   torch=True),
    "masked-rows": dict(kind="masked-rows", tokens=[3, 4, 30], n_q=37, n_k=37, block=16, heads=2, layout_heads=2,
                        batch=1, d=8, d_v=5, tiles=[8, 8]),
    "random": dict(kind="random", density=0.2, seed=2, n_q=30, n_k=30, block=8, heads=2, layout_heads=2, batch=2,
                   d=8, d_v=8),
    "bigbird": dict(kind="bigbird", n_q=40, n_k=40, block=8, heads=2, layout_heads=2, batch=1, d=8, d_v=8),
    "causal-d12": dict(kind="causal", n_q=20, n_k=20, block=8, heads=2, layout_heads=2, batch=1, d=12, d_v=8),
    "rect-shared": dict(kind="window-global", n_q=19, n_k=27, block=8, heads=2, layout_heads=1, batch=1, d=8, d_v=6),
    "dense-block12": dict(kind="dense", n_q=26, n_k=26, block=12, heads=1, layout_heads=1, batch=1, d=8, d_v=8),
    "grouped-query": dict(kind="window", window=4, n_q=19, n_k=19, block=8, heads=4, kv_heads=2, layout_heads=1,
                          batch=1, d=8, d_v=8, torch=True),
}


def _inputs(i, spec):
    rng = np.random.default_rng(100 + i)
    lead = (spec["batch"], spec["heads"])
    lead_kv = (spec["batch"], spec.get("kv_heads", spec["heads"]))  # fewer: grouped-query heads
    q = rng.standard_normal(lead + (spec["n_q"], spec["d"])).astype(np.float32)
    k = rng.standard_normal(lead_kv + (spec["n_k"], spec["d"])).astype(np.float32)
    v = rng.standard_normal(lead_kv + (spec["n_k"], spec["d_v"])).astype(np.float32)
    dout = rng.standard_normal(lead + (spec["n_q"], spec["d_v"])).astype(np.float32)
    return q, k, v, dout


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Inputs and the simulator's outputs of every case (one subprocess for all of them)."""
    tmp = tmp_path_factory.mktemp("cudasim")
    arrays, inputs = {}, {}
    for i, (name, spec) in enumerate(CASES.items()):
        inputs[name] = _inputs(i, spec)
        for key, x in zip(("q", "k", "v", "dout"), inputs[name]):
            arrays[f"{name}/{key}"] = x
        arrays[f"{name}/spec"] = np.array(json.dumps(spec))
    np.savez(tmp / "in.npz", **arrays)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, str(HERE / "_cuda_sim_runner.py"), str(tmp / "in.npz"),
                           str(tmp / "out.npz")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"simulator run failed:\n{proc.stdout}\n{proc.stderr}"
    out = np.load(tmp / "out.npz")
    return inputs, {name: out[name] for name in out.files}


def _oracle(spec, q, k, v, dout):
    pattern = make_pattern(spec)
    mask = torch.from_numpy(pattern.to_dense(spec["n_q"], spec["n_k"], spec["layout_heads"]))
    if spec["layout_heads"] == 1:
        mask = mask[0]
    qt, kt, vt = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    group = spec["heads"] // spec.get("kv_heads", spec["heads"])
    out, lse = attention(qt, kt.repeat_interleave(group, 1), vt.repeat_interleave(group, 1), mask=mask,
                         return_lse=True)
    (out * torch.from_numpy(dout).double()).sum().backward()
    allowed = np.broadcast_to(mask.numpy().any(-1), out.shape[:-1])
    return {"out": out.detach().numpy(), "lse": lse.detach().numpy(), "dq": qt.grad.numpy(),
            "dk": kt.grad.numpy(), "dv": vt.grad.numpy()}, allowed


def test_the_simulator_ran_the_kernels(sim):
    _, res = sim
    assert bool(res["simulator"]), "the subprocess did not run in the CUDA simulator"
    # the forced small tiles exercise split query blocks and several column steps per key block
    assert (res["masked-rows/splits_steps"] == 2).all()
    assert (res["window/splits_steps"] == 1).all()


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_oracle(sim, name):
    inputs, res = sim
    spec = CASES[name]
    ref, allowed = _oracle(spec, *inputs[name])
    out, lse = res[f"{name}/out"], res[f"{name}/lse"]
    assert out.dtype == np.float32 and out.shape == ref["out"].shape and lse.shape == ref["lse"].shape
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref["out"], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(np.isneginf(lse), ~allowed)
    np.testing.assert_allclose(lse[allowed], ref["lse"][allowed], atol=ATOL, rtol=1e-6)
    assert (out[~allowed] == 0).all()


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_autograd_through_the_oracle(sim, name):
    inputs, res = sim
    spec = CASES[name]
    ref, allowed = _oracle(spec, *inputs[name])
    for g in ("dq", "dk", "dv"):
        got = res[f"{name}/{g}"]
        assert got.shape == ref[g].shape and np.isfinite(got).all(), g
        np.testing.assert_allclose(got, ref[g], atol=ATOL, rtol=1e-5, err_msg=f"{name} {g}")
    assert (res[f"{name}/dq"][~allowed] == 0).all()  # fully masked rows get zero gradient


def test_the_torch_autograd_function_of_the_cuda_path(sim):
    """block_sparse_attention's CUDA autograd Function (reshapes, saved tensors, backward), run in
    the simulator on numpy views of CPU tensors: same results as the kernels on numpy arrays."""
    inputs, res = sim
    for case in ("window", "grouped-query"):
        ref, _ = _oracle(CASES[case], *inputs[case])
        for name in ("out", "lse", "dq", "dk", "dv"):
            got = res[f"{case}/torch_{name}"]
            assert got.shape == ref[name].shape, name
            np.testing.assert_allclose(got, res[f"{case}/{name}"], atol=1e-6, rtol=0, err_msg=f"{case} {name}")
        for name in ("dq", "dk", "dv"):
            np.testing.assert_allclose(res[f"{case}/torch_{name}"], ref[name], atol=ATOL, rtol=1e-5)


def test_fully_masked_rows_are_present():
    spec = CASES["masked-rows"]
    mask = make_pattern(spec).to_dense(spec["n_q"], spec["n_k"], 2)
    assert (~mask.any(-1)).sum() > 10  # the case really has rows with no allowed key


@pytest.mark.parametrize("block", [8, 16, 32, 64, 128])
@pytest.mark.parametrize("d,d_v", [(8, 8), (32, 32), (64, 64), (128, 128), (96, 40)])
def test_tile_config_fits_and_covers_the_block(block, d, d_v):
    for kind in ("forward", "dkdv", "dq"):
        cfg = K.tile_config(kind, block, d, d_v)
        assert cfg.shared_bytes <= K.SHARED_LIMIT
        assert cfg.threads % 32 == 0 and cfg.BM == cfg.TY * cfg.TM and cfg.BN == K.TX * cfg.TN
        assert cfg.splits * cfg.BM >= block > (cfg.splits - 1) * cfg.BM
        assert cfg.steps * cfg.BN >= block > (cfg.steps - 1) * cfg.BN
    assert K.tile_config("forward", 128, 64, 64).BM == 64  # the performance case: 64 rows, 4x4 per thread


def test_tile_config_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="too large"):
        K.tile_config("forward", 64, 4096, 64)
    with pytest.raises(ValueError, match="kind"):
        K.tile_config("sideways", 64, 64, 64)


def test_kernels_type_and_lower_for_the_real_cuda_target():
    """What the simulator cannot check (it runs the kernels as Python): Numba's CUDA target types
    every kernel and lowers it to LLVM IR -- steps that need no GPU and no CUDA toolkit -- with
    no float64 arithmetic (a stray Python float would silently make the inner loops float64)."""
    import re

    from numba import config, types

    if config.ENABLE_CUDASIM:
        pytest.skip("NUMBA_ENABLE_CUDASIM is set in this process: the kernels are simulator objects")
    try:
        from numba.cuda.compiler import compile_cuda
    except ImportError as e:  # pragma: no cover - depends on the numba-cuda version
        pytest.skip(f"numba.cuda.compiler.compile_cuda is not available: {e}")
    A3, A2 = types.Array(types.float32, 3, "C"), types.Array(types.float32, 2, "C")
    I2, I1 = types.Array(types.int64, 2, "C"), types.Array(types.int64, 1, "C")
    U3, f32, i64 = types.Array(types.uint8, 3, "C"), types.float32, types.int64
    sigs = {"forward": (A3, A3, A3, f32, i64, i64, I2, I1, I1, U3, A3, A2), "delta": (A3, A3, A2, A2, A2),
            "dkdv": (A3, A3, A3, A3, A2, A2, f32, f32, i64, i64, I2, I1, I1, U3, A3, A3),
            "dq": (A3, A3, A3, A3, A2, A2, f32, f32, i64, i64, I2, I1, I1, U3, A3)}
    ks = K.kernels(128, 64, 64)
    for name, sig in sigs.items():
        ir = compile_cuda(ks[name].py_func, types.void, sig, cc=(9, 0)).library.get_llvm_str()
        assert "fmul float" in ir or "fmul contract float" in ir, name
        assert not re.findall(r"\b(fadd|fmul|fsub|fdiv)\b[^\n]*\bdouble\b", ir), f"{name} has float64 arithmetic"


# --------------------------------------------------------------------------- real GPU
_GPU_OK, _GPU_REASON = K.available()
_HAS_GPU = torch.cuda.is_available() and _GPU_OK
NO_GPU_REASON = ("needs a CUDA GPU: torch.cuda.is_available() is False" if not torch.cuda.is_available()
                 else f"needs numba.cuda on the GPU: {_GPU_REASON}")
gpu = pytest.mark.skipif(not _HAS_GPU, reason=NO_GPU_REASON)


@pytest.mark.skipif(_HAS_GPU, reason="this machine has a GPU")
def test_without_a_gpu_cuda_paths_say_why():
    from sparse_core.attention.ops import require_cuda_backend

    ok, reason = K.available()
    assert not ok and "GPU" in reason
    with pytest.raises(RuntimeError, match="CUDA kernels cannot run"):
        require_cuda_backend("cuda:0")
    assert NO_GPU_REASON.startswith("needs")


@gpu
@pytest.mark.parametrize("block", [64, 128])
def test_gpu_real_sizes_forward_and_backward(block):
    from sparse_core import patterns as P
    from sparse_core.attention.ops import block_sparse_attention

    n, H, d = 1000, 4, 64
    for pattern in (P.sliding_window(200, causal=True), P.bigbird(n, block, num_random_blocks=2, n_heads=H)):
        lay = pattern.to_layout(n, n, block, H)
        g = torch.Generator().manual_seed(block)
        q, k, v = (torch.randn(2, H, n, d, generator=g).cuda().requires_grad_() for _ in range(3))
        out, lse = block_sparse_attention(q, k, v, lay, return_lse=True)
        grad = torch.randn(out.shape, generator=g).cuda()
        (out * grad).sum().backward()
        q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
        mask = torch.from_numpy(pattern.to_dense(n, n, H)).cuda()
        ref, ref_lse = attention(q2, k2, v2, mask=mask, return_lse=True)
        (ref * grad.double()).sum().backward()
        torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)
        fin = torch.isfinite(ref_lse)
        torch.testing.assert_close(lse.double()[fin], ref_lse[fin], atol=1e-4, rtol=0)
        for a, b in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
            torch.testing.assert_close(a.double(), b, atol=1e-3, rtol=1e-3)


@gpu
def test_gpu_rejects_non_float32():
    from sparse_core import patterns as P
    from sparse_core.attention.ops import block_sparse_attention

    q = torch.randn(1, 1, 64, 16, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="float32"):
        block_sparse_attention(q, q, q, P.causal().to_layout(64, 64, 16, 1))


def test_inputs_on_other_devices_are_refused_by_name():
    from sparse_core import patterns as P
    from sparse_core.attention.ops import block_sparse_attention

    lay = P.causal().to_layout(16, 16, 8, 1)
    q = torch.zeros(1, 16, 8)
    with pytest.raises(ValueError, match="`k` is on meta but `q` is on cpu"):
        block_sparse_attention(q, q.to("meta"), q, lay)
    m = q.to("meta")
    with pytest.raises(ValueError, match="`q` is on meta; .* CPU or on CUDA devices"):
        block_sparse_attention(m, m, m, lay)


@gpu
@pytest.mark.parametrize("kv_heads", [2, 1])
def test_gpu_grouped_query_heads_match_the_expanded_oracle(kv_heads):
    """Query head h reads key/value head h // (H / kv_heads) in place; gradients of each shared
    key/value head are the sums over its group."""
    from sparse_core import patterns as P
    from sparse_core.attention.ops import block_sparse_attention

    n, H, d, block = 777, 4, 64, 64
    pattern = P.sliding_window(150, causal=True)
    lay = pattern.to_layout(n, n, block, 1)
    g = torch.Generator().manual_seed(kv_heads)
    q = torch.randn(2, H, n, d, generator=g).cuda().requires_grad_()
    k, v = (torch.randn(2, kv_heads, n, d, generator=g).cuda().requires_grad_() for _ in range(2))
    out = block_sparse_attention(q, k, v, lay)
    grad = torch.randn(out.shape, generator=g).cuda()
    (out * grad).sum().backward()
    q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
    group = H // kv_heads
    mask = torch.from_numpy(pattern.to_dense(n, n, 1)).cuda()
    ref = attention(q2, k2.repeat_interleave(group, 1), v2.repeat_interleave(group, 1), mask=mask)
    (ref * grad.double()).sum().backward()
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)
    for a, b in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        torch.testing.assert_close(a.double(), b, atol=1e-3, rtol=1e-3)


@gpu
def test_gpu_gpt_neox_local_training_step_matches_the_cpu_one():
    """One forward/backward of a small GPT-NeoX with local attention: the CUDA kernels against the
    CPU kernels, same weights and batch (loss and every gradient)."""
    from sparse_core.models.gpt_neox import GPTNeoX, GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=97, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256,
                        max_position_embeddings=300, attention="local", window=40, block_size=64)
    torch.manual_seed(0)
    cpu = GPTNeoX(cfg)
    gpu_model = GPTNeoX(cfg).cuda()
    gpu_model.load_state_dict(cpu.state_dict())
    x = torch.randint(0, 97, (2, 257), generator=torch.Generator().manual_seed(1))
    losses = []
    for model, dev in ((cpu, "cpu"), (gpu_model, "cuda")):
        logits = model(x.to(dev))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97).float(), x[:, 1:].reshape(-1).to(dev))
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-4, losses
    for (name, a), b in zip(cpu.named_parameters(), gpu_model.parameters()):
        torch.testing.assert_close(b.grad.cpu(), a.grad, atol=2e-4, rtol=2e-3, msg=lambda m, n=name: f"{n}: {m}")
