"""FPMD-M's MeanFlow math against closed forms: the exact mean velocity of a Gaussian target is the fixed point of
the file's target function and samples the target in one step; the forward-mode du/dt equals a finite difference;
training with the file's loss puts one-step samples on both modes of a 2-D target."""

import pytest
import torch
from conftest import SmallFlowNetwork, load_algo

MU, SIGMA = 0.6, 0.3  # the 1-D target a1 ~ N(MU, SIGMA^2)


def path_std(t):
    """std of z_t = t a1 + (1 - t) x0 given x0 ~ N(0, 1): s_t = sqrt(t^2 sigma^2 + (1 - t)^2)."""
    return torch.sqrt(t**2 * SIGMA**2 + (1 - t) ** 2)


def exact_mean_velocity(z, t, r):
    """u(z, t, r) = (z_r - z_t) / (r - t) along the exact flow, z_r = r mu + s_r (z_t - t mu) / s_t."""
    t, r = t[..., None], r[..., None]
    z_r = r * MU + path_std(r) * (z - t * MU) / path_std(t)
    return (z_r - z) / (r - t)


def exact_velocity(z, t):
    """The marginal velocity v(z, t) = mu + (d s_t / dt) / s_t (z - t mu), d s_t / dt = (t sigma^2 - (1 - t)) / s_t."""
    t = t[..., None]
    return MU + (t * SIGMA**2 - (1 - t)) / path_std(t) ** 2 * (z - t * MU)


class ExactMeanVelocity:
    """exact_mean_velocity with the file's network interface: its time features are (t, r) themselves."""

    def time_features(self, t, r):
        return torch.stack([t, r], -1).double()

    def __call__(self, obs, z, t=None, r=None, time_features=None):
        if time_features is not None:
            t, r = time_features.expand(*z.shape[:-1], 2).unbind(-1)
        return exact_mean_velocity(z, t, r)


def test_exact_mean_velocity_is_the_fixed_point_of_the_target():
    fpmd_m = load_algo("fpmd_m")
    torch.manual_seed(0)
    t, r = torch.rand(2, 4096, dtype=torch.float64).sort(0).values
    r = r + 1e-3  # strictly r > t, where the closed form has no 0/0
    z = t[:, None] * (MU + SIGMA * torch.randn(4096, 1, dtype=torch.float64)) + (1 - t[:, None]) * torch.randn(4096, 1, dtype=torch.float64)
    v = exact_velocity(z, t)
    target = fpmd_m.mean_flow_target(exact_mean_velocity, z, t, r, v)
    u = exact_mean_velocity(z, t, r)
    assert (target - u).abs().max().item() < 1e-5
    flipped = 2 * v - target  # v + (t - r) du/dt: the other sign convention
    assert (flipped - u).abs().max().item() > 0.1


def test_one_step_sample_with_the_exact_mean_velocity_is_the_target():
    fpmd_m = load_algo("fpmd_m")
    torch.manual_seed(1)
    x0 = torch.randn(200_000, 1, dtype=torch.float64)
    exact_policy = ExactMeanVelocity()
    actions = fpmd_m.sample_actions(exact_policy, torch.zeros(len(x0), 1), x0, exact_policy.time_features(torch.zeros(1), torch.ones(1)))[:, 0]
    assert actions.mean().item() == pytest.approx(MU, abs=0.005)
    assert actions.std().item() == pytest.approx(SIGMA, abs=0.005)


def test_forward_mode_du_dt_equals_a_central_finite_difference():
    fpmd_m = load_algo("fpmd_m")
    torch.manual_seed(2)
    net = SmallFlowNetwork(action_dim=2, num_times=2, width=128).double()
    obs = torch.randn(64, 1, dtype=torch.float64)
    u = lambda z, t, r: net(obs, z, t, r)
    z, v = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    t, r = torch.rand(2, 64, dtype=torch.float64).sort(0).values
    with torch.no_grad():
        dudt = fpmd_m.mean_velocity_time_derivative(u, z, t, r, v)
        eps = 1e-5
        finite_difference = (u(z + eps * v, t + eps, r) - u(z - eps * v, t - eps, r)) / (2 * eps)
    assert torch.allclose(dudt, finite_difference, atol=1e-7)


def test_training_with_the_file_loss_puts_one_step_samples_on_both_modes():
    fpmd_m = load_algo("fpmd_m")
    torch.manual_seed(3)
    modes = torch.tensor([[0.6, 0.6], [-0.6, -0.6]])
    policy = SmallFlowNetwork(action_dim=2, num_times=2, width=128)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    obs = torch.zeros(512, 1)
    for _ in range(1500):
        actions = modes[torch.randint(0, 2, (512,))] + 0.05 * torch.randn(512, 2)
        loss = fpmd_m.mean_flow_loss(policy, obs, actions, torch.ones(512), flow_ratio=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        samples = fpmd_m.sample_actions(policy, torch.zeros(4096, 1), torch.randn(4096, 2), fpmd_m.sampling_time_features(policy, 1, "cpu"))
    distance = torch.cdist(samples, modes)  # (samples, modes)
    near = distance < 0.25
    assert near[:, 0].float().mean() > 0.3 and near[:, 1].float().mean() > 0.3  # both modes are sampled
    assert near.any(1).float().mean() > 0.7  # and few samples fall between them


def test_flow_ratio_sets_the_share_of_r_equal_to_t(monkeypatch):
    fpmd_m = load_algo("fpmd_m")
    seen = {}

    def record(mean_velocity, z, t, r, v):
        seen["t"], seen["r"] = t, r
        return torch.zeros_like(z)

    monkeypatch.setattr(fpmd_m, "mean_flow_target", record)
    policy = SmallFlowNetwork(action_dim=2, num_times=2, width=128)
    for ratio in (0.0, 0.75):
        fpmd_m.mean_flow_loss(policy, torch.zeros(20_000, 1), torch.zeros(20_000, 2), torch.ones(20_000), flow_ratio=ratio)
        assert (seen["t"] <= seen["r"]).all()
        assert (seen["r"] == seen["t"]).float().mean().item() == pytest.approx(ratio, abs=0.02)
