"""FPMD-R: Flow Policy Mirror Descent with a flow-matching policy (Chen, Ma, Li, Wang, Dai 2025, arXiv 2507.23675).

An off-policy actor-critic whose policy is a flow v(s, x, t) from noise x0 ~ N(0, I) (t = 0) to actions (t = 1).
Each actor step regresses the flow onto the mirror-descent target pi_old(a|s) exp(Q(s, a) / lambda) (eq. 2) by
exp-weighted flow matching on actions drawn from pi_old; because that target narrows as learning converges, a
single Euler step samples it well (Prop. 2), and the inference policy costs one network evaluation like SAC's.

Equations implemented (numbers of arXiv 2507.23675; flowpolicy-rl's docs/algorithms.md has them all):
  interpolation     x_t = t a1 + (1 - t) x0,  target velocity a1 - x0                                (eq. 3)
  actor loss        mean_b w_b mean_d (v(s', x_t, t) - (a1 - x0))^2,  w = exp(Q(s', a1) / lambda)      (eq. 8)
  one-step sample   a = x0 + v(s, x0, 0)                                              (Prop. 2, section 3.2)
  critic loss       (Q_k(s, a) - (reward_scale r + gamma (1 - term) min_k Q'_k(s', a')))^2         (eq. 17)
  best-of-N acting  a = clip(argmax_{a_i ~ pi} min_k Q_k(s, a_i), -1, 1) + N(0, sigma^2)             (eq. 18)

Usage: python fpmd_r.py --env-id Walker2d-v4 --seed 1

Defaults follow the authors' JAX release ("flow_policy_iclr"), whose runs are the paper's Table 1: 5 envs and one
gradient iteration per vector step, 30k random steps, reward scale 0.2, 32 particles of 20 Euler steps in training,
policy lr 3e-4 decayed linearly to 3e-5 over iterations 50k-150k, actor / target / EMA-policy updates every 2
iterations, an EMA copy of the policy that acts, exploration noise sigma = 0.1 alpha with log alpha driven by one
Adam step every 250 iterations toward entropy -1.5 per dimension, and a one-step inference policy from N(0, 0.5^2 I).

Release vs paper: where the paper's text says otherwise, the default is the release's and the paper's variant is one
flag away (docs/algorithms.md names the release's file and function for each).
  * training particles (acting and a') start from x0 ~ N(0, 0.5^2 I); the paper's N(0, I): --train-prior-scale 1
    (the flow-matching loss always draws x0 ~ N(0, I));
  * actor weights: the release computes exp(clip(q - m / sd, -3, 3) / alpha) with running mean m and std sd of Q;
    by operator precedence q is not standardised, so the clip saturates and the weights are nearly constant on most
    tasks. That is what trained Table 1, so it is the default (--weighting official); eq. 8 in the stable form
    exp(clip((q - m) / sd, -3, 3) / alpha) is --weighting exp, and w = 1 is --weighting uniform;
  * each critic gradient is applied with two Adam steps (the optimizer state advances twice); the paper's single
    step: --critic-adam-steps 1;
  * the 1M env steps and the evaluation schedule count from the end of the 30k warm-up; counting the warm-up in
    the budget: --budget-includes-warmup;
  * float32 matmuls on a GPU run as TF32, JAX's default, with which the release trained; full float32:
    --matmul-precision highest.
Release details the paper leaves out, followed here: Haiku's initialisation (weights normal(0, 1/fan_in) truncated at
2 std, biases 0); the best particle is chosen among the unclipped ones, clipped to [-1, 1], and its exploration noise
is not clipped again (the buffer and the actor loss keep the noisy action, the env receives it clipped to its
bounds); 40 evaluations of 20 episodes per 1M-step run on eval envs seeded once. Beyond that only the frameworks
differ: PyTorch instead of JAX (fused Adam; --compile does what jit does there), Gymnasium 1.x MuJoCo v4 envs
(Pusher-v5: Pusher-v4 refuses MuJoCo >= 3).
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
    num_envs: int = 5
    """number of parallel training envs; one gradient update per vector step"""
    buffer_size: int = 1_000_000
    """the replay memory size, in transitions"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient of the Polyak averages"""
    batch_size: int = 256
    """the batch size of sample from the replay memory"""
    learning_starts: int = 30_000
    """env steps of uniform random actions before learning starts"""
    eval_freq: int = 25_000
    """evaluate the inference policy every this many env steps (and at the end); 25k: 40 evaluations per 1M steps"""
    eval_episodes: int = 20
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
    budget_includes_warmup: bool = False
    """if toggled, --total-timesteps and the evaluation schedule count the --learning-starts warm-up steps too;
    by default they count from the end of the warm-up, as the release does"""

    # Algorithm specific arguments
    policy_lr: float = 3e-4
    """the initial learning rate of the policy (velocity field) optimizer"""
    policy_lr_final: float = 3e-5
    """the policy learning rate after the linear decay"""
    lr_decay_start: int = 50_000
    """gradient iteration at which the policy learning rate starts to decay"""
    lr_decay_end: int = 150_000
    """gradient iteration at which the policy learning rate reaches --policy-lr-final"""
    q_lr: float = 3e-4
    """the learning rate of the Q network optimizer"""
    policy_frequency: int = 2
    """actor step, target-critic and EMA-policy Polyak updates every this many gradient iterations"""
    reward_scale: float = 0.2
    """rewards are multiplied by this in the TD target (eq. 17)"""
    num_particles: int = 32
    """N of best-of-N action selection (eq. 18), for acting and for the next action a' of the update"""
    weighting: Literal["official", "exp", "uniform"] = "official"
    """actor-loss weights: official (the release's expression as written), exp (eq. 8, stable form) or uniform"""
    critic_adam_steps: int = 2
    """Adam steps applied with each critic gradient (the release: 2; the paper's algorithm: 1)"""
    alpha_init: float = 5.0
    """initial temperature alpha; it is lambda of eq. 2 and sets the exploration noise sigma = 0.1 alpha"""
    alpha_lr: float = 7e-3
    """Adam learning rate of log alpha (the noise schedule)"""
    alpha_update_freq: int = 250
    """one noise-schedule step every this many gradient iterations"""
    target_entropy_per_dim: float = -1.5
    """the noise schedule drives the entropy of N(0, sigma^2 I) toward this times dim(A)"""
    train_prior_scale: float = 0.5
    """training particles (acting and a') start from x0 ~ N(0, train_prior_scale^2 I); 1 is the paper's N(0, I)"""
    eval_prior_scale: float = 0.5
    """the inference policy starts from x0 ~ N(0, eval_prior_scale^2 I)"""
    flow_steps: int = 20
    """Euler steps of the sampler in training (acting and the next action a')"""
    eval_flow_steps: int = 1
    """Euler steps of the inference policy (NFE); 1 is the paper's one-step inference"""


def find_arg_problem(args: Args) -> str | None:
    """The first invalid flag, as a one-line message, or None. Runs before any env is made."""
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_freq", "eval_episodes"]
    positive += ["policy_lr", "policy_lr_final", "q_lr", "policy_frequency", "reward_scale", "num_particles"]
    positive += ["alpha_init", "alpha_lr", "alpha_update_freq", "eval_prior_scale", "flow_steps", "eval_flow_steps"]
    positive += ["critic_adam_steps", "train_prior_scale"]
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
    if not 0 <= args.lr_decay_start <= args.lr_decay_end:
        return f"--lr-decay-start ({args.lr_decay_start}) must lie in [0, --lr-decay-end ({args.lr_decay_end})]"
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
    """(the env step the budget counts from, the final env step): the release counts --total-timesteps and the
    evaluation schedule after the --learning-starts warm-up; --budget-includes-warmup counts the warm-up too."""
    budget_start = 0 if args.budget_includes_warmup else args.learning_starts
    return budget_start, budget_start + args.total_timesteps


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
def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish(x) = x tanh(softplus(x)), the release's activation, on a CPU with one exp: tanh(log(1 + e^x)) = n / (n + 2)
    with n = e^x (e^x + 2). PyTorch's CPU kernel takes an exp, a log1p and a tanh per element, and was 58 % of FPMD-R's
    training iteration at full size, more than its matmuls; this form takes half the time (docs/measurements.md),
    equal to float32 rounding. Past x = 20 the ratio is 1 in float32, so x is clamped there before the exp. On CUDA
    F.mish is one fused kernel, and an iteration there costs the kernels it launches: that one is kept."""
    if x.is_cuda:
        return F.mish(x)
    e = x.clamp(max=20.0).exp()
    n = e * (e + 2.0)
    return x * (n / (n + 2.0))


class Mish(nn.Module):
    """The Mish layer, as mish computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


ROW_BLOCK = 1024  # rows of a 256-wide layer whose activations (1 MB) stay in a CPU core's cache


def in_row_blocks(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """layers(x), on a CPU ROW_BLOCK rows at a time: every layer acts on each row alone, so the result is the same, and
    a block's activations stay in the core's cache from one layer to the next, where those of the sampler's and the
    best-of-N critics' 8192-row batches (256 states x 32 particles, 20 flow steps) went to memory and back at every
    layer (a policy forward there took 1.4x as long, docs/measurements.md). On CUDA one call. Compiled code on a CPU
    traces the loop over the blocks: inductor fuses each block's elementwise work, and the blocks keep it in cache (the
    compiled flow files ran 1.04-1.06x as fast as with one call, docs/measurements.md)."""
    if x.is_cuda or x[..., 0].numel() <= ROW_BLOCK:
        return layers(x)
    rows = x.reshape(-1, x.shape[-1])  # a sampler's (states, particles, features): every row alike
    return torch.cat([layers(block) for block in rows.split(ROW_BLOCK)]).view(*x.shape[:-1], -1)


class MLP(nn.Sequential):
    """The layers in order, as nn.Sequential; a batch of many rows in blocks of rows (in_row_blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_row_blocks(super().forward, x)


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, num_hidden: int = 3) -> MLP:
    """num_hidden x (Linear -> Mish), then a linear output: the official 3 x 256 Mish body of every network."""
    layers = []
    for i in range(num_hidden):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), Mish()]
    return MLP(*layers, nn.Linear(hidden_dim, out_dim))


def haiku_init(module: nn.Module) -> nn.Module:
    """The release's initialisation (Haiku's hk.Linear default): every Linear layer's weights ~ normal(0, 1/fan_in)
    truncated at 2 std, biases 0. PyTorch's default is a narrower uniform with a random bias."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            std = 1.0 / math.sqrt(layer.in_features)
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(layer.bias)
    return module


class QNetwork(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.net = mlp(obs_dim + action_dim, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)


class TimeEmbedding(nn.Module):
    """t in [0, 1] (raw) -> [sin(t f), cos(t f)] / sqrt(16) with f = 10000^(-k/8), k < 8 -> Linear 32 -> Mish -> Linear 16."""

    def __init__(self, dim: int = 16):
        super().__init__()
        half = dim // 2
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half))
        self.scale = 1.0 / math.sqrt(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), Mish(), nn.Linear(2 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[..., None] * self.inv_freq
        return self.mlp(torch.cat([angles.sin(), angles.cos()], -1) * self.scale)


class VelocityField(nn.Module):
    """The flow policy: velocity v(s, x, t) that carries x0 ~ N(0, I) at t = 0 to an action at t = 1 (eq. 3)."""

    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.time_embedding = TimeEmbedding()
        self.net = mlp(obs_dim + action_dim + 16, action_dim)

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """The inputs that depend on time alone (the last columns of the first layer's input)."""
        return self.time_embedding(t)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t=None, time_features=None) -> torch.Tensor:
        """v(s, x, t); a sampler passes the time features of its step's t instead, one row for all its states."""
        time_features = self.time_features(t) if time_features is None else time_features
        return self.net(torch.cat([obs, x, time_features.expand(*x.shape[:-1], -1)], -1))


def make_networks(obs_dim: int, action_dim: int, action_scale: torch.Tensor, args: Args) -> dict[str, nn.Module]:
    """Every network of the agent, targets included; the keys name them in the saved model. The five files share this
    signature, so that the tools build any file's networks alike; a file ignores what it does not need."""
    networks = VelocityField(obs_dim, action_dim), QNetwork(obs_dim, action_dim), QNetwork(obs_dim, action_dim)
    policy, qf1, qf2 = (haiku_init(network) for network in networks)
    targets = {"ema_policy": copy.deepcopy(policy), "qf1_target": copy.deepcopy(qf1), "qf2_target": copy.deepcopy(qf2)}
    return {"policy": policy, "qf1": qf1, "qf2": qf2, **targets}


def make_inference_policy(networks: dict[str, nn.Module], action_dim: int, args: Args):  # the five files' signature
    """The evaluation policy obs -> action in [-1, 1]^d: --eval-flow-steps Euler steps of the EMA policy from
    x0 ~ N(0, eval_prior_scale^2 I), no particles, no noise; and its network evaluations per action (NFE). Made once
    per evaluation, for fixed weights: the sampler's time features are computed here, once."""
    ema_policy = networks["ema_policy"]
    with torch.no_grad():
        time_features = sampling_time_features(ema_policy, args.eval_flow_steps, next(ema_policy.parameters()).device)

    def inference_policy(obs: torch.Tensor) -> torch.Tensor:  # one step: Prop. 2's one-step sample
        x0 = args.eval_prior_scale * torch.randn(len(obs), action_dim, device=obs.device)
        return sample_actions(ema_policy, obs, x0, time_features).clamp(-1.0, 1.0)

    return inference_policy, args.eval_flow_steps


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
Q_STATS_RATE = 0.001  # EMA rate of the running mean and std of Q in the actor-loss weights [release]
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


def sampling_time_features(policy: nn.Module, num_steps: int, device: torch.device) -> torch.Tensor:
    """The time features of the K Euler steps' times t = k / K, one row per step. They depend on neither the state nor
    x, so a sampler computes them once per call (the inference policy once per evaluation), not at every step."""
    return policy.time_features(torch.arange(num_steps, device=device) / num_steps)


def sample_actions(policy: nn.Module, obs: torch.Tensor, x0: torch.Tensor, time_features: torch.Tensor) -> torch.Tensor:
    """Euler integration of dx/dt = v(s, x, t) from x0 at t = 0 to t = 1: x <- x + v(s, x, k/K) / K, the time
    features of k/K being row k of time_features (NFE = K, the rows)."""
    x, num_steps = x0, len(time_features)
    for features in time_features:
        x = x + policy(obs, x, time_features=features) / num_steps
    return x


def flow_matching_loss(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """eq. 8: mean over the batch of w_b ||v(s, x_t, t) - (a1 - x0)||^2 (mean over dims), with
    x_t = t a1 + (1 - t) x0 (eq. 3), t ~ U[0, 1], x0 ~ N(0, I)."""
    x0 = torch.randn_like(actions)
    t = torch.rand(actions.shape[:-1], device=actions.device)
    x_t = t[..., None] * actions + (1 - t[..., None]) * x0
    per_sample = (policy(obs, x_t, t) - (actions - x0)).pow(2).mean(-1)
    return (weights * per_sample).mean()


def policy_weights(q: torch.Tensor, q_mean: torch.Tensor, q_std: torch.Tensor, temperature: torch.Tensor, weighting: str) -> torch.Tensor:
    """The actor-loss weight w = exp(Q / lambda) of FPMD-R eq. 8 / FPMD-M eq. 16, lambda = alpha, with running
    statistics q_mean, q_std of Q. official: exp(clip(q - q_mean / q_std, -3, 3) / lambda), the release's expression
    as written (q itself is not standardised); exp: exp(clip((q - q_mean) / q_std, -3, 3) / lambda), eq. 8 made
    scale-free and bounded (a constant factor exp(-q_mean / lambda) does not move the minimizer); uniform: 1."""
    if weighting == "uniform":
        return torch.ones_like(q)
    z = q - q_mean / q_std if weighting == "official" else (q - q_mean) / q_std
    return torch.exp(z.clamp(-3.0, 3.0) / temperature)


def sample_particles(policy, obs: torch.Tensor, num_particles: int, action_dim: int, prior_scale: float, num_steps: int) -> torch.Tensor:
    """The training sampler: num_particles actions per state, shape (batch, N, action_dim), each integrated from its
    own x0 ~ N(0, prior_scale^2 I) (the release's p_sample uses 0.5)."""
    x0 = prior_scale * torch.randn(len(obs), num_particles, action_dim, device=obs.device)
    time_features = sampling_time_features(policy, num_steps, obs.device)
    return sample_actions(policy, obs[:, None].expand(-1, num_particles, -1), x0, time_features)


def best_of_n(qf1, qf2, obs: torch.Tensor, particles: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
    """eq. 18 as the release runs it: of each state's particles (batch, N, d), unclipped, keep the one of highest
    min(Q1, Q2), clip it to [-1, 1] and add N(0, noise_std^2) exploration noise, which is not clipped again."""
    obs_per_particle = obs[:, None].expand(-1, particles.shape[1], -1)
    q = torch.min(qf1(obs_per_particle, particles), qf2(obs_per_particle, particles))
    best = particles[torch.arange(len(obs), device=obs.device), q.argmax(1)].clamp(-1.0, 1.0)
    return best + noise_std * torch.randn_like(best)


def noise_schedule_loss(log_alpha: torch.Tensor, action_dim: int, target_entropy_per_dim: float) -> torch.Tensor:
    """The scheduled variance: -log alpha (H_target - H(N(0, sigma^2 I))), sigma = 0.1 alpha, the entropy taken as a
    constant. Its gradient step lowers alpha while the noise is wider than the target entropy allows, and stops at
    sigma = exp(target_entropy_per_dim - 0.5) / sqrt(2 pi)."""
    sigma = 0.1 * log_alpha.detach().exp()
    noise_entropy = 0.5 * action_dim * torch.log(2 * math.pi * math.e * sigma**2)
    return -log_alpha * (target_entropy_per_dim * action_dim - noise_entropy)


def policy_lr_at(iteration: int, lr: float, lr_final: float, decay_start: int, decay_end: int) -> float:
    """Constant lr until decay_start, linear to lr_final at decay_end, constant after."""
    progress = min(max((iteration - decay_start) / max(decay_end - decay_start, 1), 0.0), 1.0)
    return lr + progress * (lr_final - lr)


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
    policy, ema_policy, qf1, qf2 = (networks[k] for k in ("policy", "ema_policy", "qf1", "qf2"))  # the EMA policy acts
    qf1_target, qf2_target = networks["qf1_target"], networks["qf2_target"]
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr, fused=True)
    actor_optimizer = torch.optim.Adam(policy.parameters(), lr=args.policy_lr, fused=True)
    log_alpha = torch.tensor(math.log(args.alpha_init), device=device, requires_grad=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=True)
    q_mean, q_std = torch.zeros((), device=device), torch.ones((), device=device)  # running statistics of Q [release]
    for statistic in (q_mean, q_std):  # changed in place by the compiled critic step: a fixed address for CUDA graphs
        torch._dynamo.mark_static_address(statistic)

    # ALGO LOGIC: the update steps and the acting policy, as functions that --compile compiles
    def best_action(sampling_policy: nn.Module, obs, alpha) -> torch.Tensor:  # eq. 18 with the training sampler
        particles = sample_particles(sampling_policy, obs, args.num_particles, action_dim, args.train_prior_scale, args.flow_steps)
        return best_of_n(qf1, qf2, obs, particles, 0.1 * alpha)

    def update_critic(obs, actions, rewards, next_obs, terminations, alpha):
        with torch.no_grad():  # a': one best-of-N action of the online policy at s', for eq. 17 and the actor loss
            next_actions = best_action(policy, next_obs, alpha)
            min_qf_next = torch.min(qf1_target(next_obs, next_actions), qf2_target(next_obs, next_actions))
            next_q_value = td_target(args.reward_scale * rewards, terminations, min_qf_next, args.gamma)  # eq. 17
        qf1_a_values = qf1(obs, actions)
        qf2_a_values = qf2(obs, actions)
        qf_loss = F.mse_loss(qf1_a_values, next_q_value) + F.mse_loss(qf2_a_values, next_q_value)  # eq. 17
        apply_gradient(q_optimizer, qf_loss, args.critic_adam_steps)
        with torch.no_grad():  # Q of the just-updated critics at (s', a'); its running statistics move every iteration
            q = torch.min(qf1(next_obs, next_actions), qf2(next_obs, next_actions))
            q_mean.lerp_(q.mean(), Q_STATS_RATE)
            q_std.lerp_(q.std(), Q_STATS_RATE)
        return next_actions, q, {"losses/qf_loss": qf_loss.detach() / 2, "losses/qf1_values": qf1_a_values.detach().mean()}

    def update_actor(next_obs, next_actions, q, alpha) -> dict[str, torch.Tensor]:  # at s', with a1 = a' from pi_old
        weights = policy_weights(q, q_mean, q_std, alpha, args.weighting)
        actor_loss = flow_matching_loss(policy, next_obs, next_actions, weights)  # eq. 8
        apply_gradient(actor_optimizer, actor_loss)
        soft_update(qf1_target, qf1, args.tau)
        soft_update(qf2_target, qf2, args.tau)
        soft_update(ema_policy, policy, args.tau)
        return {"losses/actor_loss": actor_loss.detach(), "losses/weight_max": weights.max()}

    def act(obs, alpha) -> torch.Tensor:  # the training policy: the EMA policy's best particle with exploration noise
        return best_action(ema_policy, obs, alpha)

    if args.compile:
        update_critic, update_actor, act = (compile_function(f, device) for f in (update_critic, update_actor, act))

    rb = ReplayBuffer(args.buffer_size, obs_dim, action_dim, device, args.seed)

    # TRY NOT TO MODIFY: the loop's state, everything a checkpoint holds; --resume continues from a checkpoint's
    modules = {**networks, "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer, "alpha_optimizer": alpha_optimizer}
    tensors = {"log_alpha": log_alpha, "q_mean": q_mean, "q_std": q_std}
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
                actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device), alpha)

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
            next_actions, q, critic_losses = update_critic(b_obs, b_actions, b_rewards, b_next_obs, b_terminations, alpha)
            losses.update(critic_losses)
            if num_updates % args.policy_frequency == 0:  # the actor step, then the target critics and the EMA policy
                for group in actor_optimizer.param_groups:
                    group["lr"] = policy_lr_at(num_updates, args.policy_lr, args.policy_lr_final, args.lr_decay_start, args.lr_decay_end)
                losses.update(update_actor(b_next_obs, next_actions, q, alpha))

            if num_updates % args.alpha_update_freq == 0:  # the scheduled exploration variance
                alpha_loss = noise_schedule_loss(log_alpha, action_dim, args.target_entropy_per_dim)
                apply_gradient(alpha_optimizer, alpha_loss)
                alpha = log_alpha.exp().detach()
                losses.update({"losses/alpha_loss": alpha_loss.detach(), "losses/alpha": alpha, "losses/sigma": 0.1 * alpha})

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
