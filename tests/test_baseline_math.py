"""The baselines' math against brute-force computations: SAC's squashed density, TD3's target smoothing."""

import math

import numpy as np
import pytest
import torch
from conftest import load_algo


def test_sac_squashed_log_prob_equals_change_of_variables_by_autograd_jacobian():
    sac = load_algo("sac_baseline")
    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 3, dtype=torch.float64), 0.5 * torch.randn(5, 3, dtype=torch.float64)
    actions, log_prob = sac.squashed_gaussian_sample(mean, log_std)
    for i in range(5):
        pre_tanh = torch.atanh(actions[i])
        gaussian = torch.distributions.Normal(mean[i], log_std[i].exp()).log_prob(pre_tanh).sum()
        jacobian = torch.autograd.functional.jacobian(torch.tanh, pre_tanh)  # full d x d matrix
        expected = gaussian - torch.linalg.slogdet(jacobian).logabsdet
        assert log_prob[i].item() == pytest.approx(expected.item(), abs=1e-6)


def test_sac_squashed_density_integrates_to_one():
    sac = load_algo("sac_baseline")
    mean, log_std = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[0.3]], dtype=torch.float64)
    actions = torch.linspace(-1 + 1e-9, 1 - 1e-9, 400_001, dtype=torch.float64)
    density = sac.squashed_gaussian_log_prob(torch.atanh(actions)[:, None], mean, log_std).exp()
    assert torch.trapezoid(density, actions).item() == pytest.approx(1.0, abs=1e-4)


def test_sac_log_prob_is_a_density_over_env_unit_actions():
    sac = load_algo("sac_baseline")
    scale = torch.tensor([0.4, 2.0])  # per-dimension half-ranges, Humanoid's 0.4 among them
    actor = sac.Actor(obs_dim=3, action_dim=2, action_scale=scale).double()
    torch.manual_seed(1)
    obs = torch.randn(4, 3, dtype=torch.float64)
    torch.manual_seed(2)
    actions, log_prob = actor.get_action(obs)
    mean, log_std = actor(obs)
    for i in range(4):
        pre_tanh = torch.atanh(actions[i])
        gaussian = torch.distributions.Normal(mean[i], log_std[i].exp()).log_prob(pre_tanh).sum()
        jacobian = torch.autograd.functional.jacobian(lambda u: scale.double() * torch.tanh(u), pre_tanh)
        assert log_prob[i].item() == pytest.approx((gaussian - torch.linalg.slogdet(jacobian).logabsdet).item(), abs=1e-6)


def test_td3_target_smoothing_noise_is_clipped_and_scaled_per_dimension():
    td3 = load_algo("td3_baseline")
    low, high = torch.tensor([-0.4, -2.0]), torch.tensor([0.4, 2.0])
    torch.manual_seed(0)
    target_actions = torch.zeros(200_000, 2)
    smoothed = td3.smoothed_target_action(target_actions, policy_noise=0.2, noise_clip=0.5)
    noise_env_units = td3.action_to_env(smoothed, low, high) - td3.action_to_env(target_actions, low, high)
    half_range = np.array([0.4, 2.0])
    assert np.all(np.abs(noise_env_units) <= 0.5 * half_range + 1e-6)  # clipped at noise_clip, per dimension
    assert np.allclose(np.abs(noise_env_units).max(0), 0.5 * half_range, rtol=1e-3)  # and the clip is reached
    # std of N(0, 0.2^2) clipped at +-0.5 (2.5 sigma): sigma^2 (1 - 2 c phi(c) / (2 Phi(c) - 1)) + tail mass c^2
    c = 2.5
    phi, tail = math.exp(-c * c / 2) / math.sqrt(2 * math.pi), math.erfc(c / math.sqrt(2))
    clipped_var = 0.2**2 * ((1 - tail) - 2 * c * phi) + (0.2 * c) ** 2 * tail
    np.testing.assert_allclose(noise_env_units.std(0), math.sqrt(clipped_var) * half_range, rtol=0.01)


def test_td3_smoothed_target_action_stays_in_bounds():
    td3 = load_algo("td3_baseline")
    smoothed = td3.smoothed_target_action(torch.full((10_000, 3), 0.95), policy_noise=0.2, noise_clip=0.5)
    assert smoothed.max() <= 1.0 and smoothed.min() >= 0.45
