"""Gymnasium 1.x correctness of each file's own env plumbing: the transition stored at an episode's end,
time-limit truncation bootstrapping, and per-dimension action bounds."""

import numpy as np
import pytest
import torch
from conftest import load_algo


def step_until_an_episode_ends(module, env_id: str, actions: torch.Tensor, max_steps: int):
    """Step the file's own vector env (one sub-env per action row), storing every step as main() does."""
    envs = module.make_vector_env(env_id, seed=0, num_envs=len(actions))
    low, high = (torch.as_tensor(bound) for bound in (envs.single_action_space.low, envs.single_action_space.high))
    rb = module.ReplayBuffer(max_steps * len(actions), envs.single_observation_space.shape[0], actions.shape[1], torch.device("cpu"), seed=0)
    obs, _ = envs.reset(seed=0)
    for _ in range(max_steps):
        next_obs, rewards, terminations, truncations, infos = envs.step(module.action_to_env(actions, low, high))
        rb.add(obs, module.final_next_obs(next_obs, infos), actions, rewards, terminations)
        if (terminations | truncations).any():
            envs.close()
            return rb, infos, next_obs, terminations, truncations
        obs = next_obs
    pytest.fail(f"no episode of {env_id} ended in {max_steps} steps")


def test_stored_next_obs_of_a_terminated_episode_is_final_obs(algo):
    module = load_algo(algo)
    full_push = torch.tensor([[1.0], [-1.0]])  # the pole falls within a few steps
    rb, infos, next_obs, terminations, _ = step_until_an_episode_ends(module, "InvertedPendulum-v4", full_push, 50)
    first_row = rb.size - 2  # the last vector step wrote one row per sub-env
    assert terminations.any()
    for env_index in np.flatnonzero(terminations):
        stored = rb.next_obs[first_row + env_index].numpy()
        np.testing.assert_allclose(stored, infos["final_obs"][env_index], rtol=1e-6)
        assert not np.allclose(stored, next_obs[env_index])  # not the reset obs that SAME_STEP returned
        assert abs(stored[1]) > 0.2  # the pole angle really left the healthy range
        assert rb.terminations[first_row + env_index] == 1.0


def test_truncated_episode_keeps_its_bootstrap(algo):
    module = load_algo(algo)
    rb, infos, _, terminations, truncations = step_until_an_episode_ends(module, "Pendulum-v1", torch.zeros(1, 1), 200)
    last = rb.size - 1
    assert truncations[0] and not terminations[0]
    np.testing.assert_allclose(rb.next_obs[last].numpy(), infos["final_obs"][0], rtol=1e-6)
    assert rb.terminations[last] == 0.0
    target = module.td_target(rb.rewards[last:], rb.terminations[last:], torch.tensor([10.0]), 0.99)
    assert target.item() == pytest.approx(rb.rewards[last].item() + 9.9)  # bootstraps through the time limit


def test_termination_cuts_the_bootstrap(algo):
    module = load_algo(algo)
    rewards, terminations = torch.tensor([1.5, 1.5, -2.0]), torch.tensor([1.0, 0.0, 1.0])
    target = module.td_target(rewards, terminations, torch.tensor([10.0, 10.0, 7.0]), 0.99)
    assert torch.allclose(target, torch.tensor([1.5, 1.5 + 9.9, -2.0]))


def test_actions_map_to_per_dimension_bounds(algo):
    module = load_algo(algo)
    low, high = torch.tensor([-0.4, -2.0, 0.0]), torch.tensor([0.4, 2.0, 1.0])
    actions = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.5, 0.0], [1.7, -3.0, 0.0]])
    env_actions = module.action_to_env(actions, low, high)
    expected = [[-0.4, -2.0, 0.0], [0.4, 2.0, 1.0], [0.0, 1.0, 0.5], [0.4, -2.0, 0.5]]  # outside [-1, 1]: clipped first
    np.testing.assert_allclose(env_actions, expected, atol=1e-7)
