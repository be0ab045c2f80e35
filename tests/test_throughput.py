"""tools/throughput.py and benchmark.sh --estimate: the bill of a launch, from rates measured on this machine.

The arithmetic is checked on a stand-in algorithm file whose costs are set by its sleeps, so no rate is written
down anywhere: the estimate must find them by timing the stand-in's own loop and evaluation."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

STANDIN = '''"""A stand-in algorithm file with known costs, in the shared skeleton's names."""
import dataclasses, signal, sys, time
import gymnasium as gym
import numpy as np
import torch

UPDATE_SECONDS, RANDOM_SECONDS, EVAL_STEP_SECONDS, EVAL_STEPS = 0.01, 0.001, 0.002, 50


@dataclasses.dataclass
class Args:
    env_id: str = "Pendulum-v1"
    seed: int = 1
    run_name: str = ""
    total_timesteps: int = 1000
    learning_starts: int = 40
    num_envs: int = 2
    eval_freq: int = 100
    eval_episodes: int = 3
    checkpoint_freq: int = 0
    cuda: bool = True


class ReplayBuffer:
    def add(self, obs, *rest):
        pass


def find_env_problem(env_id):
    return None


def make_gym_env(env_id, render_mode=None):
    return gym.make(env_id, render_mode=render_mode)


def make_vector_env(env_id, seed, num_envs):
    return gym.vector.SyncVectorEnv([lambda: make_gym_env(env_id)] * num_envs)


def step_schedule(args):
    return 0, args.total_timesteps


def make_networks(obs_dim, action_dim, action_scale, args):
    return {}


def make_inference_policy(networks, action_dim, args):
    return (lambda obs: torch.zeros(len(obs), action_dim)), 1


def evaluate(act, eval_envs, low, high, device):
    for _ in range(EVAL_STEPS):
        act(torch.zeros(eval_envs.num_envs, 3))
        time.sleep(EVAL_STEP_SECONDS)


def main(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    rb = ReplayBuffer()
    for step in range(args.num_envs, args.total_timesteps + 1, args.num_envs):
        time.sleep(RANDOM_SECONDS if step <= args.learning_starts else UPDATE_SECONDS)
        rb.add(np.zeros((args.num_envs, 3)))
        if stop:
            sys.exit("stopped by SIGTERM")
'''


def run(command: list[str], cwd=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=environment)


@pytest.fixture
def standin_root(tmp_path):
    """benchmark.sh and the tool beside a stand-in file, as a checkout of the project would hold them."""
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "benchmark.sh", tmp_path)
    shutil.copy(ROOT / "tools" / "throughput.py", tmp_path / "tools")
    (tmp_path / "standin.py").write_text(STANDIN)
    return tmp_path


def test_estimate_finds_the_standins_rates_and_adds_them_up(standin_root):
    out = standin_root / "out"
    selection = ["--algos", "standin", "--envs", "Pendulum-v1", "--seeds", "1 2 3", "--total-timesteps", "1800000", "--seconds", "1"]
    estimate = ["bash", str(standin_root / "benchmark.sh"), "--estimate", *selection, "--out", str(out), "--workers", "2", "--slurm"]
    result = run([*estimate, "--", "--eval-freq", "2000"])
    assert result.returncode == 0, result.stderr
    # the stand-in: 2 env steps per 10 ms update iteration, 2 per 1 ms random step, 2 ms per evaluation step. Its
    # sleeps are the least each stage can take on any machine, so they bound the measured rates from one side only
    row = next(line.split("|") for line in result.stdout.splitlines() if line.startswith("| standin | Pendulum-v1 |"))
    steps_per_s, iterations_per_s, random_steps_per_s, eval_seconds = (float(row[i]) for i in (3, 4, 5, 6))
    assert 0 < steps_per_s <= 200 and 0 < iterations_per_s <= 100 and 0 < random_steps_per_s <= 2000
    assert eval_seconds >= 0.002 * 200  # scaled to Pendulum's 200-step time limit
    # the bill is arithmetic on the measured rates, as the table keeps them: one run is 40 random steps, 1799960
    # update steps and 1.8M / 2000 = 900 evaluations (the flag after -- counts)
    (measured,) = json.loads((out / "throughput.json").read_text()).values()
    seconds = (40 / measured["random_env_steps_per_s"] + 1_799_960 / measured["env_steps_per_s"] + 900 * measured["eval_seconds"])
    hours = seconds / 3600
    assert float(row[8]) == pytest.approx(hours, abs=0.006)  # printed with two decimals
    total = re.search(r"3 runs, ([\d.]+) run-hours: ([\d.]+) hours on 2 worker", result.stdout)
    assert total and float(total[1]) == pytest.approx(3 * hours, abs=0.006)
    assert float(total[2]) == pytest.approx(2 * hours, abs=0.006)  # two runs on one worker, one on the other
    minutes = math.ceil(seconds * 1.25 / 60)  # the longest run and a 25 % margin, whole minutes
    assert f"--time {minutes // 60:02d}:{minutes % 60:02d}:00" in result.stdout
    # it launched nothing: no run directory, only the table of rates
    assert sorted(path.name for path in out.iterdir()) == ["throughput.json"]
    table = json.loads((out / "throughput.json").read_text())
    assert len(table) == 1  # three seeds, one (file, env): measured once

    again = run([*estimate, "--", "--eval-freq", "2000"])
    assert again.returncode == 0 and "measuring" not in again.stderr  # the table is reused
    assert "3 runs" in again.stdout and json.loads((out / "throughput.json").read_text()) == table


def test_jobs_measures_side_by_side_and_keeps_those_rates_apart(standin_root):
    table_path, tool = standin_root / "t.json", [sys.executable, str(standin_root / "tools" / "throughput.py")]
    selection = ["--algos", "standin", "--envs", "Pendulum-v1", "MountainCarContinuous-v0", "--seconds", "3", "--table", str(table_path)]
    result = run([*tool, *selection, "--jobs", "2"], cwd=standin_root)
    assert result.returncode == 0, result.stderr
    assert "2 measurements at a time, side by side" in result.stdout
    assert all(f"| standin | {env} |" in result.stdout for env in ("Pendulum-v1", "MountainCarContinuous-v0"))
    table = json.loads(table_path.read_text())
    assert len(table) == 2 and all(key.endswith(" | 2 at a time") for key in table)
    (first_start, first_end), (second_start, second_end) = (entry["window"] for entry in table.values())
    assert first_start < second_end and second_start < first_end  # the two timed windows overlap: side by side
    alone = run([*tool, *selection], cwd=standin_root)  # one at a time: measured again, beside the side-by-side rates
    assert alone.returncode == 0 and alone.stderr.count("measuring") == 2 and "one measurement at a time" in alone.stdout
    assert len(json.loads(table_path.read_text())) == 4


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: [])(0)) < 2, reason="--against needs two cores")
def test_against_measures_two_trees_at_once_on_a_core_each_and_prints_their_ratio(standin_root, tmp_path_factory):
    """Another checkout whose stand-in sleeps twice as long per update: its rate, measured at the same time on the other
    core, is about half, and the printed ratio is the quotient of the printed rates."""
    slower = tmp_path_factory.mktemp("slower")
    shutil.copytree(standin_root, slower, dirs_exist_ok=True)
    (slower / "standin.py").write_text(STANDIN.replace("= 0.01, 0.001,", "= 0.02, 0.001,", 1))
    assert "= 0.02, 0.001," in (slower / "standin.py").read_text()
    result = run([sys.executable, str(standin_root / "tools" / "throughput.py"), "--algos", "standin", "--envs", "Pendulum-v1",
                  "--device", "cpu", "--seconds", "2", "--against", str(slower)], cwd=standin_root)
    assert result.returncode == 0, result.stderr
    row = next(line.split("|") for line in result.stdout.splitlines() if line.startswith("| standin | Pendulum-v1 |"))
    there, here, ratio, overlap = float(row[3]), float(row[4]), float(row[5]), float(row[6].strip().rstrip("%"))
    assert ratio == pytest.approx(here / there, abs=0.01) and 1.3 < ratio < 2.3  # 10 ms against 20 ms an update
    assert overlap > 50  # side by side: the two timed windows share most of their seconds
    cores = re.findall(r"\(cores \[(\d+)\], 1 torch thread\(s\)\)", result.stdout)  # each child on one core, one thread
    assert len(cores) == 2 and cores[0] != cores[1], result.stdout
    assert not (standin_root / "benchmark_runs").exists() and not (slower / "benchmark_runs").exists()  # no table written


@pytest.mark.parametrize("flags", [["--against", "{empty}"], ["--against", "{checkout}", "--jobs", "2"], ["--against", "{checkout}", "--floor"]])
def test_against_refuses_what_is_not_a_checkout_or_not_one_pair_at_a_time(flags, standin_root):
    empty, checkout = standin_root / "empty", standin_root / "checkout"
    empty.mkdir()
    (checkout / "tools").mkdir(parents=True)
    (checkout / "tools" / "throughput.py").write_text("")
    result = run([sys.executable, str(standin_root / "tools" / "throughput.py"), "--algos", "standin", "--envs", "Pendulum-v1",
                  "--device", "cpu", *(flag.format(empty=empty, checkout=checkout) for flag in flags)], cwd=standin_root)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--against" in result.stderr, result.stderr


def test_a_child_that_fails_stops_the_tool_with_one_line_naming_its_command_once(standin_root):
    table_path = standin_root / "t.json"
    result = run([sys.executable, str(standin_root / "tools" / "throughput.py"), "--algos", "standin", "--envs", "Pendulum-v1",
                  "--seconds", "1", "--jobs", "2", "--table", str(table_path), "--", "--total-timesteps", "30"], cwd=standin_root)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]  # the stand-in ends at 30 steps, before its 40 random ones are over
    assert last_line.startswith("throughput.py: error: standin.py ") and last_line.count("standin.py") == 1, last_line
    assert "raise --total-timesteps" in last_line and not table_path.exists()


def test_a_real_short_measurement_gives_positive_rates(tmp_path):
    result = run([sys.executable, str(ROOT / "tools" / "throughput.py"), "--algos", "sac_baseline", "--envs", "Pendulum-v1",
                  "--device", "cpu", "--seconds", "2", "--table", str(tmp_path / "t.json"), "--",
                  "--learning-starts", "300", "--buffer-size", "10000"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((tmp_path / "t.json").read_text()).values()
    assert entry["env_steps_per_s"] > 0 and entry["iterations_per_s"] > 0 and entry["random_env_steps_per_s"] > 0
    assert entry["eval_seconds"] > 0 and entry["eval_vector_steps_timed"] == 200  # Pendulum never terminates early
    assert "| sac_baseline | Pendulum-v1 |" in result.stdout
    assert not (tmp_path / "runs").exists()  # the timed run wrote into a temporary directory


@pytest.mark.parametrize("command", [
    ["bash", "benchmark.sh", "--estimate", "--algos", "no_such_algo"],
    ["bash", "benchmark.sh", "--estimate", "--envs", "NoSuchEnv-v0", "--algos", "sac_baseline"],
    ["bash", "benchmark.sh", "--estimate", "--seconds", "0"],
    [sys.executable, "tools/throughput.py", "--algos", "no_such_algo"],
    [sys.executable, "tools/throughput.py", "--envs", "NoSuchEnv-v0"],
    [sys.executable, "tools/throughput.py", "--seconds", "0"],
    [sys.executable, "tools/throughput.py", "--jobs", "0"],
])
def test_a_bad_selection_gets_one_line(command, tmp_path):
    result = run([*command, *(["--out", str(tmp_path)] if command[0] == "bash" else ["--table", str(tmp_path / "t.json")])], cwd=ROOT)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(r"no_such_algo|NoSuchEnv|seconds|jobs", result.stderr)
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_floor_times_a_file_eager_and_compiled_and_names_the_cpu(tmp_path):
    result = run([sys.executable, str(ROOT / "tools" / "throughput.py"), "--floor", "--algos", "td3_baseline", "--envs",
                  "Pendulum-v1", "--device", "cpu", "--seconds", "1", "--jobs", "2", "--", "--learning-starts", "300",
                  "--buffer-size", "10000"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\((\d+) cores, (AVX-512|AVX2|no AVX2|instruction set unknown)\)", result.stdout)  # the CPU and its vectors
    assert "2 measurements at a time" in result.stdout  # eager and compiled side by side
    assert "--batch-size 2" in result.stdout  # the header names the shrunk flags
    row = next(line.split("|") for line in result.stdout.splitlines() if line.startswith("| td3_baseline | Pendulum-v1 |"))
    eager, compiled, ratio = float(row[3]), float(row[5]), float(row[7])
    assert eager > 0 and compiled > 0 and ratio == pytest.approx(compiled / eager, abs=0.01)
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "runs").exists()  # nothing written



def test_rates_measured_with_a_preloaded_library_are_kept_apart(monkeypatch):
    """The README's library for AMD CPUs changes the rates of the same code on the same machine: a table keeps them
    under a machine name of their own, so an estimate never prices a launch with the other's rates."""
    import throughput

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    plain = throughput.machine_name("cpu")
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libmkl_intel_path.so:/usr/lib/libother.so")
    assert throughput.machine_name("cpu") == f"{plain} / LD_PRELOAD=libmkl_intel_path.so,libother.so"
    command = ["python", "mfpo.py", "--env-id", "Hopper-v4"]
    assert throughput.table_key(throughput.machine_name("cpu"), command, 1) != throughput.table_key(plain, command, 1)
