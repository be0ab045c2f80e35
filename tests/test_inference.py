"""The flow files' inference policies compute the time features of their fixed sampling times once per evaluation:
that must change the cost and nothing else. For the same noise they return the actions of the plain sampler, each step
calling the policy on the times of every state (FPMD: the paper's Euler / mean-velocity steps; MFPO: the file's
sample_with_log_prob and the target critics' best candidate)."""

from functools import partial

import pytest
import torch
from conftest import load_algo

OBS_DIM, ACTION_DIM = 11, 3


def fpmd_reference(step_times, module, networks, args, obs):
    """x <- x + f(s, x, times) / K from x0 ~ N(0, eval_prior_scale^2 I), f called with the step's times for each state."""
    x, num_steps = args.eval_prior_scale * torch.randn(len(obs), ACTION_DIM), args.eval_flow_steps
    for k in range(num_steps):
        x = x + networks["ema_policy"](obs, x, *step_times(torch.full((len(obs),), k / num_steps), num_steps)) / num_steps
    return x.clamp(-1.0, 1.0)


def mfpo_reference(module, networks, args, obs):
    obs_rep = obs.repeat_interleave(args.num_candidates, 0)
    candidates, _ = module.sample_with_log_prob(networks["policy"], None, obs_rep, torch.randn(len(obs_rep), ACTION_DIM), args.sampling_steps)
    atoms = torch.linspace(args.v_min, args.v_max, args.num_atoms)
    q = module.critic_q(networks["qf1_target"], networks["qf2_target"], obs_rep, candidates, atoms, args.use_cdq)
    best = q.view(len(obs), args.num_candidates).argmax(1)
    return candidates.view(len(obs), args.num_candidates, ACTION_DIM)[torch.arange(len(obs)), best]


CASES = {
    "fpmd_r": (lambda module, steps: module.Args(eval_flow_steps=steps), partial(fpmd_reference, lambda t, num_steps: (t,))),
    "fpmd_m": (lambda module, steps: module.Args(eval_flow_steps=steps), partial(fpmd_reference, lambda t, num_steps: (t, t + 1 / num_steps))),
    "mfpo": (lambda module, steps: module.Args(sampling_steps=steps, num_candidates=5), mfpo_reference),
}


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_prepared_inference_policy_acts_as_the_plain_sampler(name, steps):
    module = load_algo(name)
    make_args, reference = CASES[name]
    args = make_args(module, steps)
    torch.manual_seed(0)
    networks = module.make_networks(OBS_DIM, ACTION_DIM, torch.ones(ACTION_DIM), args)
    with torch.no_grad():
        for network in networks.values():  # weights away from their initial values (zero biases, tied targets)
            for parameter in network.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        policy, nfe = module.make_inference_policy(networks, ACTION_DIM, args)
        obs = torch.randn(64, OBS_DIM)
        torch.manual_seed(1)
        prepared = policy(obs)
        torch.manual_seed(1)
        plain = reference(module, networks, args, obs)
    assert nfe == steps * (args.num_candidates if name == "mfpo" else 1)
    assert prepared.shape == (64, ACTION_DIM) and prepared.abs().max() <= 1.0
    assert (prepared.abs() < 1.0).float().mean() > 0.25  # many actions are not clipped: the comparison sees them
    torch.testing.assert_close(prepared, plain, atol=1e-5, rtol=1e-5)
