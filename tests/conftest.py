"""Shared helpers: which algorithm files exist, how to run one, how to read what a run wrote.

Every algorithm file is self-contained, so most tests are parametrized over all of them: each file's own copy of
the shared skeleton (env handling, replay buffer, logging) is checked, not one file's on behalf of the others.
"""

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from runs import algorithm_files, read_evaluations  # noqa: E402,F401  (tests import it from here)

# The algorithm files the suite knows, each with flags that make it cheap enough for a test. test_every_algorithm_file
# checks that the files on disk (found as benchmark.sh finds them) are exactly these: a missing or new one fails.
TINY_ARGS = {
    "sac_baseline": [],
    "td3_baseline": [],
    "fpmd_r": ["--num-particles", "4", "--flow-steps", "2", "--budget-includes-warmup"],  # the shared step schedule
    "fpmd_m": ["--num-particles", "4", "--budget-includes-warmup"],
    "mfpo": ["--num-policy-samples", "4", "--num-gaussian-samples", "4", "--num-candidates", "3"],
}
ALGOS = list(TINY_ARGS)

# A run that reaches the update code, an evaluation and --save-model within a few hundred env steps.
SHORT_RUN = ["--total-timesteps", "400", "--learning-starts", "350", "--eval-freq", "200", "--eval-episodes", "2"]
SHORT_RUN += ["--batch-size", "32", "--buffer-size", "1000", "--no-cuda"]


def load_algo(name: str):
    """Import an algorithm file as a module (importing has no side effects)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


def algo_command(name: str, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / f"{name}.py"), *flags]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # runs side by side do not oversubscribe the cores


def run_algo(name: str, cwd: Path, *flags: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python {name}.py {flags}` in `cwd` (runs/ lands there) and return the finished process."""
    return subprocess.run(algo_command(name, *flags), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or ONE_THREAD)


def run_tool(name: str, *args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python tools/{name} {args}` in `cwd` and return the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env or ONE_THREAD)


def short_run(name: str, cwd: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A tiny training run of `name` that must succeed."""
    result = run_algo(name, cwd, *SHORT_RUN, *TINY_ARGS[name], *flags, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def wait_until(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def checkpoint_step(run_dir) -> int:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["global_step"]


class SmallFlowNetwork(nn.Module):
    """A small f(s, x, *times) with the flow files' network interface, so that their losses and samplers train and
    sample it fast: its time features are the times themselves, and forward takes the times or their features."""

    def __init__(self, obs_dim: int = 1, action_dim: int = 1, num_times: int = 1, width: int = 64, out_dim: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + action_dim + num_times, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, out_dim or action_dim))

    def time_features(self, *times: torch.Tensor) -> torch.Tensor:
        return torch.stack(times, -1)

    def forward(self, obs, x, *times, time_features=None):
        time_features = self.time_features(*times) if time_features is None else time_features
        return self.net(torch.cat([obs, x, time_features.expand(*x.shape[:-1], -1)], -1))


@pytest.fixture(params=ALGOS)
def algo(request) -> str:
    return request.param
