"""--compile on a GPU, where it runs as CUDA graphs (mode reduce-overhead): each file's own main() makes a few dozen
compiled updates on CUDA with every CUDA-graph skip turned into an error, then no graph was skipped, nothing
recompiled after the warm-up, and the losses and final weights are eager's to float32 rounding; the compiled acting
policy draws new noise at every replay. The whole module skips on a machine without CUDA (test_compile.py checks there
what a CPU can see of the same hazards).

    python -m pytest -q tests/test_cuda.py      # the README's GPU check
"""

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from conftest import load_algo
from test_compile import UPDATES, compile_checking_act, flags_of, train
from torch._dynamo.utils import counters

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --compile's CUDA-graph path runs "
                                "only there (test_compile.py checks on a CPU what a CPU can see of it)")


def cuda_flags(module, algo: str) -> list[str]:
    """test_compile's run on CUDA, with full float32 matmuls (the flow files default to TF32 there)."""
    return [flag for flag in flags_of(module, algo) if flag != "--no-cuda"] + ["--matmul-precision", "highest"]


def test_compiled_updates_run_as_cuda_graphs_and_match_eager(algo, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    counters.clear()
    flags = cuda_flags(module, algo)
    eager = train(module, [*flags, "--run-name", "eager"])
    with torch._inductor.config.patch({"triton.cudagraph_or_error": True}):  # a CUDA-graph skip raises
        compiled = train(module, [*flags, "--run-name", "compiled", "--compile"], fail_on_recompile=True)
    assert counters["inductor"]["cudagraph_skips"] == 0
    assert eager.keys() == compiled.keys() and len(eager) >= 4, (eager.keys(), compiled.keys())
    for step in eager:
        for name, value in eager[step].items():
            assert compiled[step][name] == pytest.approx(value, rel=1e-3, abs=1e-4), (step, name)
    saved = {run: torch.load(tmp_path / "runs" / run / f"{algo}.pt", weights_only=True) for run in ("eager", "compiled")}
    for network in saved["eager"].keys() - {"args"}:
        for name, tensor in saved["eager"][network].items():
            torch.testing.assert_close(saved["compiled"][network][name], tensor, rtol=1e-3, atol=1e-4, msg=f"{network}.{name}")


def test_compiled_act_draws_new_noise_at_every_replay(algo, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    draws = []
    monkeypatch.setattr(module, "compile_function", compile_checking_act(module.compile_function, draws))
    with torch._inductor.config.patch({"triton.cudagraph_or_error": True}):
        train(module, [*cuda_flags(module, algo), "--run-name", "act", "--compile"], fallback_random=False)
    assert len(draws) >= UPDATES and all(draws), draws
