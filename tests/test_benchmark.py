"""benchmark.sh end to end: the command list, a tiny real benchmark with its summary, resuming after a finished,
a killed and a failing run, and FPMD runs killed at every boundary of a full-length run's arithmetic (scaled down,
the warm-up offset kept: an FPMD budget counts after the warm-up, so its evaluations fall past --total-timesteps)."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import ALGOS, ROOT, read_evaluations
from runs import COMPLETION_MARKER

BENCHMARK = ROOT / "benchmark.sh"
# Two quick files and flags that both accept: a few hundred steps that still reach the updates and evaluations.
TINY = ["--algos", "sac_baseline td3_baseline", "--envs", "Pendulum-v1", "--seeds", "1 2", "--total-timesteps", "400"]
TINY_FLAGS = ["--", "--learning-starts", "300", "--eval-freq", "200", "--eval-episodes", "2", "--batch-size", "32",
              "--buffer-size", "1000", "--no-cuda"]


def benchmark(*args: str, timeout: float = 600, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.run(["bash", str(BENCHMARK), *args], capture_output=True, text=True, timeout=timeout, env=environment)


def test_dry_run_lists_every_algo_env_seed_command(tmp_path):
    result = benchmark("--dry-run", "--out", str(tmp_path / "out"))
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and len(lines) == 10 * 5 * len(ALGOS)
    names = {re.search(r"--run-name (\S+)", line).group(1) for line in lines}
    assert len(names) == len(lines)  # every (env, algo, seed) once
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
    for line in lines:
        budget = int(re.search(r"--total-timesteps (\d+)", line).group(1))
        assert budget == (5_000_000 if "Humanoid" in line and "/fpmd_" in line else 1_000_000), line
        assert ("--no-use-cdq" in line) == ("/mfpo.py" in line and "HalfCheetah" in line), line
        assert "--eval-freq 25000 --eval-episodes 20 --checkpoint-freq 50000" in line  # Table 1's protocol; resumable

    selected = benchmark("--dry-run", "--algos", "sac_baseline td3_baseline", "--envs", "Hopper-v4 Ant-v4",
                         "--seeds", "1 2 3", "--total-timesteps", "5000", "--", "--eval-episodes", "3")
    lines = selected.stdout.strip().splitlines()
    assert len(lines) == 2 * 2 * 3 and all("--total-timesteps 5000" in l and l.endswith("--eval-episodes 3") for l in lines)
    unquoted = benchmark("--dry-run", "--algos", "sac_baseline", "td3_baseline", "--envs", "Hopper-v4", "Ant-v4",
                         "--seeds", "1", "2", "3", "--total-timesteps", "5000", "--", "--eval-episodes", "3")
    assert unquoted.stdout == selected.stdout  # lists as CleanRL's benchmark utility takes them: the same commands


def test_tiny_benchmark_summary_and_rerun_skips(tmp_path):
    pytest.importorskip("matplotlib", reason="the learning curves need the optional extra requirements-extras.txt")
    out = tmp_path / "out"
    first = benchmark(*TINY, "--workers", "2", "--out", str(out), *TINY_FLAGS)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 trained, 0 already finished, 0 failed" in first.stdout.splitlines()[-1]
    csvs = sorted((out / "runs").glob("*/evaluations.csv"))
    assert len(csvs) == 4
    stamps = [path.stat().st_mtime_ns for path in csvs]

    again = benchmark(*TINY, "--out", str(out), *TINY_FLAGS)
    assert again.returncode == 0 and "0 trained, 4 already finished, 0 failed" in again.stdout
    assert [path.stat().st_mtime_ns for path in csvs] == stamps  # finished runs untouched

    summary = subprocess.run([sys.executable, str(ROOT / "tools" / "summarize.py"), str(out / "runs"), "--out", str(tmp_path / "summary")],
                             capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    table = (tmp_path / "summary" / "table.md").read_text()
    assert "| Pendulum-v1 |" in table and table.count("[2]") == 2  # both algorithms, two seeds each
    assert "| Pendulum-v1 | sac_baseline | 2 | 200 | 200 | 2 |" in table  # the protocol: 2 evaluations of 2 episodes
    assert (tmp_path / "summary" / "table.csv").read_text().count("Pendulum-v1") == 2
    assert "sac_baseline" in (tmp_path / "summary" / "walltime.md").read_text()
    png = tmp_path / "summary" / "curves" / "Pendulum-v1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def kill_benchmark_when(args: list[str], condition) -> None:
    """Run benchmark.sh in the background and SIGKILL it and its training process, mid-run, once `condition()`."""
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(["bash", str(BENCHMARK), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment, start_new_session=True)
    deadline = time.time() + 300
    while not condition() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


KILLED_RUN = ["--algos", "sac_baseline", "--envs", "Pendulum-v1", "--seeds", "1", "--total-timesteps", "1200"]
KILLED_RUN_FLAGS = ["--", "--learning-starts", "300", "--eval-freq", "100", "--eval-episodes", "1", "--no-cuda"]


def test_run_killed_before_a_checkpoint_restarts_cleanly_without_duplicate_rows(tmp_path):
    out = tmp_path / "out"
    args = [*KILLED_RUN, "--out", str(out), *KILLED_RUN_FLAGS]  # the default checkpoint frequency: none within 1200 steps
    run_dir = out / "runs" / "Pendulum-v1__sac_baseline__1"
    kill_benchmark_when(args, lambda: len(read_evaluations(run_dir)) >= 4)
    partial = read_evaluations(run_dir)
    assert 4 <= len(partial) < 12

    restarted = benchmark(*args)
    assert restarted.returncode == 0 and "start   Pendulum-v1__sac_baseline__1" in restarted.stdout
    steps = [row["global_step"] for row in read_evaluations(run_dir)]
    assert steps == [100.0 * i for i in range(1, 13)]  # complete, each evaluation once
    kept = list((out / "interrupted").glob("Pendulum-v1__sac_baseline__1.*"))
    assert any(read_evaluations(path) == partial for path in kept if path.is_dir())  # the partial run was kept


def test_run_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    out = tmp_path / "out"
    args = [*KILLED_RUN, "--checkpoint-freq", "400", "--out", str(out), *KILLED_RUN_FLAGS]
    run_dir = out / "runs" / "Pendulum-v1__sac_baseline__1"
    kill_benchmark_when(args, lambda: (run_dir / "checkpoint.pt").exists() and len(read_evaluations(run_dir)) >= 5)
    partial = read_evaluations(run_dir)
    assert 5 <= len(partial) < 12 and (run_dir / "checkpoint.pt").exists()

    resumed = benchmark(*args)
    assert resumed.returncode == 0 and "resume  Pendulum-v1__sac_baseline__1" in resumed.stdout, resumed.stdout
    rows = read_evaluations(run_dir)
    assert [row["global_step"] for row in rows] == [100.0 * i for i in range(1, 13)]  # complete, each evaluation once
    assert rows[:4] == partial[:4]  # the evaluations up to the checkpoint at step 400 were kept, not trained again
    assert not list((out / "interrupted").glob("Pendulum-v1__sac_baseline__1.*"))


def test_failing_run_does_not_stop_the_others(tmp_path):
    """A run that fails (CartPole's discrete actions), and one whose checkpoint cannot be read, which keeps it."""
    out = tmp_path / "out"
    unreadable = out / "runs" / "Pendulum-v1__sac_baseline__2" / "checkpoint.pt"
    unreadable.parent.mkdir(parents=True)
    unreadable.write_bytes(b"PK\x03\x04 cut short")
    result = benchmark("--algos", "sac_baseline", "--envs", "CartPole-v1 Pendulum-v1", "--seeds", "1 2",
                       "--total-timesteps", "400", "--out", str(out), *TINY_FLAGS)
    assert result.returncode != 0
    assert "1 trained, 0 already finished, 3 failed" in result.stdout.splitlines()[-1]
    assert "not a Box" in (out / "logs" / "CartPole-v1__sac_baseline__1.log").read_text()
    assert read_evaluations(out / "runs" / "Pendulum-v1__sac_baseline__1")[-1]["global_step"] == 400
    log = (out / "logs" / "Pendulum-v1__sac_baseline__2.log").read_text().strip().splitlines()
    assert log[-1].startswith("sac_baseline: error: --resume: runs/Pendulum-v1__sac_baseline__2/checkpoint.pt cannot be read (")
    assert unreadable.read_bytes() == b"PK\x03\x04 cut short"


def test_bad_benchmark_options_are_rejected(tmp_path):
    for args in (["--workers", "0"], ["--algos", "no_such_algo"], ["--bogus"], ["--checkpoint-freq", "-5"]):
        result = benchmark(*args, "--dry-run", "--out", str(tmp_path))
        assert result.returncode == 2 and result.stderr.startswith("benchmark.sh: error:"), args


# learning starts at 300 env steps, the budget of 400 counts after it: evaluations at 400, 500, 600, 700 (the last at
# the final step, 700), checkpoints at 200, 400 and 600
FLAGS = ["--", "--learning-starts", "300", "--eval-freq", "100", "--eval-episodes", "1", "--batch-size", "16",
         "--buffer-size", "2000", "--num-particles", "2", "--no-cuda"]
SELECTION = ["--algos", "fpmd_m", "--envs", "Pendulum-v1", "--seeds", "1 2 3 4", "--total-timesteps", "400", "--checkpoint-freq", "200"]
KILLS = {  # seed: where its first attempt dies
    1: ["step", 150],  # during the warm-up, before any checkpoint: the run starts again
    2: ["step", 550],  # after the evaluation at 500 (past --total-timesteps), the checkpoint at 400 behind it
    3: ["completion", 0],  # after the last evaluation (700), before the run marks itself complete
    4: ["checkpoint", 2],  # in the middle of writing its second checkpoint (400): the one at 200 stays whole
}
# Runs an algorithm file as `python FILE ARGS` would, and SIGKILLs it once, at the boundary KILLS names for its seed.
KILLER = '''
import importlib.util, json, os, signal, sys
from pathlib import Path
import tyro

path, args = sys.argv[1], sys.argv[2:]
spec = importlib.util.spec_from_file_location(Path(path).stem, path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seed, run_name = args[args.index("--seed") + 1], args[args.index("--run-name") + 1]
kind, at = json.loads(os.environ["KILLS"]).get(seed, [None, None])
marker = Path(os.environ["KILLED"]) / run_name
die = lambda: marker.touch() or os.kill(os.getpid(), signal.SIGKILL)
if kind and not marker.exists():
    if kind == "step":
        add, steps = module.ReplayBuffer.add, []
        def add_then_die(buffer, obs, *rest):
            add(buffer, obs, *rest)
            steps.append(len(obs))
            if sum(steps) >= at:
                die()
        module.ReplayBuffer.add = add_then_die
    elif kind == "completion":
        module.mark_completed = lambda *_: die()
    elif kind == "checkpoint":
        saves = []
        def torn_save(path, state):
            saves.append(path)
            if len(saves) == at:
                Path(path + ".tmp").write_bytes(b"torn")
                die()
            save(path, state)
        save, module.save_checkpoint = module.save_checkpoint, torn_save
module.main(tyro.cli(module.Args, args=args))
'''


def test_runs_killed_at_every_boundary_finish_with_each_evaluation_once(tmp_path):
    out, killed = tmp_path / "out", tmp_path / "killed"
    killed.mkdir()
    (tmp_path / "killer.py").write_text(KILLER)
    python = tmp_path / "python"  # what benchmark.sh runs each file with
    python.write_text(f'#!/bin/sh\ncase "$1" in */tools/*) exec {sys.executable} "$@" ;; esac\nexec {sys.executable} {tmp_path / "killer.py"} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    environment = {**os.environ, "PYTHON": str(python), "OMP_NUM_THREADS": "1", "KILLS": json.dumps({str(k): v for k, v in KILLS.items()}),
                   "KILLED": str(killed)}
    benchmark = lambda: subprocess.run(["bash", str(ROOT / "benchmark.sh"), *SELECTION, "--out", str(out), *FLAGS],
                                       capture_output=True, text=True, timeout=900, env=environment)
    first = benchmark()
    assert "0 trained, 0 already finished, 4 failed" in first.stdout.splitlines()[-1], first.stdout + first.stderr
    assert sorted(path.name for path in killed.iterdir()) == [f"Pendulum-v1__fpmd_m__{seed}" for seed in KILLS]
    run_dirs = {seed: out / "runs" / f"Pendulum-v1__fpmd_m__{seed}" for seed in KILLS}
    assert [row["global_step"] for row in read_evaluations(run_dirs[2])] == [400, 500]  # the old rule called this finished
    assert [row["global_step"] for row in read_evaluations(run_dirs[3])][-1] == 700  # and this one too

    for _ in range(3):  # until every run finishes; one more round is expected to do it
        again = benchmark()
        if "4 already finished" in again.stdout:
            break
    assert "0 trained, 4 already finished, 0 failed" in again.stdout, again.stdout + again.stderr
    for seed, run_dir in run_dirs.items():
        assert [row["global_step"] for row in read_evaluations(run_dir)] == [400, 500, 600, 700], seed  # each once
        assert (run_dir / COMPLETION_MARKER).exists() and not list(run_dir.glob("checkpoint.pt*")), seed
    assert list((out / "interrupted").glob("Pendulum-v1__fpmd_m__1.*"))  # the warm-up kill started again, kept

    summary = subprocess.run([sys.executable, str(ROOT / "tools" / "summarize.py"), str(out / "runs"), "--out",
                              str(tmp_path / "summary"), "--no-plots"], capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    assert "4 runs (4 finished)" in summary.stdout and "| Pendulum-v1 | fpmd_m | 4 | 4 |" in (tmp_path / "summary" / "walltime.md").read_text()
