"""The FPMD paper's Fig. 1 for a trained FPMD-R policy: sampling trajectories of the first two action dimensions.

  python tools/plot_flow_trajectories.py runs/Ant-v4__fpmd_r__1/fpmd_r.pt --out trajectories.png

For --num-states states visited by the policy, --num-particles noises from the inference policy's own prior
x0 ~ N(0, eval_prior_scale^2 I) (0.5^2 by default) are integrated with --flow-steps Euler steps of the EMA policy's
velocity field, and each path is drawn from x0 (dot) to its end (cross); the one-step sample x0 + v(s, x0, 0) is
marked too. Straight paths mean one step lands where many steps do (Prop. 2): the script
prints the mean straightness (end-to-end distance over path length, 1 = straight) and the mean distance between the
one-step and the K-step samples.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from runs import read_saved  # noqa: E402


class RecordingPolicy:
    """The velocity field, recording the point each Euler step starts from."""

    def __init__(self, policy):
        self.policy, self.time_features, self.points = policy, policy.time_features, []

    def __call__(self, obs, x, *times, time_features=None):
        self.points.append(x)
        return self.policy(obs, x, *times, time_features=time_features)


@torch.no_grad()
def sampling_path(fpmd_r, policy, obs: torch.Tensor, x0: torch.Tensor, num_steps: int) -> torch.Tensor:
    """All K + 1 points of the file's own K-step sampler, shape (K + 1, batch, d)."""
    recording = RecordingPolicy(policy)
    end = fpmd_r.sample_actions(recording, obs, x0, fpmd_r.sampling_time_features(policy, num_steps, x0.device))
    return torch.stack([*recording.points, end])


def visited_states(fpmd_r, args, envs, networks, num_states: int, seed: int) -> torch.Tensor:
    """States met by the inference policy: run one env and keep one state every 25 steps."""
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (envs.single_action_space.low, envs.single_action_space.high))
    policy, _ = fpmd_r.make_inference_policy(networks, envs.single_action_space.shape[0], args)
    obs, _ = envs.reset(seed=seed)
    states = []
    for step in range(25 * num_states):
        if step % 25 == 0:
            states.append(torch.as_tensor(obs[0], dtype=torch.float32))
        with torch.no_grad():
            obs, *_ = envs.step(fpmd_r.action_to_env(policy(torch.as_tensor(obs, dtype=torch.float32)), low, high))
    return torch.stack(states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a saved fpmd_r.pt (python fpmd_r.py ... --save-model) or an fpmd_r run's checkpoint.pt")
    parser.add_argument("--out", type=Path, default=Path("flow_trajectories.png"))
    parser.add_argument("--num-states", type=int, default=4)
    parser.add_argument("--num-particles", type=int, default=64)
    parser.add_argument("--flow-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args_cli = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import fpmd_r
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        saved_args, states, _ = read_saved(args_cli.checkpoint)  # weights_only: reading it runs no code
        args = fpmd_r.Args(**saved_args)
    except (ValueError, TypeError) as err:  # TypeError: arguments fpmd_r.py does not take
        sys.exit(f"plot_flow_trajectories.py: error: {str(err).splitlines()[0]}")
    envs = fpmd_r.make_vector_env(args.env_id, args_cli.seed, 1)
    obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    if action_dim < 2:
        sys.exit(f"plot_flow_trajectories.py: error: {args.env_id} has {action_dim} action dimension; two are plotted")
    networks = fpmd_r.make_networks(obs_dim, action_dim, torch.ones(action_dim), args)
    for name, network in networks.items():
        network.load_state_dict(states[name])
    torch.manual_seed(args_cli.seed)
    states = visited_states(fpmd_r, args, envs, networks, args_cli.num_states, args_cli.seed)
    envs.close()

    fig, axes = plt.subplots(1, len(states), figsize=(3.2 * len(states), 3.4), squeeze=False)
    straightness, one_step_gap = [], []
    for ax, state in zip(axes[0], states):
        obs = state.expand(args_cli.num_particles, -1)
        x0 = args.eval_prior_scale * torch.randn(args_cli.num_particles, action_dim)  # the inference policy's prior
        path = sampling_path(fpmd_r, networks["ema_policy"], obs, x0, args_cli.flow_steps)
        one_step = sampling_path(fpmd_r, networks["ema_policy"], obs, path[0], 1)[-1]
        length = (path[1:] - path[:-1]).norm(dim=-1).sum(0)
        straightness.append(((path[-1] - path[0]).norm(dim=-1) / length.clamp(min=1e-9)).mean().item())
        one_step_gap.append((one_step - path[-1]).norm(dim=-1).mean().item())
        for i in range(args_cli.num_particles):
            ax.plot(path[:, i, 0], path[:, i, 1], color="tab:blue", alpha=0.3, linewidth=0.8)
        ax.scatter(path[0, :, 0], path[0, :, 1], s=6, color="gray", label="x0")
        ax.scatter(path[-1, :, 0], path[-1, :, 1], s=14, marker="x", color="tab:red", label=f"{args_cli.flow_steps} steps")
        ax.scatter(one_step[:, 0], one_step[:, 1], s=10, marker="+", color="black", label="1 step")
        ax.set(xlabel="action dim 0", ylabel="action dim 1")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"FPMD-R sampling paths, {args.env_id} (straightness {np.mean(straightness):.3f})")
    fig.tight_layout()
    fig.savefig(args_cli.out, dpi=100)
    print(f"{args_cli.out}: mean straightness {np.mean(straightness):.3f} (1 = straight), mean |one-step - "
          f"{args_cli.flow_steps}-step| {np.mean(one_step_gap):.3f}")


if __name__ == "__main__":
    main()
