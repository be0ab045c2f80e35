"""--compile in each file's own copy of the skeleton: the compiled update steps and acting policy compute what the eager
ones do, nothing recompiles once the first update iterations have compiled them (through evaluations, the temperature
or noise schedule and FPMD's lr decay), a compiled run checkpoints and resumes, and its saved model loads without
--compile. A machine without what compile needs gets one line.

What CUDA graphs (--compile on a GPU) need, checked where a CPU can see it: no backward adds into a .grad that an
earlier backward left (gradient hooks), no compiled graph changes a tensor in place that is not a static address
(parameters, buffers, tensors marked static: AOTAutograd's metadata of each graph, the same that decides CUDA-graph
skips), the graph breaks are the documented ones, and the compiled acting policy draws new noise at every call.
tests/test_cuda.py runs the same files under CUDA graphs where a GPU is."""

import collections
import functools
import os
import signal

import pytest
import torch
import torch._dynamo
import torch._guards
import torch._inductor.config
import tyro
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._functorch.aot_autograd import make_boxed_func
from conftest import TINY_ARGS, load_algo, read_evaluations, run_algo
from test_resume import StopAfterCheckpoint

WARMUP_UPDATES = 4  # by then every compiled function has run once: the actor steps come every 2 iterations
UPDATES = 24
# Every schedule of the loop falls inside those 24 updates: evaluations every 6 iterations, a checkpoint at update 12,
# and FPMD's lr decay over iterations 8-16 and noise-schedule steps every 5.
FPMD_SCHEDULES = ["--lr-decay-start", "8", "--lr-decay-end", "16", "--alpha-update-freq", "5"]


def flags_of(module, algo: str) -> list[str]:
    num_envs = module.Args().num_envs
    learning_starts = 60 * num_envs
    flags = ["--env-id", "Pendulum-v1", "--learning-starts", str(learning_starts), "--total-timesteps",
             str(learning_starts + UPDATES * num_envs), "--eval-freq", str(6 * num_envs), "--eval-episodes", "1",
             "--checkpoint-freq", str(learning_starts + 12 * num_envs), "--batch-size", "16", "--buffer-size", "5000",
             "--no-cuda", "--save-model", *TINY_ARGS[algo]]
    return flags + (FPMD_SCHEDULES if algo.startswith("fpmd") else [])


def train(module, args: list[str], fail_on_recompile: bool = False, save_checkpoint=None, fallback_random: bool = True) -> dict[int, dict[str, float]]:
    """module.main in this process, with compiled code drawing its random numbers through eager's generator (so that
    eager and compiled runs see the same noises) unless not fallback_random; the losses it logged, by global step.
    With fail_on_recompile, a compile after the warm-up updates raises."""
    logged, sampled = {}, []
    original_log_losses, original_sample = module.log_losses, module.ReplayBuffer.sample

    def recording_log_losses(writer, losses, global_step):
        logged[global_step] = {name: value.item() for name, value in losses.items()}
        return original_log_losses(writer, losses, global_step)

    def counting_sample(buffer, batch_size):
        sampled.append(True)
        if fail_on_recompile and len(sampled) == WARMUP_UPDATES + 1:
            torch.compiler.set_stance("fail_on_recompile")
        return original_sample(buffer, batch_size)

    handler, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, torch._inductor.config.patch(fallback_random=fallback_random):
        patch.setattr(module, "log_losses", recording_log_losses)
        patch.setattr(module.ReplayBuffer, "sample", counting_sample)
        if save_checkpoint:
            patch.setattr(module, "save_checkpoint", save_checkpoint)
        torch.set_num_threads(1)
        try:
            module.main(tyro.cli(module.Args, args=args))
        finally:
            torch.compiler.set_stance("default")
            torch.set_num_threads(threads)
            signal.signal(signal.SIGTERM, handler)
    return logged


def test_compiled_updates_match_eager_never_recompile_and_resume(algo, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    flags = flags_of(module, algo)
    eager = train(module, [*flags, "--run-name", "eager"])
    compiled = train(module, [*flags, "--run-name", "compiled", "--compile"], fail_on_recompile=True)
    # the same losses at every logged step (one per evaluation) and the same final weights, up to float32 rounding:
    # compiled kernels sum in another order
    assert eager.keys() == compiled.keys() and len(eager) >= 4, (eager.keys(), compiled.keys())
    for step in eager:
        assert eager[step].keys() == compiled[step].keys()
        for name, value in eager[step].items():
            assert compiled[step][name] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, name)
    saved = {run: torch.load(tmp_path / "runs" / run / f"{algo}.pt", weights_only=True) for run in ("eager", "compiled")}
    assert saved["eager"].keys() == saved["compiled"].keys()  # the functions are compiled, not the modules: same keys
    for network in saved["eager"].keys() - {"args"}:
        for name, tensor in saved["eager"][network].items():
            torch.testing.assert_close(saved["compiled"][network][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{network}.{name}")

    # a compiled run stopped right after its checkpoint, resumed with --compile in a new process, ends on schedule
    save_checkpoint = module.save_checkpoint

    def save_then_stop(path, state):
        save_checkpoint(path, state)
        raise StopAfterCheckpoint

    with pytest.raises(StopAfterCheckpoint):
        train(module, [*flags, "--run-name", "stopped", "--compile"], save_checkpoint=save_then_stop)
    run_dir = tmp_path / "runs" / "stopped"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / f"{algo}.pt").exists()
    resumed = run_algo(algo, tmp_path, *flags, "--run-name", "stopped", "--compile", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = lambda run: [row["global_step"] for row in read_evaluations(tmp_path / "runs" / run)]
    assert steps("stopped") == steps("eager") and not (run_dir / "checkpoint.pt").exists()
    # the model saved under --compile loads, strictly, into the networks of a run without it
    model = torch.load(run_dir / f"{algo}.pt", weights_only=True)
    for name, network in module.make_networks(3, 1, torch.ones(1), module.Args(**model["args"])).items():
        network.load_state_dict(model[name])


# The graph breaks of each file under --compile: one at each apply_gradient call in a compiled function (the backward
# and the optimizer steps run eagerly), as docs/algorithms.md lists them.
GRAPH_BREAKS = {"sac_baseline": 3, "td3_baseline": 2, "fpmd_r": 2, "fpmd_m": 2, "mfpo": 4}


class GradientWatchingAdam(torch.optim.Adam):
    """torch.optim.Adam that records each backward adding into a parameter's existing .grad (a gradient hook on each
    parameter it steps, run before the gradient is accumulated). Undefined gradients (None) add nothing."""

    additions: list[tuple[int, ...]] = []

    def __init__(self, params, **kwargs):
        params = list(params)
        super().__init__(params, **kwargs)
        for param in params:
            param.register_hook(functools.partial(self.check_accumulation, param))

    def check_accumulation(self, param: torch.Tensor, grad: torch.Tensor | None) -> None:
        if grad is not None and param.grad is not None:
            self.additions.append(tuple(param.shape))


def find_non_static_mutations(mutations: list[str]):
    """A torch.compile backend that appends to `mutations` the name of every graph input that a compiled graph changes
    in place and that is not a static input, as AOTAutograd sees them; the graphs then run as traced (no inductor)."""

    def backend(graph_module, example_inputs):
        names = [node.name for node in graph_module.graph.find_nodes(op="placeholder")]

        def inspect(graph, _):
            metadata = torch._guards.TracingContext.try_get().fw_metadata
            static = set(metadata.static_input_indices)
            for index, info in enumerate(metadata.input_info):
                if info.mutates_data and index not in static:
                    mutations.append(names[index] if len(names) == len(metadata.input_info) else f"input {index}")
            return make_boxed_func(graph)

        return aot_autograd(fw_compiler=inspect, bw_compiler=lambda graph, _: make_boxed_func(graph), inference_compiler=inspect)(
            graph_module, example_inputs)

    return backend


def test_compiled_updates_hold_under_cuda_graphs(algo, tmp_path, monkeypatch):
    """Each file's own main() under --compile, as on a GPU but on a CPU: no backward adds into an existing .grad,
    no compiled graph mutates a non-static input, the graph breaks are the documented ones."""
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    counters.clear()
    mutations = []
    monkeypatch.setattr(GradientWatchingAdam, "additions", [])
    monkeypatch.setattr(torch.optim, "Adam", GradientWatchingAdam)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=find_non_static_mutations(mutations)))
    train(module, [*flags_of(module, algo), "--run-name", "watched", "--compile"])
    assert not GradientWatchingAdam.additions, (
        f"a backward added into {len(GradientWatchingAdam.additions)} existing .grad tensors: {collections.Counter(GradientWatchingAdam.additions)}")
    assert not mutations, f"compiled graphs change non-static inputs in place: {collections.Counter(mutations)}"
    breaks = counters["graph_break"]
    assert all("apply_gradient" in reason for reason in breaks), list(breaks)
    assert sum(breaks.values()) == GRAPH_BREAKS[algo], dict(breaks)


def compile_checking_act(compile_function, draws: list[bool]):
    """compile_function, but the acting policy it returns runs twice on the same inputs at each call: `draws` gets
    whether the two actions differ everywhere but where both were clipped to the same bound (MFPO clips its sample to
    [-1, 1]; Pendulum's action has one dimension). The run goes on with the first."""

    def compile_and_check(function, device):
        compiled = compile_function(function, device)
        if function.__name__ != "act":
            return compiled

        def act_twice(*inputs):
            first, second = compiled(*inputs), compiled(*inputs)
            draws.append(not ((first == second) & (first.abs() < 1)).any())
            return first

        return act_twice

    return compile_and_check


def test_compiled_act_draws_new_noise_at_every_call(algo, tmp_path, monkeypatch):
    """The acting policy compiled by the file's own compile_function, with inductor's random numbers (not eager's),
    acts anew at every call; the update steps stay eager here, to spare their compile time."""
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    draws, compile_function = [], module.compile_function
    compile_act_only = lambda function, device: compile_function(function, device) if function.__name__ == "act" else function
    monkeypatch.setattr(module, "compile_function", compile_checking_act(compile_act_only, draws))
    train(module, [*flags_of(module, algo), "--run-name", "act", "--compile"], fallback_random=False)
    assert len(draws) >= UPDATES and all(draws), draws


def test_a_machine_without_a_compiler_gets_one_line(algo, tmp_path):
    result = run_algo(algo, tmp_path, "--compile", "--no-cuda", env={**os.environ, "OMP_NUM_THREADS": "1", "CXX": "no-such-compiler"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"{algo}: error: --compile on a CPU needs a C++ compiler: no-such-compiler is not on the PATH (or set CXX to yours)")
    assert not (tmp_path / "runs").exists()


def test_matmul_precision_takes_only_its_two_values(algo, tmp_path):
    result = run_algo(algo, tmp_path, "--matmul-precision", "medium", "--no-cuda")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "--matmul-precision" in result.stderr
    assert not (tmp_path / "runs").exists()
