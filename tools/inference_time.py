"""The papers' inference-time table for this project's files: per-action latency of each file's inference policy.

  python tools/inference_time.py --env-id Ant-v4 --device cpu cuda
  python tools/inference_time.py --load runs/Ant-v4__fpmd_r__1/fpmd_r.pt --load runs/Ant-v4__sac_baseline__1/sac_baseline.pt

One call is what evaluation does per env step at batch 1: the observation to a tensor on the device, the inference
policy (FPMD-R / FPMD-M: one flow step; MFPO: 2 steps x 10 candidates scored by the target critics; SAC: tanh(mean);
TD3: mu(s)), the action back to the host. The median over --calls calls after --warmup calls, all files timed in
this one process, so the ratios to SAC are comparable even on a noisy machine. Networks have the papers' sizes
(each file's defaults) with random weights, or the weights of a --load checkpoint.
"""

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ["sac_baseline", "td3_baseline", "fpmd_r", "fpmd_m", "mfpo"]


def build_policy(algo: str, obs_dim: int, action_dim: int, action_scale: torch.Tensor, device: torch.device, checkpoint: dict | None):
    """The file's own inference policy and NFE, from its defaults or from a saved model."""
    module = importlib.import_module(algo)
    args = module.Args(**checkpoint["args"]) if checkpoint else module.Args()
    networks = module.make_networks(obs_dim, action_dim, action_scale, args)
    for name, network in networks.items():
        if checkpoint:
            network.load_state_dict(checkpoint[name])
        network.to(device).eval()
    return module.make_inference_policy(networks, action_dim, args)


def time_policy(policy, observations: np.ndarray, device: torch.device, calls: int, warmup: int) -> list[float]:
    """Latencies in ms of obs -> action -> host, cycling through real observations."""
    latencies = []
    with torch.no_grad():
        for i in range(warmup + calls):
            obs = observations[i % len(observations)][None]
            start = time.perf_counter()
            policy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if i >= warmup:
                latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="Ant-v4", help="sets the network sizes (FPMD's Table 2 used Ant-v4)")
    parser.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--algos", nargs="+", default=[a for a in ALGOS if (ROOT / f"{a}.py").exists()])
    parser.add_argument("--load", nargs="*", type=Path, default=[], help="checkpoints {exp_name}.pt of trained runs")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is the fair batch-1 setting)")
    args = parser.parse_args()
    if args.calls < 1000:
        sys.exit("inference_time.py: error: --calls must be at least 1000 for a stable median")
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)
    checkpoints = {path.stem: torch.load(path, map_location="cpu", weights_only=True) for path in args.load}

    env = gym.make(args.env_id)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_scale = torch.as_tensor((env.action_space.high - env.action_space.low) / 2, dtype=torch.float32)
    observations = np.stack([env.reset(seed=seed)[0] for seed in range(64)])  # real start states, not zeros

    for device_name in args.device:
        if device_name == "cuda" and not torch.cuda.is_available():
            print(f"\n(cuda: no CUDA device here, skipped)")
            continue
        device = torch.device(device_name)
        results = {}
        for algo in args.algos:
            policy, nfe = build_policy(algo, obs_dim, action_dim, action_scale, device, checkpoints.get(algo))
            latencies = time_policy(policy, observations, device, args.calls, args.warmup)
            results[algo] = (nfe, statistics.median(latencies), float(np.percentile(latencies, 90)))
        name = torch.cuda.get_device_name(device) if device_name == "cuda" else f"CPU, {args.threads} thread(s)"
        weights = "trained (" + ", ".join(sorted(checkpoints)) + ")" if checkpoints else "random"
        print(f"\n{args.env_id}, {name}, batch 1, {weights} weights, median of {args.calls} calls after {args.warmup}\n")
        print("| algorithm | NFE | median ms / action | p90 ms | ratio to SAC |")
        print("|---|---|---|---|---|")
        sac_median = results.get("sac_baseline", (None, float("nan")))[1]
        for algo, (nfe, median, p90) in results.items():
            print(f"| {algo} | {nfe} | {median:.3f} | {p90:.3f} | {median / sac_median:.2f} |")


if __name__ == "__main__":
    main()
