"""What FPMD-R and FPMD-M share with the authors' release (docs/algorithms.md), checked in each file's own copy:
the training sampler's prior, best-of-N selection and its unclipped noise (eq. 18), the actor-loss weights of
eq. 8 / 16 in their three forms, two Adam steps per critic gradient, and Haiku's initialisation."""

import math

import pytest
import torch
import torch.nn as nn
from conftest import load_algo, read_evaluations, run_algo

FPMD = ["fpmd_r", "fpmd_m"]

@pytest.fixture(params=FPMD)
def fpmd(request):
    return load_algo(request.param)


@pytest.mark.parametrize("name", FPMD)
def test_budget_and_evaluations_count_from_the_end_of_the_warmup(name, tmp_path):
    flags = ["--total-timesteps", "200", "--learning-starts", "100", "--eval-freq", "100", "--eval-episodes", "1",
             "--batch-size", "16", "--num-particles", "2", "--flow-steps", "1", "--no-cuda", "--env-id", "Pendulum-v1"]
    result = run_algo(name, tmp_path, *flags, "--run-name", "release")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["global_step"] for row in read_evaluations(tmp_path / "runs" / "release")] == [200, 300]
    assert "global_step 300/300" in result.stdout
    result = run_algo(name, tmp_path, *flags, "--run-name", "paper", "--budget-includes-warmup")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [row["global_step"] for row in read_evaluations(tmp_path / "runs" / "paper")] == [100, 200]


class StillPolicy:
    """v = 0 (FPMD-R's v(s, x, t) or FPMD-M's u(s, z, t, r)), with the files' network interface: every particle stays
    at its noise x0."""

    def time_features(self, *times):
        return torch.zeros(len(times[0]), 0)

    def __call__(self, obs, x, *times, time_features=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize("prior_scale", [0.5, 1.0])
def test_training_particles_start_from_the_prior_scale(fpmd, prior_scale):
    torch.manual_seed(0)
    particles = fpmd.sample_particles(StillPolicy(), torch.randn(4096, 3), num_particles=8, action_dim=2,
                                      prior_scale=prior_scale, num_steps=3)
    assert particles.shape == (4096, 8, 2)
    assert particles.mean().item() == pytest.approx(0.0, abs=0.01)
    assert particles.std().item() == pytest.approx(prior_scale, rel=0.01)


def test_best_of_n_keeps_the_particle_of_highest_min_q(fpmd):
    qf1 = lambda obs, a: -(a - 0.3).pow(2).sum(-1)
    qf2 = lambda obs, a: -(a - 0.3).pow(2).sum(-1) - obs[..., 0] * a[..., 0]  # min(Q1, Q2) differs from Q1
    torch.manual_seed(0)
    obs, particles = torch.rand(7, 3), 0.5 * torch.randn(7, 16, 2)
    chosen = fpmd.best_of_n(qf1, qf2, obs, particles, noise_std=torch.tensor(0.0))
    for b in range(7):
        scores = [min(qf1(obs[b], particles[b, i]), qf2(obs[b], particles[b, i])).item() for i in range(16)]
        assert torch.equal(chosen[b], particles[b, max(range(16), key=scores.__getitem__)].clamp(-1, 1))


def test_best_of_n_ranks_unclipped_particles_clips_the_best_and_not_its_noise(fpmd):
    peak_at_one = lambda obs, a: -(a - 1.0).pow(2).sum(-1)
    obs = torch.zeros(1, 1)
    # unclipped, 0.5 beats 1.8 (Q -0.25 vs -0.64); ranked after clipping, 1.8 -> 1.0 would win with Q = 0
    chosen = fpmd.best_of_n(peak_at_one, peak_at_one, obs, torch.tensor([[[1.8], [0.5]]]), noise_std=torch.tensor(0.0))
    assert chosen.item() == 0.5
    increasing = lambda obs, a: a.sum(-1)
    far = torch.tensor([[[3.0], [-5.0]]]).expand(100_000, 2, 1)  # the best particle lies outside [-1, 1]
    torch.manual_seed(1)
    noisy = fpmd.best_of_n(increasing, increasing, torch.zeros(100_000, 1), far, noise_std=torch.tensor(0.5))
    assert noisy.mean().item() == pytest.approx(1.0, abs=0.01)  # clipped to 1 before the noise
    assert noisy.std().item() == pytest.approx(0.5, rel=0.02)  # the noise is whole: not clipped after
    assert (noisy > 1.0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_official_weights_are_the_release_expression_as_written(fpmd):
    q, q_mean, q_std, alpha = torch.tensor([0.3, 1.9, -2.5, 7.0, 40.0]), torch.tensor(2.0), torch.tensor(4.0), torch.tensor(1.5)
    official = fpmd.policy_weights(q, q_mean, q_std, alpha, "official")
    literal = torch.exp(torch.clip(q - q_mean / q_std, -3, 3) / alpha)  # q - (m / sd): q is not standardised
    assert torch.allclose(official, literal)
    standardised = torch.exp(torch.clip((q - q_mean) / q_std, -3, 3) / alpha)
    assert torch.allclose(fpmd.policy_weights(q, q_mean, q_std, alpha, "exp"), standardised)
    assert not torch.allclose(official, standardised)
    assert torch.equal(fpmd.policy_weights(q, q_mean, q_std, alpha, "uniform"), torch.ones(5))


def test_exp_weights_are_exp_q_over_lambda_up_to_a_constant(fpmd):
    q = torch.tensor([0.1, -0.4, 0.9, 0.0])
    weights = fpmd.policy_weights(q, torch.tensor(0.3), torch.tensor(1.0), torch.tensor(0.5), "exp")
    ratio = weights / torch.exp(q / 0.5)
    assert torch.allclose(ratio, ratio[0].expand(4))
    clipped = fpmd.policy_weights(torch.tensor([0.0, 100.0]), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), "exp")
    assert clipped.max() <= math.exp(3.0) + 1e-4  # z is clipped at 3


def test_two_adam_steps_per_critic_gradient(fpmd):
    torch.manual_seed(2)
    critic = nn.Sequential(nn.Linear(4, 16), nn.Mish(), nn.Linear(16, 1))
    twin, once = (nn.Sequential(nn.Linear(4, 16), nn.Mish(), nn.Linear(16, 1)) for _ in range(2))
    twin.load_state_dict(critic.state_dict())
    once.load_state_dict(critic.state_dict())
    inputs, targets = torch.randn(32, 4), torch.randn(32, 1)
    loss_of = lambda net: (net(inputs) - targets).pow(2).mean()

    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    fpmd.apply_gradient(optimizer, loss_of(critic), num_steps=2)
    reference = torch.optim.Adam(twin.parameters(), lr=1e-2)  # by hand: one gradient, two optimizer steps
    reference.zero_grad()
    loss_of(twin).backward()
    reference.step()
    reference.step()
    for got, expected in zip(critic.parameters(), twin.parameters()):
        assert torch.equal(got, expected)
    assert all(state["step"].item() == 2 for state in optimizer.state.values())

    fpmd.apply_gradient(torch.optim.Adam(once.parameters(), lr=1e-2), loss_of(once), num_steps=1)
    assert not torch.equal(once[0].weight, critic[0].weight)


def test_every_linear_layer_has_the_release_initialisation(fpmd):
    torch.manual_seed(3)
    args = fpmd.Args()
    networks = fpmd.make_networks(17, 6, torch.ones(6), args)
    # normal(0, 1/fan_in) truncated at +-2 std has std 0.8796 / sqrt(fan_in)
    truncated_std = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))
    layers = [layer for network in networks.values() for layer in network.modules() if isinstance(layer, nn.Linear)]
    assert len(layers) >= 3 * 4 + 2  # the policy's body and time embedding, two critics, their copies
    for layer in layers:
        bound = 1 / math.sqrt(layer.in_features)
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max().item() <= 2 * bound + 1e-6
        if layer.weight.numel() >= 4096:  # enough weights for a tight std estimate
            assert layer.weight.std().item() == pytest.approx(truncated_std * bound, rel=0.05)


def test_mish_is_x_tanh_softplus_x_with_its_gradient(fpmd):
    """The one-exp Mish of the flow files against the closed form x tanh(log(1 + e^x)) in float64, values and
    derivatives, from deep negatives through the clamp at 20 to 1e30."""
    x = torch.cat([torch.linspace(-60.0, 60.0, 24001), torch.tensor([-1e30, -100.0, 19.99, 20.0, 20.01, 100.0, 1e30])])
    x.requires_grad_(True)
    exact_input = x.detach().double().requires_grad_(True)
    exact = exact_input * torch.tanh(torch.nn.functional.softplus(exact_input))
    value = fpmd.mish(x)
    torch.testing.assert_close(value.double(), exact.detach(), rtol=2e-6, atol=1e-12)
    (gradient,), (exact_gradient,) = torch.autograd.grad(value.sum(), x), torch.autograd.grad(exact.sum(), exact_input)
    torch.testing.assert_close(gradient.double(), exact_gradient, rtol=1e-5, atol=1e-6)
    assert isinstance(fpmd.mlp(2, 1)[1], fpmd.Mish)  # the networks use it
