"""The papers' inference-time table for this project's files: per-action latency of each file's inference policy.

  python tools/inference_time.py --env-id Ant-v4 --device cpu cuda
  python tools/inference_time.py --load runs/Ant-v4__fpmd_r__1/fpmd_r.pt runs/Ant-v4__sac_baseline__1/sac_baseline.pt

One call is what evaluation does per env step: the observations to a tensor on the device, the inference policy
(FPMD-R / FPMD-M: one flow step; MFPO: 2 steps x 10 candidates scored by the target critics; SAC: tanh(mean); TD3:
mu(s)), the actions back to the host; at batch 1 (one env, the papers' tables) and at a batch of 10 (an evaluation of
10 episodes, or 10 vector envs). Each file's policy is made once, as an evaluation makes it, so the state-independent
work it prepares is not timed. The median over --calls calls after --warmup calls, all files timed in this one
process in --rounds interleaved rounds (each round times every file in turn), so that a slow spell of a shared
machine falls on all of them and the ratios to SAC stay comparable. Networks have the papers' sizes (each file's
defaults) with random weights, or the weights of the --load models (written by --save-model; a run's checkpoint.pt, or
a model whose --exp-name names no algorithm file, is refused).

Every file acts through its networks' modules, as its training does.
"""

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # the algorithm files and the tools' shared module
from runs import algorithm_files, read_saved, writer_of  # noqa: E402


def fail(message: str):
    sys.exit(f"inference_time.py: error: {message}")


def trained_model(path: Path, env_id: str) -> tuple[str, dict]:
    """(the file that wrote it, its saved model) of a --load path: a model written by --save-model on --env-id, whose
    exp_name names an algorithm file; anything else is refused in one line."""
    try:
        saved_args, saved, is_checkpoint = read_saved(path)
        module = writer_of(saved_args, path, require_exp_name=True)
    except ValueError as err:
        fail(str(err))
    if is_checkpoint:
        fail(f"{path} is a training checkpoint; --load takes the model that --save-model writes (runs/RUN/{module.__name__}.pt)")
    if saved_args.get("env_id") != env_id:
        fail(f"{path} was trained on {saved_args.get('env_id')}: time it with --env-id {saved_args.get('env_id')}")
    return module.__name__, saved


def build_policy(algo: str, obs_dim: int, action_dim: int, action_scale: torch.Tensor, device: torch.device, checkpoint: dict | None):
    """The file's own inference policy, its NFE and its networks, from its defaults or from a saved model."""
    module = importlib.import_module(algo)
    args = module.Args(**checkpoint["args"]) if checkpoint else module.Args()
    networks = module.make_networks(obs_dim, action_dim, action_scale, args)
    for name, network in networks.items():
        if checkpoint:
            network.load_state_dict(checkpoint[name])
        network.to(device).eval()
    return (*module.make_inference_policy(networks, action_dim, args), networks)


def time_policy(policy, observations: np.ndarray, device: torch.device, calls: int, warmup: int, batch: int) -> list[float]:
    """Latencies in ms of a batch of observations -> actions -> host, cycling through real observations."""
    latencies = []
    with torch.no_grad():
        for i in range(-warmup, calls):
            obs = observations[(i * batch + np.arange(batch)) % len(observations)]
            start = time.perf_counter()
            policy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if i >= 0:
                latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="Ant-v4", help="sets the network sizes (FPMD's Table 2 used Ant-v4)")
    parser.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--algos", nargs="+", default=algorithm_files())
    parser.add_argument("--load", nargs="*", type=Path, default=[], help="models {exp_name}.pt of trained runs (--save-model)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds, each of calls / rounds calls per file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is the fair batch-1 setting)")
    args = parser.parse_args()
    if args.calls < 1000:
        fail("--calls must be at least 1000 for a stable median")
    if not 1 <= args.rounds <= args.calls:
        fail("--rounds must lie in [1, --calls]")
    unknown = sorted(set(args.algos) - set(algorithm_files()))
    if unknown:
        fail(f"--algos: no algorithm file {unknown[0]}.py (there are {', '.join(algorithm_files())})")
    torch.set_num_threads(args.threads)
    checkpoints = dict(trained_model(path, args.env_id) for path in args.load)

    env_maker = importlib.import_module(args.algos[0])  # the five files make a task alike (a dm_control/ id flattened too)
    if problem := env_maker.find_env_problem(args.env_id):
        fail(problem)
    env = env_maker.make_gym_env(args.env_id)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_scale = torch.as_tensor((env.action_space.high - env.action_space.low) / 2, dtype=torch.float32)
    observations = np.stack([env.reset(seed=seed)[0] for seed in range(64)])  # real start states, not zeros

    for device_name in args.device:
        if device_name == "cuda" and not torch.cuda.is_available():
            print("\n(cuda: no CUDA device here, skipped)")
            continue
        device = torch.device(device_name)
        policies = {algo: build_policy(algo, obs_dim, action_dim, action_scale, device, checkpoints.get(algo)) for algo in args.algos}
        latencies = {(algo, batch): [] for algo in policies for batch in (1, 10)}
        for _ in range(args.rounds):
            for (algo, batch), times in latencies.items():
                times += time_policy(policies[algo][0], observations, device, args.calls // args.rounds, args.warmup // args.rounds, batch)
        results = {algo: (nfe, statistics.median(latencies[algo, 1]), float(np.percentile(latencies[algo, 1], 90)),
                          statistics.median(latencies[algo, 10])) for algo, (_, nfe, _) in policies.items()}
        name = torch.cuda.get_device_name(device) if device_name == "cuda" else f"CPU, {args.threads} thread(s)"
        weights = "trained (" + ", ".join(sorted(checkpoints)) + ")" if checkpoints else "random"
        print(f"\n{args.env_id}, {name}, {weights} weights, median of {args.calls} calls after {args.warmup} in {args.rounds} interleaved rounds\n")
        print("| algorithm | NFE | median ms / action, batch 1 | p90 ms | ratio to SAC | median ms / call, batch 10 | ratio to SAC |")
        print("|---|---|---|---|---|---|---|")
        _, sac_median, _, sac_batch_median = results.get("sac_baseline", (None, float("nan"), None, float("nan")))
        for algo, (nfe, median, p90, batch_median) in results.items():
            print(f"| {algo} | {nfe} | {median:.3f} | {p90:.3f} | {median / sac_median:.2f} | {batch_median:.3f} | "
                  f"{batch_median / sac_batch_median:.2f} |")


if __name__ == "__main__":
    main()
