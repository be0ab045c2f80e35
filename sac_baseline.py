"""SAC: Soft Actor-Critic with automatic temperature (Haarnoja et al. 2018, arXiv 1801.01290, 1812.05905).

The Gaussian-policy baseline of both papers, with CleanRL's defaults (flowpolicy-rl's docs/algorithms.md has them all).

Equations implemented (numbers of arXiv 1812.05905):
  soft TD target    y = r + gamma (1 - term) [min_k Q'_k(s', a') - alpha log pi(a'|s')],  a' ~ pi(.|s')   (eq. 3)
  critic loss       sum_k (Q_k(s, a) - y)^2                                                           (eq. 5)
  actor loss        alpha log pi(a|s) - min_k Q_k(s, a),  a = tanh(mu + std * eps)                    (eq. 7)
  squashed density  log pi(a|s) = log N(u; mu, std) - sum_i log(1 - tanh(u_i)^2),  a = tanh(u)        (eq. 21)
  temperature loss  -alpha (log pi(a|s) + H_target),  H_target = -dim(A), a fresh from the updated actor (eq. 18)

Usage: python sac_baseline.py --env-id Walker2d-v4 --seed 1

Differences from CleanRL's sac_continuous_action.py:
  * the policy acts in [-1, 1]^d and actions are mapped to the env's bounds per dimension; the log-density is
    still measured in env units (it subtracts sum_i log(scale_i)), so the entropy target means what it does there;
  * the critics take the policy-space action in [-1, 1]^d (the buffer stores it), where CleanRL's take env units;
  * Gymnasium 1.x vector envs with SAME_STEP autoreset (the stored s' of a finished episode is `final_obs`);
  * the replay buffer lives on the training device, and nothing in the per-step path calls `.item()`;
  * Adam is fused (one kernel steps all of an optimizer's tensors: the same update, to float32 rounding), and the
    update steps are functions that --compile hands to torch.compile;
  * evaluation of the deterministic policy tanh(mean) in a separate env, written to `evaluations.csv`.
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
    learning_starts: int = 5_000
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
    matmul_precision: Literal["highest", "high"] = "highest"
    """float32 matmuls on CUDA: highest = full float32 (PyTorch's default, CleanRL's),
    high = TF32 where the GPU has it; no effect on a CPU"""

    # Algorithm specific arguments
    policy_lr: float = 3e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-3
    """the learning rate of the Q network optimizer (and of the temperature)"""
    policy_frequency: int = 2
    """the frequency of training policy (delayed); that many actor steps are then taken at once"""
    target_network_frequency: int = 1
    """the frequency of updates for the target networks"""
    alpha: float = 0.2
    """the fixed entropy regularization coefficient, used with --no-autotune"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient toward a target entropy of -dim(A), from log alpha = 0 (alpha = 1)"""


def find_arg_problem(args: Args) -> str | None:
    """The first invalid flag, as a one-line message, or None. Runs before any env is made."""
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "eval_freq", "eval_episodes"]
    positive += ["policy_lr", "q_lr", "policy_frequency", "target_network_frequency", "alpha"]
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
class SoftQNetwork(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim + action_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x).squeeze(-1)


LOG_STD_MAX = 2
LOG_STD_MIN = -5


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, action_scale: torch.Tensor):
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc_mean = nn.Linear(256, action_dim)
        self.fc_logstd = nn.Linear(256, action_dim)
        # log|d env_action / d action|: makes log pi a density over env-unit actions, as in CleanRL
        self.register_buffer("log_action_scale", torch.log(action_scale).sum())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc1(obs))
        x = F.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = torch.tanh(self.fc_logstd(x))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # squash into [min, max]
        return mean, log_std

    def get_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized sample in [-1, 1]^d and its log-density in env units."""
        mean, log_std = self(obs)
        action, log_prob = squashed_gaussian_sample(mean, log_std)
        return action, log_prob - self.log_action_scale

    def inference_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic evaluation policy tanh(mean), one network evaluation."""
        return torch.tanh(self(obs)[0])


def make_networks(obs_dim: int, action_dim: int, action_scale: torch.Tensor, args: Args) -> dict[str, nn.Module]:
    """Every network of the agent, targets included; the keys name them in the saved model. The five files share this
    signature, so that the tools build any file's networks alike; a file ignores what it does not need."""
    actor = Actor(obs_dim, action_dim, action_scale)
    qf1, qf2 = SoftQNetwork(obs_dim, action_dim), SoftQNetwork(obs_dim, action_dim)
    return {"actor": actor, "qf1": qf1, "qf2": qf2, "qf1_target": copy.deepcopy(qf1), "qf2_target": copy.deepcopy(qf2)}


def make_inference_policy(networks: dict[str, nn.Module], action_dim: int, args: Args):  # the five files' signature
    """The evaluation policy obs -> action in [-1, 1]^d, and its network evaluations per action (NFE)."""
    return networks["actor"].inference_action, 1


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


def squashed_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a) of a = tanh(u), u ~ N(mean, std^2), by change of variables (eq. 21), with the stable form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    gaussian_log_prob = -0.5 * ((pre_tanh - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det_jacobian = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gaussian_log_prob - log_det_jacobian).sum(-1)


def squashed_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterized sample a = tanh(mean + std * eps) in [-1, 1]^d (eq. 8) and its log pi(a)."""
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)


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
    actor, qf1, qf2, qf1_target, qf2_target = (networks[k] for k in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    # as CleanRL: under --autotune log alpha starts at 0 (alpha = 1); --alpha is the fixed value without it
    log_alpha = torch.tensor(0.0 if args.autotune else math.log(args.alpha), device=device, requires_grad=args.autotune)
    target_entropy = -float(action_dim)  # eq. 18: H_target = -dim(A)
    if args.autotune:
        alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.q_lr, fused=True)

    # ALGO LOGIC: the update steps and the acting policy, as functions that --compile compiles
    def update_critic(obs, actions, rewards, next_obs, terminations, alpha) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            next_actions, next_log_prob = actor.get_action(next_obs)
            min_qf_next = torch.min(qf1_target(next_obs, next_actions), qf2_target(next_obs, next_actions))
            next_q_value = td_target(rewards, terminations, min_qf_next - alpha * next_log_prob, args.gamma)  # eq. 3
        qf1_a_values = qf1(obs, actions)
        qf2_a_values = qf2(obs, actions)
        qf_loss = F.mse_loss(qf1_a_values, next_q_value) + F.mse_loss(qf2_a_values, next_q_value)  # eq. 5
        apply_gradient(q_optimizer, qf_loss)
        return {"losses/qf_loss": qf_loss.detach() / 2, "losses/qf1_values": qf1_a_values.detach().mean()}

    def update_actor(obs, alpha) -> dict[str, torch.Tensor]:
        pi, log_pi = actor.get_action(obs)
        min_qf_pi = torch.min(qf1(obs, pi), qf2(obs, pi))
        actor_loss = (alpha * log_pi - min_qf_pi).mean()  # eq. 7
        apply_gradient(actor_optimizer, actor_loss)
        return {"losses/actor_loss": actor_loss.detach()}

    def update_alpha(obs) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # as CleanRL: log pi of a fresh sample from the just-updated actor
            _, log_pi = actor.get_action(obs)
        alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()  # eq. 18
        apply_gradient(alpha_optimizer, alpha_loss)
        return {"losses/alpha_loss": alpha_loss.detach()}

    def act(obs) -> torch.Tensor:  # the training policy: a sample of pi(.|s)
        return actor.get_action(obs)[0]

    if args.compile:
        update_critic, update_actor, update_alpha, act = (
            compile_function(f, device) for f in (update_critic, update_actor, update_alpha, act)
        )

    rb = ReplayBuffer(args.buffer_size, obs_dim, action_dim, device, args.seed)

    # TRY NOT TO MODIFY: the loop's state, everything a checkpoint holds; --resume continues from a checkpoint's
    modules = {**networks, "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer}
    modules.update({"alpha_optimizer": alpha_optimizer} if args.autotune else {})
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
            if num_updates % args.policy_frequency == 0:  # TD3 delayed update support
                for _ in range(args.policy_frequency):  # compensate for the delay by doing that many updates
                    losses.update(update_actor(b_obs, alpha))
                    if args.autotune:
                        losses.update(update_alpha(b_obs))
                        alpha = log_alpha.exp().detach()
                losses["losses/alpha"] = alpha

            if num_updates % args.target_network_frequency == 0:
                soft_update(qf1_target, qf1, args.tau)
                soft_update(qf2_target, qf2, args.tau)

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
