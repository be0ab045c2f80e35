"""FPMD-R's math against closed forms: the Boltzmann tilt of eq. 2 learned through eq. 8, the one-step sampling
error of Prop. 2, the noise schedule's fixed point and the lr schedule (best-of-N and the weights: test_fpmd_release.py)."""

import math

import pytest
import torch
from conftest import SmallFlowNetwork, load_algo


def train_flow(fpmd_r, draw_actions, weights_of, steps=2000, batch_size=512, seed=0) -> SmallFlowNetwork:
    """Minimize the file's flow_matching_loss (eq. 8) on actions from `draw_actions`, weighted by `weights_of`."""
    torch.manual_seed(seed)
    policy = SmallFlowNetwork()  # a small v(s, x, t)
    optimizer = torch.optim.Adam(policy.parameters(), lr=2e-3)
    obs = torch.zeros(batch_size, 1)
    for _ in range(steps):
        actions = draw_actions(batch_size)
        loss = fpmd_r.flow_matching_loss(policy, obs, actions, weights_of(actions))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy


def sample(fpmd_r, policy, x0, num_steps):
    with torch.no_grad():
        time_features = fpmd_r.sampling_time_features(policy, num_steps, x0.device)
        return fpmd_r.sample_actions(policy, torch.zeros(len(x0), 1), x0, time_features)[:, 0]


def w2_1d(a, b) -> float:
    """2-Wasserstein distance of two equal-size 1-D samples: match sorted values."""
    return (a.sort().values - b.sort().values).pow(2).mean().sqrt().item()


def test_exp_weights_learn_the_boltzmann_tilt_and_uniform_weights_do_not():
    fpmd_r = load_algo("fpmd_r")
    sigma, slope, temperature = 0.5, 1.0, 0.5  # pi_old = N(0, sigma^2), Q(a) = slope * a, lambda
    tilted_mean = slope * sigma**2 / temperature  # eq. 2: N(0, sigma^2) exp(c a / lambda) = N(c sigma^2 / lambda, sigma^2)
    draw = lambda n: sigma * torch.randn(n, 1)
    for weighting, expected_mean in (("exp", tilted_mean), ("uniform", 0.0)):
        weights_of = lambda a: fpmd_r.policy_weights(slope * a[:, 0], torch.tensor(0.0), torch.tensor(1.0), torch.tensor(temperature), weighting)
        policy = train_flow(fpmd_r, draw, weights_of)
        samples = sample(fpmd_r, policy, torch.randn(8192, 1), 20)
        assert samples.mean().item() == pytest.approx(expected_mean, abs=0.06), weighting
        assert samples.std().item() == pytest.approx(sigma, abs=0.08), weighting


def test_one_step_error_is_bounded_by_the_target_variance():
    fpmd_r = load_algo("fpmd_r")
    x0 = torch.randn(8192, 1)
    ones = lambda a: torch.ones(len(a))

    narrow = lambda n: 0.7 + 0.01 * torch.randn(n, 1)  # near-deterministic target
    policy = train_flow(fpmd_r, narrow, ones)
    one_step, many_steps = sample(fpmd_r, policy, x0, 1), sample(fpmd_r, policy, x0, 20)
    assert w2_1d(one_step, many_steps) < 0.05
    assert one_step.mean().item() == pytest.approx(0.7, abs=0.03)

    wide = lambda n: 0.8 * torch.sign(torch.randn(n, 1)) + 0.05 * torch.randn(n, 1)  # bimodal, variance ~0.64
    policy = train_flow(fpmd_r, wide, ones)
    one_step, many_steps = sample(fpmd_r, policy, x0, 1), sample(fpmd_r, policy, x0, 20)
    assert (many_steps > 0.5).float().mean() > 0.35 and (many_steps < -0.5).float().mean() > 0.35  # 20 steps: bimodal
    assert w2_1d(one_step, many_steps) > 0.4  # one step cannot reach the modes
    target = wide(8192)[:, 0]
    assert w2_1d(one_step, target) ** 2 <= target.var().item() + 0.05  # Prop. 2: W2^2 <= var(a1)


def test_noise_schedule_drives_sigma_from_half_to_its_fixed_point():
    fpmd_r = load_algo("fpmd_r")
    log_alpha = torch.tensor(math.log(5.0), requires_grad=True)
    optimizer = torch.optim.Adam([log_alpha], lr=7e-3)
    sigmas = []
    for _ in range(2000):
        loss = fpmd_r.noise_schedule_loss(log_alpha, action_dim=6, target_entropy_per_dim=-1.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sigmas.append(0.1 * log_alpha.exp().item())
    assert sigmas[0] == pytest.approx(0.5, rel=0.01)
    assert sigmas[-1] == pytest.approx(math.exp(-2) / math.sqrt(2 * math.pi), rel=0.03)  # 0.054
    assert sigmas[300] > 0.06  # it decays gradually (one Adam step of 7e-3 in log alpha at a time)


def test_policy_lr_schedule():
    fpmd_r = load_algo("fpmd_r")
    schedule = lambda i: fpmd_r.policy_lr_at(i, 3e-4, 3e-5, 50_000, 150_000)
    assert schedule(0) == schedule(50_000) == 3e-4
    assert schedule(100_000) == pytest.approx(1.65e-4)
    assert schedule(150_000) == schedule(10**6) == pytest.approx(3e-5)
