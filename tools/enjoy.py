"""Watch or re-score a trained policy: the inference policy that the run's evaluations scored, on new episodes.

  python tools/enjoy.py runs/Hopper-v4__fpmd_r__1__1764500000/fpmd_r.pt --episodes 10
  MUJOCO_GL=egl python tools/enjoy.py runs/my_run/checkpoint.pt --capture-video      # MP4s under videos/

PATH is a model written by --save-model (runs/{run_name}/{exp_name}.pt) or a run's checkpoint.pt. The arguments saved
in it say which file wrote it; that file's own make_networks rebuilds the networks, the saved weights are loaded,
and the file's own make_inference_policy acts (one observation at a time, as in the papers' latency tables), so
the returns are those of the policy that evaluation scores. Episodes run one after another in one env, seeded once
with --seed, and the policy's noise is seeded from --seed too: the same seed gives the same returns (on a CPU).
With --capture-video every episode is written to videos/{run_name}-enjoy/ (on a machine without a screen, set
MUJOCO_GL=egl). The file is read with weights_only=True (tensors and plain data): reading it runs no code.
"""

import argparse
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import read_saved, writer_of  # noqa: E402


def fail(message: str):
    sys.exit(f"enjoy.py: error: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a saved model ({exp_name}.pt) or a run's checkpoint.pt")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capture-video", action="store_true", help="write each episode to videos/{run_name}-enjoy/")
    parser.add_argument("--cuda", action="store_true", help="act on CUDA when it is available")
    cli = parser.parse_args()
    if cli.episodes < 1:
        fail(f"--episodes must be positive, got {cli.episodes}")
    if cli.capture_video and importlib.util.find_spec("moviepy") is None:
        fail("--capture-video needs moviepy, which is not installed: pip install moviepy")
    try:
        saved_args, states, _ = read_saved(cli.path)
        module = writer_of(saved_args, cli.path)
    except ValueError as err:
        fail(str(err))
    args = module.Args(**saved_args)
    warnings.filterwarnings("ignore", ".*is out of date", DeprecationWarning)  # the -v4 tasks are the papers' choice

    if problem := module.find_env_problem(args.env_id):
        fail(problem)
    env = module.make_gym_env(args.env_id, render_mode="rgb_array" if cli.capture_video else None)
    if cli.capture_video:
        run_name = args.run_name or cli.path.parent.name
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}-enjoy", episode_trigger=lambda episode: True, disable_logger=True)
    device = torch.device("cuda" if cli.cuda and torch.cuda.is_available() else "cpu")
    low, high = (torch.as_tensor(bound, dtype=torch.float32, device=device) for bound in (env.action_space.low, env.action_space.high))
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    networks = module.make_networks(obs_dim, action_dim, (high - low) / 2, args)
    for name, network in networks.items():
        if name not in states:
            fail(f"{cli.path} holds no weights for {module.__name__}.py's network {name!r}")
        try:
            network.load_state_dict(states[name])
        except RuntimeError as err:
            fail(f"{cli.path}: the weights of {name!r} do not fit {module.__name__}.py's network: {str(err).splitlines()[0]}")
        network.to(device).eval()
    policy, nfe = module.make_inference_policy(networks, action_dim, args)

    torch.manual_seed(cli.seed)
    returns = []
    for episode in range(cli.episodes):
        obs, _ = env.reset(seed=cli.seed if episode == 0 else None)  # seeded once: new starts after the first
        episode_return, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = policy(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])
            obs, reward, terminated, truncated, _ = env.step(module.action_to_env(action, low, high)[0])
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    env.close()
    print(f"{module.__name__}.py policy of {cli.path} on {args.env_id}, NFE {nfe}, seed {cli.seed}")
    print("returns: " + ", ".join(f"{r:.1f}" for r in returns))
    print(f"mean return {np.mean(returns):.1f} +- {np.std(returns):.1f} over {cli.episodes} episodes")
    if cli.capture_video:
        print(f"videos in videos/{run_name}-enjoy/")


if __name__ == "__main__":
    main()
