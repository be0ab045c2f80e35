"""MFPO's math against closed forms: C51 projection, the ADN log-likelihood of an exact Gaussian flow, the
ESS-weighted velocity estimate of a Gaussian Boltzmann target, Hutchinson's estimator, the (t, r) draws and the
truncated Gaussian proposal."""

import math

import pytest
import torch
import torch.nn as nn
from conftest import load_algo


def test_c51_projection_conserves_mass_and_shifts_the_mean_exactly():
    mfpo = load_algo("mfpo")
    torch.manual_seed(0)
    atoms = torch.linspace(-1600, 1600, 101)
    inner = torch.zeros(8, 101)
    inner[:, 40:61] = torch.randn(8, 21)  # mass on [-320, 320]: after the shift it stays inside the support
    logits = [inner.masked_fill(inner == 0, -1e9), (inner + torch.randn(8, 101)).masked_fill(inner == 0, -1e9)]
    rewards, terminations = torch.full((8,), 3.7), torch.tensor([0.0] * 7 + [1.0])
    log_probs, alpha, gamma = torch.randn(8), torch.tensor(0.2), 0.99
    for use_cdq in (True, False):
        projected = mfpo.soft_td_distribution(logits, rewards, terminations, log_probs, alpha, gamma, atoms, use_cdq)
        assert torch.allclose(projected.sum(-1), torch.ones(8), atol=1e-6)
        means = [(logit.softmax(-1) * atoms).sum(-1) for logit in logits]
        next_mean = torch.min(*means) if use_cdq else (means[0] + means[1]) / 2
        expected = rewards + gamma * (1 - terminations) * (next_mean - alpha * log_probs)
        assert torch.allclose((projected * atoms).sum(-1), expected, atol=1e-3)
    clipped = mfpo.c51_project(torch.full((1, 101), 1 / 101), (atoms * 3).clamp(-1600, 1600)[None], atoms)
    assert clipped.sum().item() == pytest.approx(1.0, abs=1e-6) and clipped[0, 0] > 0.3  # clipping keeps the mass


MU, SIGMA = torch.tensor([0.1, -0.1]), torch.tensor([0.5, 0.35])  # the policy's actions: N(MU, SIGMA^2)


def path_std(t):
    """x_t = (1 - t) a + t eps with a ~ N(MU, SIGMA^2): std s_t = sqrt((1 - t)^2 sigma^2 + t^2)."""
    return torch.sqrt((1 - t[:, None]) ** 2 * SIGMA**2 + t[:, None] ** 2)


class TimesAsFeatures(nn.Module):
    """MFPO's network interface for an exact f(obs, x, t, h): its time features are (t, h) themselves, which a sampler
    passes once for all its states."""

    def time_features(self, t, h):
        return torch.stack([t, h], -1)

    def forward(self, obs, x, t=None, h=None, time_features=None):
        if time_features is not None:
            t, h = time_features.expand(*x.shape[:-1], -1).unbind(-1)
        return self.of_times(obs, x, t, h)


class ExactGaussianFlow(TimesAsFeatures):
    """The exact mean velocity u(x, t, h) of that interpolation, affine in x: x_r = (1 - r) mu + s_r (x - (1 - t) mu) / s_t,
    u = (x - x_r) / h; at h = 0 the instantaneous velocity -mu + (d s_t / dt) / s_t (x - (1 - t) mu)."""

    def of_times(self, obs, x, t, h):
        r = t - h
        centred = x - (1 - t[:, None]) * MU
        x_r = (1 - r[:, None]) * MU + path_std(r) * centred / path_std(t)
        ds_dt = (t[:, None] - (1 - t[:, None]) * SIGMA**2) / path_std(t)
        instantaneous = -MU + ds_dt / path_std(t) * centred
        safe_h = torch.where(h > 1e-6, h, torch.ones_like(h))[:, None]
        return torch.where(h[:, None] > 1e-6, (x - x_r) / safe_h, instantaneous)


class SmallADN(TimesAsFeatures):
    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def of_times(self, obs, x, t, h):
        return self.net(torch.cat([obs, x, t[:, None], h[:, None]], -1))


def test_adn_log_likelihood_of_an_exact_gaussian_flow_matches_the_gaussian_density():
    mfpo = load_algo("mfpo")
    torch.manual_seed(0)
    policy, adn = ExactGaussianFlow(), SmallADN()
    optimizer = torch.optim.Adam(adn.parameters(), lr=3e-3)
    obs = torch.zeros(512, 1)
    for _ in range(1000):
        t, r = mfpo.sample_time_pairs(512, 0.75, torch.device("cpu"))
        actions = MU + SIGMA * torch.randn(512, 2)
        loss = mfpo.adn_loss_fn(adn, policy, obs, actions, t, r, num_probes=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    noise = torch.randn(4096, 2)
    with torch.no_grad():
        actions, log_probs = mfpo.sample_with_log_prob(policy, adn, torch.zeros(4096, 1), noise, 2)
    inside = (actions.abs() < 0.95).all(-1)  # the sampler clips to [-1, 1] without correcting the density
    assert torch.allclose(actions.median(0).values, MU, atol=0.04)  # the 2-step samples are N(MU, SIGMA^2), clipped
    exact = torch.distributions.Normal(MU, SIGMA).log_prob(actions).sum(-1)
    error = (log_probs - exact)[inside].abs().mean().item()
    adn_share = (log_probs - torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum(-1)).abs().mean().item()
    assert adn_share > 1.0  # the divergence integral matters here (~1.7 nats) ...
    assert error < 0.3  # ... and the ADN gets it right up to the noise of its brief, Hutchinson-fed training


def test_actor_target_of_eq_28_has_the_exact_mean_velocity_as_its_fixed_point():
    mfpo = load_algo("mfpo")
    torch.manual_seed(5)
    policy = ExactGaussianFlow()
    t, r = mfpo.sample_time_pairs(4096, 0.5, torch.device("cpu"))
    t, r = t.double(), r.double()
    x_t = torch.randn(4096, 2, dtype=torch.float64)
    obs = torch.zeros(4096, 1, dtype=torch.float64)
    velocity = policy(obs, x_t, t, torch.zeros_like(t))  # the exact instantaneous velocity at x_t
    assert mfpo.actor_loss_fn(policy, obs, x_t, t, r, velocity).item() < 1e-12  # u = v - (t - r) du/dt holds
    dudt = mfpo.time_derivative(lambda x, t, r: policy(obs, x, t, t - r), x_t, t, r, velocity)
    assert ((t - r)[:, None] * dudt).pow(2).mean().item() > 1e-3  # the (t - r) du/dt term matters here


def test_time_derivatives_of_the_networks_match_central_differences_along_the_flow():
    mfpo = load_algo("mfpo")
    torch.manual_seed(9)
    obs_dim, action_dim, batch = 5, 3, 6
    policy = mfpo.MeanFlowNetwork(obs_dim, action_dim, out_dim=action_dim).double()
    adn = mfpo.MeanFlowNetwork(obs_dim, action_dim, out_dim=1).double()
    obs, x, velocity = (torch.randn(batch, dim, dtype=torch.float64) for dim in (obs_dim, action_dim, action_dim))
    t, r = (times.double() for times in mfpo.sample_time_pairs(batch, 0.5, torch.device("cpu")))
    u = lambda x, t, r: policy(obs, x, t, t - r)
    delta = lambda x, t: adn(obs, x, t, t - r).squeeze(-1)
    eps = 1e-6  # d/ds f(x + s velocity, t + s, r) at s = 0, r held fixed
    with torch.no_grad():
        expected_dudt = (u(x + eps * velocity, t + eps, r) - u(x - eps * velocity, t - eps, r)) / (2 * eps)
        expected_ddelta = (delta(x + eps * velocity, t + eps) - delta(x - eps * velocity, t - eps)) / (2 * eps)
        dudt = mfpo.time_derivative(u, x, t, r, velocity)
        ddelta = mfpo.scalar_time_derivative(delta, x, t, velocity)  # one reverse pass over the batch's rows
    assert torch.allclose(dudt, expected_dudt, rtol=1e-6, atol=1e-8)
    assert torch.allclose(ddelta, expected_ddelta, rtol=1e-6, atol=1e-8)
    assert ddelta.abs().min() > 1e-3  # not trivially zero


def test_eager_vjp_and_jvp_are_torch_funcs_own():
    mfpo = load_algo("mfpo")  # eager they run on torch.autograd.grad; compiled, on torch.func (tests/test_compile.py)
    torch.manual_seed(12)
    policy = mfpo.MeanFlowNetwork(5, 3, out_dim=3).double()
    obs, x, velocity = (torch.randn(4, dim, dtype=torch.float64) for dim in (5, 3, 3))
    t, r = torch.rand(4, dtype=torch.float64), 0.5 * torch.rand(4, dtype=torch.float64)
    u = lambda x, t, r: policy(obs, x, t, t - r)
    cotangent = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        (out, vjp_fn), (expected_out, expected_vjp_fn) = mfpo.vjp(u, x, t, r), torch.func.vjp(u, x, t, r)
        dudt = mfpo.jvp(u, (x, t, r), (velocity, torch.ones_like(t), torch.zeros_like(r)))
        expected_dudt = torch.func.jvp(u, (x, t, r), (velocity, torch.ones_like(t), torch.zeros_like(r)))[1]
    assert torch.equal(out, expected_out) and not out.requires_grad
    assert all(torch.allclose(a, b, rtol=1e-12) for a, b in zip(vjp_fn(cotangent), expected_vjp_fn(cotangent)))
    assert torch.allclose(dudt, expected_dudt, rtol=1e-10, atol=1e-12)


class SinhFlow(TimesAsFeatures):
    """An exact flow that is not affine in x: from x_1 = noise, x_t = sinh(k(t) asinh(c x_1)) / c per dimension,
    k(t) = 0.3 + 0.7 t, so x_r = sinh(k(r) / k(t) asinh(c x_t)) / c. of_times: its mean velocity u = (x_t - x_r) / h,
    at h = 0 the velocity dx_t/dt = k'/k(t) asinh(c x) sqrt(1 + c^2 x^2) / c."""

    c = 2.0

    @staticmethod
    def k(t):
        return 0.3 + 0.7 * t[:, None]

    def to_time(self, x, t, r):
        return torch.sinh(self.k(r) / self.k(t) * torch.asinh(self.c * x)) / self.c

    def of_times(self, obs, x, t, h):
        safe_h = torch.where(h > 1e-9, h, torch.ones_like(h))[:, None]
        mean_velocity = (x - self.to_time(x, t, t - safe_h[:, 0])) / safe_h
        velocity = 0.7 / self.k(t) * torch.asinh(self.c * x) * torch.sqrt(1 + (self.c * x) ** 2) / self.c
        return torch.where(h[:, None] > 1e-9, mean_velocity, velocity)

    def divergence_terms(self, x, t):
        """d v_i / d x_i, the diagonal of the velocity's Jacobian."""
        cx = self.c * x
        return 0.7 / self.k(t) * (1 + cx * torch.asinh(cx) / torch.sqrt(1 + cx**2))


class SinhFlowAverageDivergence(TimesAsFeatures):
    """The exact delta of SinhFlow: h delta(x_t, t, h) = log |d x_t / d x_r| = sum_i log(k(t) / k(r))
    + log sqrt(1 + c^2 x_t^2) - log sqrt(1 + c^2 x_r^2); at h = 0 the divergence of the velocity."""

    def __init__(self, flow: SinhFlow):
        super().__init__()
        self.flow = flow

    def of_times(self, obs, x, t, h):
        safe_h = torch.where(h > 1e-9, h, torch.ones_like(h))[:, None]
        r = t - safe_h[:, 0]
        x_r = self.flow.to_time(x, t, r)
        c = self.flow.c
        log_jacobian = torch.log(self.flow.k(t) / self.flow.k(r)) + 0.5 * torch.log((1 + (c * x) ** 2) / (1 + (c * x_r) ** 2))
        average = log_jacobian.sum(-1, keepdim=True) / safe_h
        return torch.where(h[:, None] > 1e-9, average, self.flow.divergence_terms(x, t).sum(-1, keepdim=True))


def test_log_likelihood_of_a_non_affine_flow_takes_delta_at_the_pre_step_x():
    mfpo = load_algo("mfpo")
    torch.manual_seed(6)
    flow = SinhFlow()
    noise = torch.randn(4096, 2, dtype=torch.float64)
    actions, log_probs = mfpo.sample_with_log_prob(flow, SinhFlowAverageDivergence(flow), torch.zeros(4096, 1), noise, 2)
    exact_actions = flow.to_time(noise, torch.ones(4096, dtype=torch.float64), torch.zeros(4096, dtype=torch.float64))
    assert torch.allclose(actions, exact_actions, atol=1e-10) and actions.abs().max() < 1  # exact u: no clipping here
    # change of variables through the whole flow: log N(x_1) - log |d x_0 / d x_1|
    log_jacobian = torch.log(flow.k(torch.zeros(1)) * torch.sqrt((1 + (2 * exact_actions) ** 2) / (1 + (2 * noise) ** 2)))
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum(-1) - log_jacobian.sum(-1)
    assert (log_probs - exact).abs().max().item() < 1e-5  # the sampler's times are float32


def test_adn_target_of_eq_17_is_the_exact_delta_up_to_hutchinson_noise():
    mfpo = load_algo("mfpo")
    torch.manual_seed(7)
    flow = SinhFlow()
    obs, actions = torch.zeros(50_000, 1, dtype=torch.float64), 0.4 * torch.rand(50_000, 2, dtype=torch.float64) - 0.2
    t, r = (times.double() for times in mfpo.sample_time_pairs(50_000, 0.5, torch.device("cpu")))
    torch.manual_seed(8)
    loss = mfpo.adn_loss_fn(SinhFlowAverageDivergence(flow), flow, obs, actions, t, r, num_probes=2).item()
    # with the exact delta only the Hutchinson error remains: for a diagonal Jacobian J, e^T J e has variance
    # 2 sum_i J_ii^2, and 2 probes halve it. Rebuild the same x_t from the same random stream:
    torch.manual_seed(8)
    x_t = (1 - t[:, None]) * actions + t[:, None] * torch.randn_like(actions)
    expected = flow.divergence_terms(x_t, t).pow(2).sum(-1).mean().item()
    assert loss == pytest.approx(expected, rel=0.05)


def boltzmann_velocity_estimates(mfpo, x_t, t, repeats, num_policy_samples=16, num_gaussian_samples=32):
    """Many independent estimates at one (x_t, t) of the velocity of pi* = N(c, kappa^2 I) = exp(Q / alpha) / Z."""
    center, kappa, alpha = torch.tensor([0.1, -0.2]), 0.15, 0.5
    q = lambda a: -alpha * (a - center).pow(2).sum(-1) / (2 * kappa**2)
    policy = torch.distributions.Normal(torch.zeros(2), 0.3 * torch.ones(2))  # a proposal policy, not pi*
    x, tt = x_t.expand(repeats, 2), torch.full((repeats,), t)
    policy_actions = policy.sample((repeats, num_policy_samples))
    policy_log_probs = policy.log_prob(policy_actions).sum(-1)
    gaussian_actions = mfpo.gaussian_proposal(x, tt, num_gaussian_samples)
    combined = mfpo.ess_weighted_velocity(x, tt, policy_actions, policy_log_probs, q(policy_actions), gaussian_actions, q(gaussian_actions), alpha)
    gaussian_log_lik = -(x[:, None] - (1 - t) * policy_actions).pow(2).sum(-1) / (2 * t**2)
    policy_only, _ = mfpo.snis_velocity(x, tt, policy_actions, q(policy_actions) / alpha + gaussian_log_lik - policy_log_probs)
    gaussian_only, _ = mfpo.snis_velocity(x, tt, gaussian_actions, q(gaussian_actions) / alpha)
    # exact: a | x_t ~ N(m, 1 / precision), precision = 1 / kappa^2 + (1 - t)^2 / t^2
    precision = 1 / kappa**2 + (1 - t) ** 2 / t**2
    posterior_mean = (center / kappa**2 + (1 - t) * x_t / t**2) / precision
    return combined, policy_only, gaussian_only, (x_t - posterior_mean) / t


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_ess_weighted_velocity_is_the_exact_boltzmann_velocity_with_less_variance(t):
    mfpo = load_algo("mfpo")
    torch.manual_seed(1)
    x_t = torch.tensor([0.05, -0.1])
    combined, policy_only, gaussian_only, exact = boltzmann_velocity_estimates(mfpo, x_t, t, repeats=20_000)
    standard_error = combined.std(0) / math.sqrt(len(combined))
    snis_bias = 0.02  # self-normalized importance sampling is biased by O(1 / K) at K = 16 and 32 samples
    assert ((combined.mean(0) - exact).abs() < 4 * standard_error + snis_bias).all(), (combined.mean(0), exact)
    variance = lambda estimates: estimates.var(0).sum().item()
    assert variance(combined) < variance(policy_only) and variance(combined) < variance(gaussian_only)


def test_hutchinson_divergence_is_unbiased():
    mfpo = load_algo("mfpo")
    torch.manual_seed(2)
    layer1, layer2 = nn.Linear(5, 32), nn.Linear(32, 5)
    fn = lambda x: layer2(torch.tanh(layer1(x)))
    x = torch.randn(1, 5)
    exact_trace = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], x[0]).trace().item()
    with torch.no_grad():
        single_probe, _ = mfpo.hutchinson_divergence(fn, x.repeat(100_000, 1), num_probes=1)
    assert single_probe.mean().item() == pytest.approx(exact_trace, abs=4 * single_probe.std().item() / math.sqrt(100_000))
    assert single_probe.std().item() > 0.01  # a real random estimate, not the trace itself


def test_hutchinson_probes_in_one_pass_are_each_probe_through_the_full_jacobian():
    mfpo = load_algo("mfpo")
    torch.manual_seed(10)
    layer1, layer2 = nn.Linear(5 + 2, 16).double(), nn.Linear(16, 5).double()
    fn = lambda x, condition: layer2(torch.tanh(layer1(torch.cat([x, condition], -1))))  # rows conditioned apart
    x, condition = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    torch.manual_seed(11)
    with torch.no_grad():
        divergence, values = mfpo.hutchinson_divergence(fn, x, condition, num_probes=4)
    torch.manual_seed(11)  # the same probes, each row's Jacobian in full
    probes = torch.randn(4, 3, 5, dtype=torch.float64)
    jacobians = [torch.autograd.functional.jacobian(lambda v: fn(v[None], condition[i : i + 1])[0], x[i]) for i in range(3)]
    expected = torch.stack([(probes[:, i] @ jacobians[i] * probes[:, i]).sum(-1).mean() for i in range(3)])
    assert torch.allclose(divergence, expected, rtol=1e-10) and torch.allclose(values, fn(x, condition), rtol=1e-12)


@pytest.mark.parametrize("flow_ratio", [0.75, 0.2])
def test_time_pairs_are_ordered_with_the_configured_share_of_r_equal_t(flow_ratio):
    mfpo = load_algo("mfpo")
    torch.manual_seed(3)
    t, r = mfpo.sample_time_pairs(200_000, flow_ratio, torch.device("cpu"))
    assert (t >= r).all() and (t < 1).all() and (r > 0).all()
    assert (t == r).sum().item() == int(flow_ratio * 200_000)
    for batch_size in (256, 1001):  # exactly int(ratio * batch) rows of every batch, as the release does
        t_small, r_small = mfpo.sample_time_pairs(batch_size, flow_ratio, torch.device("cpu"))
        assert (t_small == r_small).sum().item() == int(flow_ratio * batch_size)
    # each draw is sigmoid(N(-0.4, 1)): its median is sigmoid(-0.4), so r < sigmoid(-0.4) < t for half of the r < t pairs
    split = (t != r) & (r < torch.sigmoid(torch.tensor(-0.4))) & (t > torch.sigmoid(torch.tensor(-0.4)))
    assert split.float().sum().item() / (t != r).float().sum().item() == pytest.approx(0.5, abs=0.01)


def test_gaussian_proposal_is_the_truncated_gaussian_factor():
    mfpo = load_algo("mfpo")
    torch.manual_seed(4)
    x_t, t = torch.tensor([[0.05, 0.9]]), torch.tensor([0.1])  # in dim 0 the truncation is far, in dim 1 it binds
    actions = mfpo.gaussian_proposal(x_t, t, 100_000)[0]
    assert actions.abs().max() <= 1.0 + 1e-5
    assert actions[:, 0].mean().item() == pytest.approx(0.05 / 0.9, abs=0.002)  # N(x_t / (1 - t), (t / (1 - t))^2)
    assert actions[:, 0].std().item() == pytest.approx(0.1 / 0.9, rel=0.01)
    assert actions[:, 1].max().item() > 0.99 and actions[:, 1].min().item() > 0.3  # mean 1, std 0.11, cut at 1


def test_gelu_is_the_tanh_approximation_with_its_first_and_second_derivatives():
    """MFPO's sigmoid-form GELU against the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in float64:
    values, derivatives and second derivatives (the jvps differentiate the backward pass), -1e30 to 1e30."""
    mfpo = load_algo("mfpo")
    x = torch.cat([torch.linspace(-12.0, 12.0, 24001), torch.tensor([-1e30, -100.0, -30.0, 30.0, 100.0, 1e30])]).requires_grad_(True)
    exact_input = x.detach().double().requires_grad_(True)
    exact = 0.5 * exact_input * (1 + torch.tanh(math.sqrt(2 / math.pi) * (exact_input + 0.044715 * exact_input**3)))
    value = mfpo.gelu(x)
    torch.testing.assert_close(value.double(), exact.detach(), rtol=2e-6, atol=1e-6)
    small = x.detach().abs() < 100  # beyond that both derivatives are 0 or 1 up to rounding, and x^3 overflows float32
    gradient, exact_gradient = (torch.autograd.grad(y.sum(), inputs, create_graph=True)[0] for y, inputs in ((value, x), (exact, exact_input)))
    torch.testing.assert_close(gradient[small].double(), exact_gradient[small], rtol=1e-5, atol=1e-6)
    second, exact_second = (torch.autograd.grad(g.sum(), inputs)[0] for g, inputs in ((gradient, x), (exact_gradient, exact_input)))
    # float32 sigmoid'' loses digits where sigmoid is near 1: 1.2e-5 at most here, against PyTorch's tanh kernel's 4e-7
    torch.testing.assert_close(second[small].double(), exact_second[small], rtol=1e-4, atol=3e-5)
    assert isinstance(mfpo.mlp(2, 1)[2], mfpo.GELU)  # the networks use it
