"""MFPO: Mean Flow Policy Optimization (Cheng, Zhang, Dong 2026, arXiv 2604.14698).

Maximum-entropy soft policy iteration with a 2-step MeanFlow policy. The policy's mean velocity u(s, x, t, h),
h = t - r, carries noise at t = 1 to an action at t = 0 in T steps x_r = x_t - h u. An average divergence network
(ADN) delta(s, x, t, h), a MeanFlow of the velocity's divergence, gives the action log-likelihood along the same
T steps. The policy regresses onto the Boltzmann target exp(Q / alpha) through an importance-sampled estimate of its
instantaneous velocity that mixes a policy proposal and a Gaussian proposal by their effective sample sizes.

Time convention (MFPO and MeanFlow): action a at t = 0, noise eps at t = 1, x_t = (1 - t) a + t eps, v = eps - a,
r <= t. MeanFlow identity: u = v - (t - r) du/dt, du/dt = v d_x u + d_t u along the flow.

Equations implemented (numbers of arXiv 2604.14698; flowpolicy-rl's docs/algorithms.md has them all):
  sampler + log-lik  x_1 ~ N(0, I); per step: logp += h delta(s, x, t, h), x <- x - h u(s, x, t, h)   (eqs. 11, 18)
  Hutchinson         div v ~ mean_n e_n^T (d v / d x) e_n,  e_n ~ N(0, I)                               (eq. 16)
  ADN loss           (delta(s, x_t, t, h) - sg(div v - (t - r) d delta/dt))^2,  v = u(s, x_t, t, 0)      (eq. 17)
  Gaussian proposal  a_j = (x_t - t e_j) / (1 - t), e_j ~ N(0, I) truncated so that a_j in [-1, 1]^d    (eq. 23)
  SNIS velocity      v_k = sum_i w_i (x_t - a_i) / t,  w = softmax(log-weights),  ESS_k = 1 / sum_i w_i^2 (eqs. 24-26)
  ESS mixture        v_hat = (ESS_p v_p + ESS_g v_g) / (ESS_p + ESS_g)                                  (eq. 27)
  actor loss         (u(s, x_t, t, t - r) - sg(v_hat - (t - r) du/dt))^2                                (eq. 28)
  soft TD target     r + gamma (1 - term) (Z'(s', a') - alpha log pi(a'|s')), C51-projected             (eq. 29)
  temperature loss   alpha (H - H_target),  H = -mean log pi,  H_target = -0.5 dim(A)                  (eq. 30)

Usage: python mfpo.py --env-id Walker2d-v4 --seed 1

Defaults follow the authors' JAX release ("MFPO"): one env, one update per env step after 10k random steps, all Adam
learning rates 3e-4, tau 0.005 every step, a 101-atom C51 critic on [-1600, 1600] with clipped double Q (the
release turns it off for HalfCheetah: `--no-use-cdq`), K1 = 16 policy and K2 = 32 Gaussian proposal samples,
logit-normal (t, r) with r = t on exactly int(0.75 * batch) rows (--flow-ratio), 2 Hutchinson probes, temperature
from 0.01 toward entropy -0.5 per dimension, and at inference the paper's best of 10 two-step candidates under the
target critics (NFE = 2 x 10). Update order: critic, actor, ADN, temperature.

Release vs paper: no place is known where the paper's text and the release differ in what this file implements, but
one the paper does not state: float32 matmuls on a GPU run as TF32, JAX's default, with which the release trained
(full float32: --matmul-precision highest). Release details the paper leaves out, followed here: Xavier-uniform
weights and zero biases, LayerNorm (eps 1e-6) and tanh-approximate GELU (Flax's default) in every hidden layer,
learnable Fourier time features, and a sampler log-likelihood that is not corrected for the final clip to [-1, 1].
Where this file departs from the release:
  * the ADN's Hutchinson probes and its time / noise draws use independent random numbers (the release reuses one
    key for both: a bug, not copied);
  * du/dt is a Jacobian-vector product taken under no_grad by two reverse-mode passes (see jvp), d delta/dt one
    reverse pass, the Hutchinson terms e^T J e of all probes one forward and one reverse pass that also give the ADN's
    velocity (the same numbers), and the predictions plain forward passes (the same gradient as differentiating
    through the jvp, with less memory);
  * the policy and the Gaussian proposals are scored in two calls per critic, where the release makes one (the same
    Q; one call measured ~10 % slower on a CPU);
  * PyTorch instead of JAX (fused Adam; --compile does what jit does there), Gymnasium 1.x MuJoCo v4 envs.
"""

import copy
import csv
import importlib.util
import math
import os
import pickle
import random
import shutil
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (the saved model is runs/{run_name}/{exp_name}.pt)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, train on CUDA when it is available (else CPU)"""
    track: bool = False
    """if toggled, log the run to Weights & Biases (every TensorBoard scalar, the arguments, this file)"""
    wandb_project_name: str = "flowpolicy-rl"
    """the W&B project of --track"""
    wandb_entity: str | None = None
    """the W&B entity (team) of --track; none: your default entity"""
    capture_video: bool = False
    """whether to record videos of the first training env to videos/{run_name} (needs moviepy and a GL backend)"""
    save_model: bool = False
    """whether to save the networks and the arguments to runs/{run_name}/{exp_name}.pt at the end"""
    run_name: str = ""
    """name of the run directory under runs/ (one folder name); empty means {env}__{exp_name}__{seed}__{unix time}, where
    {env} is the env id with '/' as '-' (dm_control/cheetah-run-v0 -> dm_control-cheetah-run-v0)"""
    env_id: str = "Hopper-v4"
    """the id of the Gymnasium environment (Box action space), or a DeepMind Control Suite task as
    dm_control/<domain>-<task>-v0 (needs dm-control and shimmy)"""
    total_timesteps: int = 1_000_000
    """total env steps of the experiment, summed over the vector envs"""
    num_envs: int = 1
    """number of parallel training envs; one gradient update per vector step"""
    buffer_size: int = 1_000_000
    """the replay memory size, in transitions"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient of the Polyak averages"""
    batch_size: int = 256
    """the batch size of sample from the replay memory"""
    learning_starts: int = 10_000
    """env steps of uniform random actions before learning starts"""
    eval_freq: int = 5_000
    """evaluate the inference policy every this many env steps (and at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, run in parallel envs seeded once from seed + 10_000 (new starts every evaluation)"""
    checkpoint_freq: int = 0
    """write runs/{run_name}/checkpoint.pt every this many env steps (0: only when stopped by SIGTERM)"""
    resume: bool = False
    """continue runs/{run_name} from its checkpoint.pt; pass the run's other flags unchanged"""
    compile: bool = False
    """if toggled, torch.compile the update steps and the acting policy (CUDA graphs on a GPU); compiling takes minutes"""
    matmul_precision: Literal["highest", "high"] = "high"
    """float32 matmuls on CUDA: high = TF32 where the GPU has it (JAX's default, with which the release trained),
    highest = full float32 (PyTorch's default); no effect on a CPU"""

    # Algorithm specific arguments
    policy_lr: float = 3e-4
    """the learning rate of the policy (mean velocity) optimizer"""
    q_lr: float = 3e-4
    """the learning rate of the critics' optimizer"""
    adn_lr: float = 3e-4
    """the learning rate of the average divergence network's optimizer"""
    alpha_lr: float = 3e-4
    """the learning rate of log alpha"""
    alpha_init: float = 0.01
    """initial temperature alpha"""
    target_entropy_per_dim: float = -0.5
    """the temperature drives the policy entropy toward this times dim(A)"""
    sampling_steps: int = 2
    """T, the mean-velocity steps of the sampler (NFE per action, twice that with the log-likelihood)"""
    num_policy_samples: int = 16
    """K1, policy-proposal samples per state in the velocity estimate"""
    num_gaussian_samples: int = 32
    """K2, Gaussian-proposal samples per state in the velocity estimate"""
    div_samples: int = 2
    """Hutchinson probes of the divergence in the ADN target"""
    flow_ratio: float = 0.75
    """share of the (t, r) pairs with r = t (plain flow matching), exactly int(ratio * batch) rows; the rest has r < t"""
    num_atoms: int = 101
    """atoms of the C51 return distribution"""
    v_min: float = -1600.0
    """the lowest atom of the return distribution"""
    v_max: float = 1600.0
    """the highest atom of the return distribution"""
    use_cdq: bool = True
    """clipped double Q: combine the two critics by min (else by mean)"""
    num_candidates: int = 10
    """candidate actions of the inference policy, the best under the target critics is taken"""


def find_arg_problem(args: Args) -> str | None:
    """The first invalid flag, as a one-line message, or None. Runs before any env is made."""
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_freq", "eval_episodes"]
    positive += ["policy_lr", "q_lr", "adn_lr", "alpha_lr", "alpha_init", "sampling_steps", "num_policy_samples"]
    positive += ["num_gaussian_samples", "div_samples", "num_candidates"]
    for name in positive:
        if not getattr(args, name) > 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
    if args.batch_size > args.buffer_size:
        return f"--batch-size ({args.batch_size}) must not exceed --buffer-size ({args.buffer_size})"
    if args.learning_starts < 0:
        return f"--learning-starts must be >= 0, got {args.learning_starts}"
    if args.checkpoint_freq < 0:
        return f"--checkpoint-freq must be >= 0, got {args.checkpoint_freq}"
    if "/" in args.run_name:
        return f"--run-name must be one folder name, without '/', got {args.run_name!r}"
    if args.resume and not args.run_name:
        return "--resume needs the --run-name of the run to continue"
    if args.track and importlib.util.find_spec("wandb") is None:
        return "--track needs wandb, which is not installed: pip install wandb"
    if args.capture_video and importlib.util.find_spec("moviepy") is None:
        return "--capture-video needs moviepy, which is not installed: pip install moviepy"
    if args.compile and (problem := find_compile_problem(torch.cuda.is_available() and args.cuda)):
        return problem
    if not 0.0 <= args.gamma <= 1.0:
        return f"--gamma must lie in [0, 1], got {args.gamma}"
    if not 0.0 < args.tau <= 1.0:
        return f"--tau must lie in (0, 1], got {args.tau}"
    if not 0.0 <= args.flow_ratio <= 1.0:
        return f"--flow-ratio must lie in [0, 1], got {args.flow_ratio}"
    if args.num_atoms < 2:
        return f"--num-atoms must be at least 2, got {args.num_atoms}"
    if not args.v_min < args.v_max:
        return f"--v-min ({args.v_min}) must be below --v-max ({args.v_max})"
    return find_env_problem(args.env_id)


def find_env_problem(env_id: str) -> str | None:
    """Why `env_id` names no task here, as a one-line message, or None. The DeepMind Control Suite's ids
    (dm_control/<domain>-<task>-v0) exist once shimmy is imported: importing it registers them."""
    if env_id.startswith("dm_control/"):
        try:
            import_dm_control()
        except ImportError:
            return f'--env-id {env_id}: the DeepMind Control Suite needs dm-control and shimmy: pip install dm-control "shimmy[dm-control]"'
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        return f"--env-id {env_id!r}: {err}"
    return None


def import_dm_control() -> None:
    """Import dm_control and shimmy, which registers the dm_control/ ids. dm_control looks for an X11 display to render
    with first and warns where there is none; a machine without one renders with MUJOCO_GL=egl in any case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*DISPLAY environment variable is missing")
        import dm_control  # noqa: F401
        import shimmy  # noqa: F401


def step_schedule(args: Args) -> tuple[int, int]:
    """(the env step the budget counts from, the final env step): --total-timesteps counts every env step."""
    return 0, args.total_timesteps


def find_compile_problem(on_cuda: bool) -> str | None:
    """What --compile needs and this machine lacks, as a one-line message: Triton on CUDA, a C++ compiler on a CPU."""
    if on_cuda and importlib.util.find_spec("triton") is None:
        return "--compile on CUDA needs Triton, which is not installed: pip install triton"
    compiler = os.environ.get("CXX", "g++")  # the compiler inductor builds CPU kernels with
    if not on_cuda and shutil.which(compiler) is None:
        return f"--compile on a CPU needs a C++ compiler: {compiler} is not on the PATH (or set CXX to yours)"
    return None


def make_gym_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """gym.make, and a DeepMind Control Suite task made like the others: its Dict of float64 observations becomes one
    float32 vector (the Dict's keys in order), and its videos play in real time (shimmy says 10 frames/s)."""
    if not env_id.startswith("dm_control/"):
        return gym.make(env_id, render_mode=render_mode)
    import_dm_control()
    env = gym.make(env_id, render_mode=render_mode)
    with warnings.catch_warnings():  # the bounds are +-inf: float32 loses nothing of them
        warnings.filterwarnings("ignore", ".*precision lowered by casting to float32")
        env = gym.wrappers.DtypeObservation(gym.wrappers.FlattenObservation(env), np.float32)
    env.metadata = {**env.metadata, "render_fps": round(1 / env.unwrapped.dt)}  # one frame per control step
    return env


def make_env(env_id: str, seed: int, idx: int, capture_video: bool, run_name: str):
    def thunk():
        if capture_video and idx == 0:
            env = make_gym_env(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = make_gym_env(env_id)
        env.action_space.seed(seed)
        return env

    return thunk


def make_vector_env(env_id: str, seed: int, num_envs: int, capture_video: bool = False, run_name: str = ""):
    """Gymnasium 1.x vector env whose finished sub-envs reset in the same step (their last obs is `final_obs`)."""
    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id, seed + i, i, capture_video, run_name) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def find_space_problem(envs, env_id: str) -> str | None:
    """This file handles flat Box observations and Box actions only."""
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        return f"--env-id {env_id}: action space {envs.single_action_space} is not a Box; continuous actions only"
    if not isinstance(envs.single_observation_space, gym.spaces.Box) or len(envs.single_observation_space.shape) != 1:
        return f"--env-id {env_id}: observation space {envs.single_observation_space} is not a flat Box"
    return None


# ALGO LOGIC: initialize agent here:
LAYER_NORM_EPS = 1e-6  # Flax's default, the release's


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU with Flax's default tanh approximation, 0.5 x (1 + tanh(z)) with z = sqrt(2 / pi) (x + 0.044715 x^3), on a
    CPU as x sigmoid(2 z) (the same function: 0.5 (1 + tanh(z)) = sigmoid(2 z)), with 2 z = x (a + b x^2) from one
    addcmul. PyTorch's CPU kernel for the tanh form was 30 % of MFPO's training iteration at full size; sigmoid's
    kernel is several times faster than tanh's, and this form takes about two thirds of the time
    (docs/measurements.md), equal to float32 rounding. A form on torch.exp, x / (1 + exp(-2 z)), is faster forward
    only where MKL's vector math is on its fast path, and slower with its backward everywhere measured. On CUDA F.gelu
    is one fused kernel, and an iteration there costs the kernels it launches: that one is kept."""
    if x.is_cuda:
        return F.gelu(x, approximate="tanh")
    twice_z_over_x = torch.addcmul(x.new_full((), 2 * math.sqrt(2 / math.pi)), x, x, value=2 * math.sqrt(2 / math.pi) * 0.044715)
    return x * torch.sigmoid(x * twice_z_over_x)


class GELU(nn.Module):
    """The GELU layer (tanh approximation), as gelu computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)


ROW_BLOCK = 1024  # rows of a 256-wide layer whose activations (1 MB) stay in a CPU core's cache


def in_row_blocks(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """layers(x), on a CPU ROW_BLOCK rows at a time: every layer acts on each row alone, so the result is the same, and
    a block's activations stay in the core's cache from one layer to the next, where those of the critics' 12288-row
    proposal batches went to memory and back at every layer (a critic's forward there took 1.5x as long,
    docs/measurements.md). On CUDA one call. Compiled code on a CPU traces the loop over the blocks: inductor fuses each
    block's elementwise work, and the blocks keep it in cache (the compiled flow files ran 1.04-1.06x as fast as with
    one call, docs/measurements.md)."""
    if x.is_cuda or x[..., 0].numel() <= ROW_BLOCK:
        return layers(x)
    rows = x.reshape(-1, x.shape[-1])  # a sampler's (states, particles, features): every row alike
    return torch.cat([layers(block) for block in rows.split(ROW_BLOCK)]).view(*x.shape[:-1], -1)


class MLP(nn.Sequential):
    """The layers in order, as nn.Sequential; a batch of many rows in blocks of rows (in_row_blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_row_blocks(super().forward, x)


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, num_hidden: int = 3) -> MLP:
    """num_hidden x (Linear -> LayerNorm -> GELU), then a linear output: the release's body of every network, with
    Flax's default GELU, the tanh approximation."""
    layers = []
    for i in range(num_hidden):
        linear = nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim)
        layers += [linear, nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS), GELU()]
    return MLP(*layers, nn.Linear(hidden_dim, out_dim))


def xavier_init(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every Linear layer, as in the official code."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


class FourierTimeEmbedding(nn.Module):
    """Learnable Fourier features: f = 2 pi t W^T, W ~ N(0, 0.2^2) of shape (64, 1) and trained,
    [cos f, sin f] (128) -> Linear 64 -> GELU (tanh approximation) -> Linear 64."""

    def __init__(self, num_frequencies: int = 64, dim: int = 64):
        super().__init__()
        self.frequencies = nn.Parameter(0.2 * torch.randn(num_frequencies, 1))
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, dim), GELU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[..., None] * self.frequencies[:, 0]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], -1))


class MeanFlowNetwork(nn.Module):
    """f(s, x, t, h) conditioned on emb_t(t) + emb_h(h), h = t - r: the policy's mean velocity u (out_dim = d)
    and the average divergence network delta (out_dim = 1) share this architecture, not their weights."""

    def __init__(self, obs_dim: int, action_dim: int, out_dim: int):
        super().__init__()
        self.t_embedding = FourierTimeEmbedding()
        self.h_embedding = FourierTimeEmbedding()
        self.net = mlp(action_dim + obs_dim + 64, out_dim)
        xavier_init(self.net)
        xavier_init(self.t_embedding.mlp)
        xavier_init(self.h_embedding.mlp)

    def time_features(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The inputs that depend on time alone (the last columns of the first layer's input)."""
        return self.t_embedding(t) + self.h_embedding(h)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t=None, h=None, time_features=None) -> torch.Tensor:
        """f(s, x, t, h); a sampler passes the time features of its step's (t, h) instead, one row for all its states."""
        time_features = self.time_features(t, h) if time_features is None else time_features
        return self.net(torch.cat([x, obs, time_features.expand(*x.shape[:-1], -1)], -1))


class DistributionalQNetwork(nn.Module):
    """C51 critic: logits of the return distribution over fixed atoms in [v_min, v_max]."""

    def __init__(self, obs_dim: int, action_dim: int, num_atoms: int):
        super().__init__()
        self.net = xavier_init(mlp(obs_dim + action_dim, num_atoms))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], -1))


def make_networks(obs_dim: int, action_dim: int, action_scale: torch.Tensor, args: Args) -> dict[str, nn.Module]:
    """Every network of the agent, targets included; the keys name them in the saved model. The five files share this
    signature, so that the tools build any file's networks alike; a file ignores what it does not need."""
    policy = MeanFlowNetwork(obs_dim, action_dim, out_dim=action_dim)
    adn = MeanFlowNetwork(obs_dim, action_dim, out_dim=1)  # the average divergence network
    qf1, qf2 = (DistributionalQNetwork(obs_dim, action_dim, args.num_atoms) for _ in range(2))
    return {"policy": policy, "adn": adn, "qf1": qf1, "qf2": qf2, "qf1_target": copy.deepcopy(qf1), "qf2_target": copy.deepcopy(qf2)}


def make_inference_policy(networks: dict[str, nn.Module], action_dim: int, args: Args):  # the five files' signature
    """The evaluation policy obs -> action in [-1, 1]^d: the best of --num-candidates T-step samples under the target
    critics; and its network evaluations per action (NFE = T x candidates, the critics not counted).
    Made once per evaluation, for fixed weights: the time features of the sampler's fixed steps do not depend on the
    state or the action, so they are computed here once, not once per action."""
    policy, qf1_target, qf2_target = networks["policy"], networks["qf1_target"], networks["qf2_target"]
    num_steps, step = args.sampling_steps, 1.0 / args.sampling_steps
    atoms = torch.linspace(args.v_min, args.v_max, args.num_atoms, device=next(policy.parameters()).device)
    with torch.no_grad():
        time_features = sampling_time_features(policy, num_steps, atoms.device)

    def inference_policy(obs: torch.Tensor) -> torch.Tensor:
        obs_rep = obs.repeat_interleave(args.num_candidates, 0)
        x = torch.randn(len(obs_rep), action_dim, device=obs.device)
        for features in time_features:  # sample_with_log_prob: x <- x - h u(s, x, t, h)   (eq. 11)
            x = x - step * policy(obs_rep, x, time_features=features)
        candidates = x.clamp(-1.0, 1.0).view(len(obs), args.num_candidates, action_dim)
        q = critic_q(qf1_target, qf2_target, obs_rep, candidates.flatten(0, 1), atoms, args.use_cdq)
        return candidates[torch.arange(len(obs), device=obs.device), q.view(len(obs), -1).argmax(1)]

    return inference_policy, num_steps * args.num_candidates


class ReplayBuffer:
    """Transitions (s, a, r, s', terminated) in tensors preallocated on the training device; a batch is a gather."""

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminations")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device, seed: int):
        self.capacity, self.size, self.pos, self.device = capacity, 0, 0, device
        self.obs = torch.zeros((capacity, obs_dim), device=device)
        self.next_obs = torch.zeros((capacity, obs_dim), device=device)
        self.actions = torch.zeros((capacity, action_dim), device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminations = torch.zeros(capacity, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def add(self, obs, next_obs, actions: torch.Tensor, rewards, terminations) -> None:
        """One vector step: numpy arrays from the envs, the policy-space actions already on the device."""
        idx = (self.pos + torch.arange(len(obs), device=self.device)) % self.capacity
        self.obs[idx] = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        self.next_obs[idx] = torch.as_tensor(next_obs, dtype=torch.float32, device=self.device)
        self.actions[idx] = actions
        self.rewards[idx] = torch.as_tensor(rewards, dtype=torch.float32, device=self.device)
        self.terminations[idx] = torch.as_tensor(terminations, dtype=torch.float32, device=self.device)
        self.pos = (self.pos + len(obs)) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminations[idx]

    def state_dict(self) -> dict:
        """The filled rows only, copied to the host, with the write position and the sampling generator."""
        rows = {name: getattr(self, name)[: self.size].to("cpu", copy=True) for name in self.FIELDS}
        return {"size": self.size, "pos": self.pos, "generator": self.generator.get_state(), **rows}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = state["size"], state["pos"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = state[name].to(self.device)
        self.generator.set_state(state["generator"])


# ALGO LOGIC: the math, as pure functions (tests import these)
LOGIT_NORMAL_MEAN, LOGIT_NORMAL_STD = -0.4, 1.0  # (t, r) draws: sigmoid(N(-0.4, 1)), MeanFlow's default
def final_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true s' of each sub-env: under SAME_STEP autoreset a finished one already shows its reset obs."""
    if "_final_obs" not in infos:
        return next_obs
    real_next_obs = next_obs.copy()
    for i in np.flatnonzero(infos["_final_obs"]):
        real_next_obs[i] = infos["final_obs"][i]
    return real_next_obs


def action_to_env(action: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> np.ndarray:
    """Clip policy actions to [-1, 1]^d and map them linearly onto the env's bounds, per dimension (Humanoid is
    +-0.4). FPMD's exploration noise may leave [-1, 1]: the buffer keeps that action, the env gets it clipped."""
    return (low + (action.clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low)).cpu().numpy()


def td_target(rewards, terminations, next_value, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) V(s'): only termination cuts the bootstrap, a time-limit truncation does not."""
    return rewards + gamma * (1.0 - terminations) * next_value


def sampling_time_features(network: nn.Module, num_steps: int, device: torch.device) -> torch.Tensor:
    """The time features of the sampler's T steps (t, h) = (1 - k / T, 1 / T), k = 0 .. T - 1, row k for step k: the
    same for every state, so a sampler computes them once per call."""
    times = 1.0 - torch.arange(num_steps, device=device) / num_steps
    return network.time_features(times, torch.full_like(times, 1.0 / num_steps))


def sample_with_log_prob(policy, adn, obs: torch.Tensor, noise: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """eqs. 11, 18: T mean-velocity steps x <- x - h u(s, x, t, h) from noise at t = 1 to t = 0, h = 1 / T; with an
    ADN, log pi(a|s) = log N(noise; 0, I) + sum_steps h delta(s, x, t, h), delta taken at the pre-step x.
    Returns clip(x, -1, 1) (its log-likelihood is not corrected for the clip) and the log-likelihood, or None."""
    x, step = noise, 1.0 / num_steps
    policy_features = sampling_time_features(policy, num_steps, x.device)
    adn_features = sampling_time_features(adn, num_steps, x.device) if adn is not None else None
    log_prob = -0.5 * (noise.pow(2) + math.log(2 * math.pi)).sum(-1) if adn is not None else None
    for k in range(num_steps):
        if adn is not None:
            log_prob = log_prob + step * adn(obs, x, time_features=adn_features[k]).squeeze(-1)
        x = x - step * policy(obs, x, time_features=policy_features[k])
    return x.clamp(-1.0, 1.0), log_prob


def critic_q(qf1, qf2, obs: torch.Tensor, actions: torch.Tensor, atoms: torch.Tensor, use_cdq: bool) -> torch.Tensor:
    """Q = sum_i softmax(logits)_i atom_i of each critic, combined by min (clipped double Q) or mean."""
    q1 = qf1(obs, actions).softmax(-1) @ atoms
    q2 = qf2(obs, actions).softmax(-1) @ atoms
    return torch.min(q1, q2) if use_cdq else (q1 + q2) / 2


def c51_project(probs: torch.Tensor, shifted_atoms: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Project masses `probs` sitting on `shifted_atoms` (within [v_min, v_max]) onto the fixed `atoms`: each mass
    is split between its two neighbouring atoms in proportion to closeness (C51), which conserves the mass and the
    mean."""
    position = (shifted_atoms - atoms[0]) / (atoms[1] - atoms[0])  # in [0, num_atoms - 1]
    upper_share = position - position.floor()
    lower = position.nan_to_num(0.0).floor().clamp(0, len(atoms) - 1).long()  # a NaN must reach the loss, not the index
    projected = torch.zeros_like(probs).scatter_add_(-1, lower, probs * (1 - upper_share))
    return projected.scatter_add_(-1, (lower + 1).clamp(max=len(atoms) - 1), probs * upper_share)


def soft_td_distribution(target_logits: list[torch.Tensor], rewards, terminations, next_log_probs, alpha, gamma: float,
                         atoms: torch.Tensor, use_cdq: bool) -> torch.Tensor:
    """eq. 29 on C51: atoms shifted to r + gamma (1 - term) (z - alpha log pi(a'|s')), clipped, and each target
    critic's distribution projected onto the atoms; CDQ keeps, per sample, the projection of smaller mean."""
    next_values = atoms - alpha * next_log_probs[:, None]
    shifted = td_target(rewards[:, None], terminations[:, None], next_values, gamma).clamp(atoms[0], atoms[-1])
    projected = [c51_project(logits.softmax(-1), shifted, atoms) for logits in target_logits]
    if not use_cdq:
        return (projected[0] + projected[1]) / 2
    first_is_lower = ((projected[0] * atoms).sum(-1) <= (projected[1] * atoms).sum(-1))[:, None]
    return torch.where(first_is_lower, projected[0], projected[1])


def sample_time_pairs(batch_size: int, flow_ratio: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r) with t >= r: the max and the min of two logit-normal draws sigmoid(N(-0.4, 1)); r = t on exactly
    int(flow_ratio * batch_size) rows, the first ones, as the release does (the rows of a batch are i.i.d.)."""
    draws = torch.sigmoid(LOGIT_NORMAL_MEAN + LOGIT_NORMAL_STD * torch.randn(2, batch_size, device=device))
    t, r = draws.max(0).values, draws.min(0).values
    return t, torch.where(torch.arange(batch_size, device=device) < int(flow_ratio * batch_size), t, r)


def gaussian_proposal(x_t: torch.Tensor, t: torch.Tensor, num_samples: int) -> torch.Tensor:
    """eq. 23: a = (x_t - t e) / (1 - t), the Gaussian factor N(x_t; (1 - t) a, t^2 I) of p(a | x_t) read as a
    density over a, with e ~ N(0, I) truncated (inverse-CDF sampling) so that a lies in [-1, 1]^d; where the
    normal CDF saturates, e falls back to a standard normal draw clipped to the interval. x_t: (B, d) -> (B, K2, d)."""
    x, t = x_t[:, None, :], t[:, None, None]
    e_low, e_high = (x - (1 - t)) / t, (x + (1 - t)) / t  # a <= 1 and a >= -1
    cdf_low, cdf_high = torch.special.ndtr(e_low), torch.special.ndtr(e_high)
    uniform = torch.rand(x_t.shape[0], num_samples, x_t.shape[1], device=x_t.device)
    e = torch.special.ndtri(cdf_low + uniform * (cdf_high - cdf_low))
    e = torch.where(torch.isfinite(e), e, torch.maximum(torch.minimum(torch.randn_like(e), e_high), e_low))
    return (x - t * e) / (1 - t)


def snis_velocity(x_t: torch.Tensor, t: torch.Tensor, actions: torch.Tensor, log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eqs. 24-26: the self-normalized importance-sampling estimate sum_i w_i (x_t - a_i) / t of E[eps - a | x_t]
    from K proposals a_i (B, K, d), and its effective sample size 1 / sum_i w_i^2."""
    weights = log_weights.softmax(-1)
    velocity = (weights[..., None] * (x_t[:, None, :] - actions)).sum(1) / t[:, None]
    return velocity, 1.0 / weights.pow(2).sum(-1)


def ess_weighted_velocity(x_t, t, policy_actions, policy_log_probs, policy_q, gaussian_actions, gaussian_q, alpha) -> torch.Tensor:
    """eq. 27: the two SNIS estimates of the instantaneous velocity of the Boltzmann target pi* ~ exp(Q / alpha),
    mixed by their ESS. Log-weights: policy proposal Q / alpha + log N(x_t; (1 - t) a, t^2) - log pi(a),
    Gaussian proposal Q / alpha (its density is the Gaussian factor itself)."""
    gaussian_log_lik = -(x_t[:, None, :] - (1 - t[:, None, None]) * policy_actions).pow(2).sum(-1) / (2 * t[:, None] ** 2)
    v_policy, ess_policy = snis_velocity(x_t, t, policy_actions, policy_q / alpha + gaussian_log_lik - policy_log_probs)
    v_gaussian, ess_gaussian = snis_velocity(x_t, t, gaussian_actions, gaussian_q / alpha)
    return (ess_policy[:, None] * v_policy + ess_gaussian[:, None] * v_gaussian) / (ess_policy + ess_gaussian)[:, None]


def vjp(fn, *primals: torch.Tensor):
    """fn(*primals) and its vjp function u -> (u^T d fn / d primal, ...), as torch.func.vjp returns them, without a
    graph back to the primals' history (the callers run under no_grad). Eager, by torch.autograd.grad: torch.func wraps
    every op it sees, 13-23 % of the flow losses' time at batch 2 (docs/measurements.md). Compiled, by torch.func.vjp:
    torch.compile traces it in one graph, where autograd.grad breaks the graph."""
    if torch.compiler.is_compiling():
        return torch.func.vjp(fn, *primals)
    with torch.enable_grad():
        primals = [primal.detach().requires_grad_() for primal in primals]
        out = fn(*primals)

    def vjp_fn(cotangent):
        differentiable = torch.is_tensor(cotangent) and cotangent.requires_grad  # as in jvp, whose second pass needs it
        with torch.enable_grad():
            return torch.autograd.grad(out, primals, cotangent, create_graph=differentiable, materialize_grads=True)

    return torch.utils._pytree.tree_map(torch.Tensor.detach, out), vjp_fn


def jvp(fn, primals: tuple, tangents: tuple) -> torch.Tensor:
    """J v, the derivative of fn at primals along tangents, by two reverse-mode passes: u -> J^T u (a vjp) is linear in
    u, so its own vjp at any u, applied to v, is J v. torch.func.jvp's forward mode gives the same numbers, but
    torch.compile cannot trace it through LayerNorm, and eager it takes a slow path (measured in
    docs/measurements.md)."""
    out, vjp_fn = vjp(fn, *primals)
    return vjp(vjp_fn, torch.zeros_like(out))[1](tangents)[0]


def time_derivative(fn, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """df/dt = velocity d_x f + d_t f along the flow (r held fixed): the jvp of f(x, t, r) with tangent (velocity, 1, 0).
    MeanFlow targets are value - (t - r) df/dt (eqs. 17, 28)."""
    return jvp(fn, (x, t, r), (velocity, torch.ones_like(t), torch.zeros_like(r)))


def scalar_time_derivative(fn, x: torch.Tensor, t: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """time_derivative for an fn(x, t) of one value per row (the ADN's delta): the chain rule
    df/dt = velocity . grad_x f + d_t f, both gradients from one reverse pass of sum f (the rows are independent: each
    row's gradient is its own). The same numbers as the jvp's two passes, at about half the cost at small batches."""
    _, vjp_fn = vjp(fn, x, t)
    grad_x, grad_t = vjp_fn(torch.ones_like(t))
    return (velocity * grad_x).sum(-1) + grad_t


def hutchinson_divergence(fn, x: torch.Tensor, *conditions: torch.Tensor, num_probes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """eq. 16: div_x f(x, c) ~ mean_n e_n^T (df/dx) e_n with e_n ~ N(0, I), returned with f(x, c). e_n^T (df/dx) is a
    vjp, and (e^T J) e = e^T (J e): no jvp is needed. f acts on each row alone, so num_probes copies of the rows (copy n
    meets probe n) take all probes through one forward and one reverse pass. The probes are drawn in one call: compiled
    code may reorder independent random draws, and one draw keeps its numbers those of eager code."""
    probes = torch.randn(num_probes, *x.shape, dtype=x.dtype, device=x.device)
    copies = [torch.cat([tensor] * num_probes) for tensor in conditions]
    values, vjp_fn = vjp(lambda x: fn(x, *copies), torch.cat([x] * num_probes))
    probe_jacobians = vjp_fn(probes.flatten(0, 1))[0].view_as(probes)  # row n of copy i: e_n^T J(x_i)
    return (probes * probe_jacobians).sum(-1).mean(0), values[: len(x)]


def actor_loss_fn(policy, obs: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """eq. 28: mean ||u(s, x_t, t, t - r) - sg(v_hat - (t - r) du/dt)||^2, v_hat the estimated velocity at x_t."""
    with torch.no_grad():
        dudt = time_derivative(lambda x, t, r: policy(obs, x, t, t - r), x_t, t, r, velocity)
        target = velocity - (t - r).clamp(0.0, 1.0)[:, None] * dudt
    return (policy(obs, x_t, t, t - r) - target).pow(2).mean()


def adn_loss_fn(adn, policy, obs: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, r: torch.Tensor, num_probes: int) -> torch.Tensor:
    """eq. 17: regress delta(s, x_t, t, t - r) onto div v - (t - r) d delta/dt at x_t = (1 - t) a + t eps, where
    v = u(s, ., t, 0) is the policy's instantaneous velocity and div v its Hutchinson estimate (eq. 16)."""
    x_t = (1 - t[:, None]) * actions + t[:, None] * torch.randn_like(actions)
    with torch.no_grad():
        velocity_field = lambda x, obs, t: policy(obs, x, t, torch.zeros_like(t))  # h = 0: the instantaneous velocity
        divergence, velocity = hutchinson_divergence(velocity_field, x_t, obs, t, num_probes=num_probes)
        d_delta_dt = scalar_time_derivative(lambda x, t: adn(obs, x, t, t - r).squeeze(-1), x_t, t, velocity)
        target = divergence - (t - r).clamp(0.0, 1.0) * d_delta_dt
    return F.mse_loss(adn(obs, x_t, t, t - r).squeeze(-1), target)


@torch.compiler.disable  # a graph break under --compile in any case (backward); eager, the fused step never recompiles
def apply_gradient(optimizer: torch.optim.Optimizer, loss: torch.Tensor, num_steps: int = 1) -> None:
    """Backpropagate `loss` once into the parameters that `optimizer` steps, and only those, then apply that gradient
    with num_steps optimizer steps (FPMD's release steps its critic optimizer twice per gradient: --critic-adam-steps 2;
    every other update takes one step). Only those: a loss that reads other networks (SAC's actor loss reads the
    critics) leaves their .grad untouched. Under CUDA graphs a .grad left by an earlier backward lives in memory
    that a later replay overwrites, and adding into it fails; everywhere else that sum would be discarded work."""
    optimizer.zero_grad()
    loss.backward(inputs=[param for group in optimizer.param_groups for param in group["params"]])
    for _ in range(num_steps):
        optimizer.step()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak average theta' <- (1 - tau) theta' + tau theta, one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def compile_function(function, device: torch.device):
    """--compile: `function` through torch.compile, with CUDA graphs on a GPU (mode reduce-overhead) and inductor's
    default on a CPU. A CUDA graph's outputs live in memory that its next replay overwrites: there they are cloned on
    the way out (a tensor, or a tuple or dict of tensors)."""
    if device.type != "cuda":
        return torch.compile(function)
    graphed = torch.compile(function, mode="reduce-overhead")
    return lambda *inputs: torch.utils._pytree.tree_map(torch.clone, graphed(*inputs))


@torch.no_grad()
def evaluate(act, eval_envs, low: torch.Tensor, high: torch.Tensor, device: torch.device) -> np.ndarray:
    """Return of one episode in each eval env, acting with the inference policy `act` (obs -> [-1, 1]^d). The envs
    were seeded once when made: every evaluation starts from new initial states."""
    obs, _ = eval_envs.reset()
    returns = np.zeros(eval_envs.num_envs)
    done = np.zeros(eval_envs.num_envs, dtype=bool)
    while not done.all():
        action = act(torch.as_tensor(obs, dtype=torch.float32, device=device))
        obs, rewards, terminations, truncations, _ = eval_envs.step(action_to_env(action, low, high))
        returns += np.where(done, 0.0, rewards)  # finished envs autoreset and run on: ignore them
        done |= terminations | truncations
    return returns


def start_tracking(args: Args, run_name: str, run_id: str | None) -> str:
    """--track, CleanRL's convention: a W&B run that mirrors every TensorBoard scalar, with the arguments as its config
    and this file saved. A resumed run passes the id its checkpoint kept, so its curves go on in the same W&B run."""
    import wandb  # only under --track

    run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, id=run_id, resume="allow",
                     config=asdict(args), sync_tensorboard=True, save_code=True)
    return run.id


def log_losses(writer: SummaryWriter, losses: dict[str, torch.Tensor], global_step: int) -> str | None:
    """Write the losses (the only host sync of the update path); return the name of a non-finite one."""
    values = {name: value.item() for name, value in losses.items()}
    for name, value in values.items():
        if not math.isfinite(value):
            return name
        writer.add_scalar(name, value, global_step)
    return None


def open_evaluations(path: str, resume_step: int | None):
    """evaluations.csv, open for appending one flushed row per evaluation: a new file with its header, or on --resume
    the run's own rows up to the checkpoint's step (later rows are evaluated again). Rewritten atomically."""
    lines = ["global_step,mean_return,std_return,nfe,wall_time_s"]
    if resume_step is not None and os.path.exists(path):
        with open(path) as f:
            rows = f.read().split("\n")[1:-1]  # complete rows only: a kill mid-write leaves one without its "\n"
        lines += [row for row in rows if int(row.split(",")[0]) <= resume_step]
    with open(path + ".tmp", "w") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(path + ".tmp", path)
    return open(path, "a", newline="")


CHECKPOINT_FORMAT = 2  # 2: tensors and plain data only, read with weights_only=True; 1 (before it) pickled NumPy objects


def numpy_random_state(rng) -> dict:
    """The state of NumPy's global generator (np.random), of a legacy RandomState (dm_control's envs draw from one) or
    of a Generator (Gymnasium's envs), as plain data: MT19937's key array becomes a list, which a weights_only load
    reads back and NumPy's state setters take as it is."""
    state = rng.get_state(legacy=False) if hasattr(rng, "get_state") else rng.bit_generator.state
    return {**state, "state": {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in state["state"].items()}}


def set_numpy_random_state(rng, state: dict) -> None:
    """Put back a state taken by numpy_random_state."""
    if hasattr(rng, "set_state"):
        rng.set_state(state)
    else:
        rng.bit_generator.state = state


def training_state(args: Args, modules: dict, tensors: dict, counters: dict, rb: ReplayBuffer, vector_envs: list) -> dict:
    """Everything the loop needs to go on: the networks' and optimizers' state dicts (`modules`), the loose tensors
    (temperature, running statistics), the loop's counters, the filled replay buffer, and every random state:
    python, numpy, torch (CPU and CUDA), the buffer's generator and each env's. Tensors and plain data (numbers,
    strings, lists, tuples, dicts) only, so that reading it back with weights_only=True runs no code."""
    random_states = {"python": random.getstate(), "numpy": numpy_random_state(np.random),
                     "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                     "envs": [[numpy_random_state(env.np_random) for env in vec.unwrapped.envs] for vec in vector_envs]}
    return {"format": CHECKPOINT_FORMAT, "written_by": os.path.basename(__file__), "args": asdict(args),
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "tensors": {name: tensor.detach().clone() for name, tensor in tensors.items()}, "counters": counters,
            "buffer": rb.state_dict(), "random": random_states}


def save_checkpoint(path: str, state: dict) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: a kill during the write leaves the
    previous checkpoint whole."""
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def mark_completed(run_dir: str, checkpoint_path: str, global_step: int) -> None:
    """A run's last act: write runs/{run_name}/completed (its final step), then delete the checkpoint. A run is finished
    when it has the marker and no checkpoint; killed before the deletion, it is resumed from its checkpoint."""
    with open(os.path.join(run_dir, "completed"), "w") as f:
        f.write(f"{global_step}\n")
    if os.path.exists(checkpoint_path):
        os.remove(checkpoint_path)


RESUME_MAY_CHANGE = {"resume", "checkpoint_freq", "cuda", "compile", "capture_video", "save_model"}  # every other flag must match


def read_checkpoint(path: str, args: Args) -> tuple[dict | None, str | None]:
    """The checkpoint that --resume continues, or why there is none to continue with these arguments. It is read with
    weights_only=True: tensors and plain data, nothing that runs code, whoever wrote the file."""
    if not os.path.exists(path):
        return None, f"--resume: no checkpoint {path} (written by --checkpoint-freq or SIGTERM, deleted at the end of a run)"
    start_over = "remove it to start the run over"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # weights_only refused a class or function
            return None, (f"--resume: {path} holds objects other than tensors and plain data, and loading those could run code (a "
                          f"checkpoint written before format {CHECKPOINT_FORMAT}, or not by these algorithm files); {start_over}")
        # cut short (a kill during a copy), or not a torch file at all (a text file reads as a pickle that weights_only refuses)
        reason = "not a pickle of torch.save" if isinstance(err, pickle.UnpicklingError) else (str(err).strip().splitlines() or [""])[0]
        return None, f"--resume: {path} cannot be read ({type(err).__name__}: {reason}): truncated or not a checkpoint; {start_over}"
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        return None, f"--resume: {path} is not a checkpoint of format {CHECKPOINT_FORMAT} (an older one, or a saved model); {start_over}"
    if checkpoint["written_by"] != os.path.basename(__file__):
        writer = checkpoint["written_by"]
        return None, f"--resume: {path} was written by {writer}, not {os.path.basename(__file__)}: resume it with {writer}, or {start_over}"
    saved, current = checkpoint["args"], asdict(args)
    for name in sorted((saved.keys() | current.keys()) - RESUME_MAY_CHANGE):
        if saved.get(name) != current.get(name):
            flag = f"--{name.replace('_', '-')}"
            written = f"{path} was written with {flag} {saved.get(name)!r}, not {current.get(name)!r}"
            return None, f"--resume: {written}: rerun with the flags it was written with, or {start_over}"
    return checkpoint, None


def restore_training_state(state: dict, modules: dict, tensors: dict, rb: ReplayBuffer, vector_envs: list) -> dict:
    """Load a training_state into the live objects, in place; return its counters."""
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(state["tensors"][name])
    rb.load_state_dict(state["buffer"])
    random.setstate(state["random"]["python"])
    set_numpy_random_state(np.random, state["random"]["numpy"])
    torch.set_rng_state(state["random"]["torch"])
    if torch.cuda.is_available() and state["random"]["cuda"]:
        torch.cuda.set_rng_state_all(state["random"]["cuda"])
    for vec, env_states in zip(vector_envs, state["random"]["envs"]):
        for env, env_state in zip(vec.unwrapped.envs, env_states):
            set_numpy_random_state(env.np_random, env_state)
    return state["counters"]


def main(args: Args) -> None:
    problem = find_arg_problem(args)
    if problem:
        sys.exit(f"{args.exp_name}: error: {problem}")
    run_name = args.run_name or f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    checkpoint_path, checkpoint = os.path.join(run_dir, "checkpoint.pt"), None
    if args.resume:
        checkpoint, problem = read_checkpoint(checkpoint_path, args)
        if problem:
            sys.exit(f"{args.exp_name}: error: {problem}")
    elif os.path.exists(os.path.join(run_dir, "evaluations.csv")):
        sys.exit(f"{args.exp_name}: error: {run_dir} already holds results; pick another --run-name (or continue it: --resume)")

    warnings.filterwarnings("ignore", ".*is out of date", DeprecationWarning)  # the -v4 tasks are the papers' choice
    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.backends.cuda.matmul.allow_tf32 = args.matmul_precision == "high"  # TF32 matmuls on CUDA; a CPU ignores it
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    envs = make_vector_env(args.env_id, args.seed, args.num_envs, args.capture_video, run_name)
    problem = find_space_problem(envs, args.env_id)
    if problem:
        envs.close()
        sys.exit(f"{args.exp_name}: error: {problem}")
    eval_envs = make_vector_env(args.env_id, args.seed + 10_000, args.eval_episodes)
    eval_envs.reset(seed=args.seed + 10_000)  # the only seeding of the eval envs
    obs_dim = envs.single_observation_space.shape[0]
    action_dim = envs.single_action_space.shape[0]
    low = torch.as_tensor(envs.single_action_space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(envs.single_action_space.high, dtype=torch.float32, device=device)

    resume_step = checkpoint["counters"]["global_step"] if checkpoint else None
    wandb_run_id = checkpoint["counters"].get("wandb_run_id") if checkpoint else None
    if args.track:  # before the SummaryWriter, which W&B then mirrors
        wandb_run_id = start_tracking(args, run_name, wandb_run_id)
    writer = SummaryWriter(run_dir, purge_step=resume_step + 1 if checkpoint else None)  # resumed: drop later events
    if not checkpoint:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    eval_file = open_evaluations(os.path.join(run_dir, "evaluations.csv"), resume_step)
    eval_csv = csv.writer(eval_file, lineterminator="\n")  # plain lines, for awk and tail as much as for csv readers

    # ALGO LOGIC: networks and optimizers (fused Adam: one kernel steps all of an optimizer's tensors)
    networks = {name: net.to(device) for name, net in make_networks(obs_dim, action_dim, (high - low) / 2, args).items()}
    policy, adn, qf1, qf2 = (networks[k] for k in ("policy", "adn", "qf1", "qf2"))
    qf1_target, qf2_target = networks["qf1_target"], networks["qf2_target"]
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr, fused=True)
    actor_optimizer = torch.optim.Adam(policy.parameters(), lr=args.policy_lr, fused=True)
    adn_optimizer = torch.optim.Adam(adn.parameters(), lr=args.adn_lr, fused=True)
    log_alpha = torch.tensor(math.log(args.alpha_init), device=device, requires_grad=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=True)
    target_entropy = args.target_entropy_per_dim * action_dim
    atoms = torch.linspace(args.v_min, args.v_max, args.num_atoms, device=device)

    # ALGO LOGIC: the update steps and the acting policy, as functions that --compile compiles
    def update_critic(obs, actions, rewards, next_obs, terminations, alpha) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # the soft TD target on the C51 atoms (eq. 29)
            next_noise = torch.randn(len(next_obs), action_dim, device=device)
            next_actions, next_log_probs = sample_with_log_prob(policy, adn, next_obs, next_noise, args.sampling_steps)
            target_logits = [qf1_target(next_obs, next_actions), qf2_target(next_obs, next_actions)]
            target_probs = soft_td_distribution(
                target_logits, rewards, terminations, next_log_probs, alpha, args.gamma, atoms, args.use_cdq
            )
        qf1_logits, qf2_logits = qf1(obs, actions), qf2(obs, actions)
        qf_loss = -(target_probs * (qf1_logits.log_softmax(-1) + qf2_logits.log_softmax(-1))).sum(-1).mean()
        apply_gradient(q_optimizer, qf_loss)
        soft_update(qf1_target, qf1, args.tau)
        soft_update(qf2_target, qf2, args.tau)
        qf1_values = qf1_logits.detach().softmax(-1) @ atoms
        return {"losses/qf_loss": qf_loss.detach() / 2, "losses/qf1_values": qf1_values.mean()}

    def update_actor(obs, alpha):  # regress u onto the ESS-weighted velocity estimate of the Boltzmann target (eqs. 23-28)
        batch_size = len(obs)
        t, r = sample_time_pairs(batch_size, args.flow_ratio, device)
        with torch.no_grad():
            obs_rep = obs.repeat_interleave(args.num_policy_samples, 0)
            policy_actions, policy_log_probs = sample_with_log_prob(
                policy, adn, obs_rep, torch.randn(len(obs_rep), action_dim, device=device), args.sampling_steps
            )
            policy_actions = policy_actions.view(batch_size, args.num_policy_samples, action_dim)
            policy_log_probs = policy_log_probs.view(batch_size, args.num_policy_samples)
            x_t = (1 - t[:, None]) * policy_actions[:, 0] + t[:, None] * torch.randn(batch_size, action_dim, device=device)
            gaussian_actions = gaussian_proposal(x_t, t, args.num_gaussian_samples)
            # two calls per critic; the release's one call on both proposal sets measured ~10 % slower on a CPU
            policy_q = critic_q(qf1, qf2, obs_rep, policy_actions.view(-1, action_dim), atoms, args.use_cdq)
            obs_rep_gaussian = obs.repeat_interleave(args.num_gaussian_samples, 0)
            gaussian_q = critic_q(qf1, qf2, obs_rep_gaussian, gaussian_actions.view(-1, action_dim), atoms, args.use_cdq)
            velocity = ess_weighted_velocity(
                x_t, t, policy_actions, policy_log_probs, policy_q.view(batch_size, -1),
                gaussian_actions, gaussian_q.view(batch_size, -1), alpha,
            )
        actor_loss = actor_loss_fn(policy, obs, x_t, t, r, velocity)  # eq. 28
        apply_gradient(actor_optimizer, actor_loss)
        return policy_actions[:, 0], policy_log_probs, {"losses/actor_loss": actor_loss.detach()}

    def update_adn(obs, actions) -> dict[str, torch.Tensor]:  # the updated policy's average divergence (eqs. 16-17)
        t, r = sample_time_pairs(len(obs), args.flow_ratio, device)  # fresh (t, r), and fresh noise inside
        adn_loss = adn_loss_fn(adn, policy, obs, actions, t, r, args.div_samples)
        apply_gradient(adn_optimizer, adn_loss)
        return {"losses/adn_loss": adn_loss.detach()}

    def update_alpha(log_probs) -> dict[str, torch.Tensor]:  # eq. 30, the entropy estimated on the policy's proposals
        entropy = -log_probs.mean()
        alpha_loss = log_alpha.exp() * (entropy - target_entropy)
        apply_gradient(alpha_optimizer, alpha_loss)
        return {"losses/alpha_loss": alpha_loss.detach(), "losses/entropy": entropy}

    def act(obs) -> torch.Tensor:  # the training policy: one T-step sample
        return sample_with_log_prob(policy, None, obs, torch.randn(len(obs), action_dim, device=device), args.sampling_steps)[0]

    if args.compile:
        update_critic, update_actor, update_adn, update_alpha, act = (
            compile_function(f, device) for f in (update_critic, update_actor, update_adn, update_alpha, act)
        )

    rb = ReplayBuffer(args.buffer_size, obs_dim, action_dim, device, args.seed)

    # TRY NOT TO MODIFY: the loop's state, everything a checkpoint holds; --resume continues from a checkpoint's
    modules = {**networks, "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer, "adn_optimizer": adn_optimizer}
    modules["alpha_optimizer"] = alpha_optimizer
    tensors = {"log_alpha": log_alpha}
    budget_start, final_step = step_schedule(args)
    counters = {"global_step": 0, "num_updates": 0, "next_eval_step": budget_start + args.eval_freq, "elapsed_time": 0.0,
                "next_checkpoint_step": args.checkpoint_freq, "last_train_return": math.nan, "last_eval_return": math.nan,
                "wandb_run_id": wandb_run_id}
    if checkpoint:
        counters = restore_training_state(checkpoint, modules, tensors, rb, [envs, eval_envs])
        del checkpoint  # the buffer's host copy
    global_step, num_updates = counters["global_step"], counters["num_updates"]
    next_eval_step, next_checkpoint_step = counters["next_eval_step"], counters["next_checkpoint_step"]
    last_train_return, last_eval_return = counters["last_train_return"], counters["last_eval_return"]
    alpha = log_alpha.exp().detach()  # a tensor, so that reading it never syncs with the device
    losses: dict[str, torch.Tensor] = {}
    sigterm = []  # Slurm's notice before a time limit or preemption: checkpoint at the end of the iteration and stop
    previous_sigterm_handler = signal.signal(signal.SIGTERM, lambda *_: sigterm.append(True))

    # TRY NOT TO MODIFY: start the game
    start_time, next_progress_time = time.time() - counters["elapsed_time"], time.time() + 30
    learning_start_time, learning_start_step = None, 0  # set at this process's first update: steps/s count from there
    num_iterations = -(-final_step // args.num_envs)
    obs, _ = envs.reset(seed=args.seed if resume_step is None else None)  # a resumed run starts new episodes
    if args.compile:
        print(f"global_step {global_step}/{final_step} | --compile: the first update iterations compile the update steps"
              " and the acting policy (a minute or more)", flush=True)
    for iteration in range(global_step // args.num_envs + 1, num_iterations + 1):
        global_step = iteration * args.num_envs
        # ALGO LOGIC: put action logic here
        with torch.no_grad():
            if global_step <= args.learning_starts:
                actions = torch.rand((args.num_envs, action_dim), device=device) * 2 - 1
            else:
                actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device))

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, rewards, terminations, truncations, infos = envs.step(action_to_env(actions, low, high))
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                last_train_return = float(infos["episode"]["r"][i])
                writer.add_scalar("charts/episodic_return", last_train_return, global_step)
                writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)

        # TRY NOT TO MODIFY: save data to replay buffer; truncated episodes keep their bootstrap (only `terminations`)
        rb.add(obs, final_next_obs(next_obs, infos), actions, rewards, terminations)
        obs = next_obs

        # ALGO LOGIC: training.
        if global_step > args.learning_starts:
            if learning_start_time is None:
                learning_start_time, learning_start_step = time.time(), global_step
            num_updates += 1
            b_obs, b_actions, b_rewards, b_next_obs, b_terminations = rb.sample(args.batch_size)
            losses.update(update_critic(b_obs, b_actions, b_rewards, b_next_obs, b_terminations, alpha))
            policy_actions, policy_log_probs, actor_losses = update_actor(b_obs, alpha)
            losses.update(actor_losses)
            losses.update(update_adn(b_obs, policy_actions))
            losses.update(update_alpha(policy_log_probs))
            alpha = log_alpha.exp().detach()
            losses["losses/alpha"] = alpha

        evaluating = global_step >= next_eval_step or iteration == num_iterations
        if losses and (num_updates % 100 == 0 or evaluating):
            bad_loss = log_losses(writer, losses, global_step)
            if bad_loss:
                writer.close()
                sys.exit(f"{args.exp_name}: error: non-finite {bad_loss} by global_step {global_step}; run stopped")
            sps = (global_step - learning_start_step) / max(time.time() - learning_start_time, 1e-9)
            writer.add_scalar("charts/SPS", int(sps), global_step)

        if evaluating:
            next_eval_step += args.eval_freq
            inference_policy, nfe = make_inference_policy(networks, action_dim, args)  # prepared for the current weights
            returns = evaluate(inference_policy, eval_envs, low, high, device)
            last_eval_return, elapsed = float(returns.mean()), time.time() - start_time
            writer.add_scalar("eval/episodic_return", last_eval_return, global_step)
            eval_csv.writerow([global_step, last_eval_return, float(returns.std()), nfe, round(elapsed, 2)])
            eval_file.flush()
            writer.flush()  # a killed run keeps its evaluations in TensorBoard too

        if evaluating or time.time() >= next_progress_time:  # a progress line at least every 30 s
            next_progress_time = time.time() + 30
            rate = (global_step - learning_start_step) / max(time.time() - (learning_start_time or start_time), 1e-9)
            eta = (final_step - global_step) / max(rate, 1e-9)
            print(
                f"global_step {global_step}/{final_step} | {rate:.0f} steps/s | ETA {eta / 60:.1f} min"
                f" | train return {last_train_return:.1f} | eval return {last_eval_return:.1f}",
                flush=True,
            )

        # TRY NOT TO MODIFY: checkpoint every --checkpoint-freq env steps and on SIGTERM
        checkpoint_due = args.checkpoint_freq > 0 and global_step >= next_checkpoint_step
        if checkpoint_due:
            next_checkpoint_step += args.checkpoint_freq
        if sigterm or (checkpoint_due and iteration < num_iterations):
            counters = {"global_step": global_step, "num_updates": num_updates, "next_eval_step": next_eval_step,
                        "next_checkpoint_step": next_checkpoint_step, "elapsed_time": time.time() - start_time,
                        "last_train_return": last_train_return, "last_eval_return": last_eval_return, "wandb_run_id": wandb_run_id}
            save_checkpoint(checkpoint_path, training_state(args, modules, tensors, counters, rb, [envs, eval_envs]))
        if sigterm:
            writer.close()
            sys.exit(f"{args.exp_name}: stopped by SIGTERM at global_step {global_step}; {checkpoint_path} written, continue with --resume")

    signal.signal(signal.SIGTERM, previous_sigterm_handler)
    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
        torch.save({"args": asdict(args), **{k: v.state_dict() for k, v in networks.items()}}, model_path)
        print(f"model saved to {model_path}")
    eval_file.close()
    envs.close()
    eval_envs.close()
    writer.close()
    mark_completed(run_dir, checkpoint_path, global_step)


if __name__ == "__main__":
    main(tyro.cli(Args))
