"""What a checkpoint costs: the size on disk and the time to write one, for a full replay buffer.

  python tools/checkpoint_size.py --algo fpmd_r --env-id Hopper-v4 Humanoid-v4 --transitions 1000000

Builds the file's networks and Adam optimizers at its default sizes for each env, fills a replay buffer of
--transitions rows with random numbers (what a 1M-step run holds at its end), writes it with the file's own
training_state and save_checkpoint into --dir (default: a temporary directory), prints the size and the write time,
and deletes the file. The buffer dominates: (2 x observation + action + 2) float32 numbers per transition.
"""

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="fpmd_r")
    parser.add_argument("--env-id", nargs="+", default=["Hopper-v4", "Humanoid-v4"])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the checkpoint (it is deleted after)")
    args = parser.parse_args()
    if args.transitions < 1:
        sys.exit("checkpoint_size.py: error: --transitions must be positive")
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(args.algo)
    print("| env | obs dim | action dim | transitions | checkpoint size (MB) | write time (s) |\n|---|---|---|---|---|---|")
    for env_id in args.env_id:
        envs = module.make_vector_env(env_id, 0, 1)
        obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
        algo_args = module.Args(env_id=env_id, buffer_size=args.transitions)
        networks = module.make_networks(obs_dim, action_dim, torch.ones(action_dim), algo_args)
        modules = {**networks, **{f"{name}_optimizer": torch.optim.Adam(net.parameters()) for name, net in networks.items()}}
        rb = module.ReplayBuffer(args.transitions, obs_dim, action_dim, torch.device("cpu"), seed=0)
        for field in module.ReplayBuffer.FIELDS:
            getattr(rb, field).normal_()  # random contents: incompressible, as real ones are
        rb.size = args.transitions
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            path = os.path.join(directory, "checkpoint.pt")
            start = time.perf_counter()
            module.save_checkpoint(path, module.training_state(algo_args, modules, {}, {}, rb, [envs]))
            seconds = time.perf_counter() - start
            size_mb = os.path.getsize(path) / 1e6
        print(f"| {env_id} | {obs_dim} | {action_dim} | {args.transitions} | {size_mb:.0f} | {seconds:.1f} |")
        envs.close()
        del rb


if __name__ == "__main__":
    main()
