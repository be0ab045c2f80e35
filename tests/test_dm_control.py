"""The DeepMind Control Suite through shimmy (dm_control/<domain>-<task>-v0): every file trains on a task of it, is
refused in one line without dm-control and shimmy, names its runs one folder deep, resumes a killed run, films in real
time; benchmark.sh selects the hard tasks and the tools take the ids."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
import tyro
from conftest import ONE_THREAD, ROOT, load_algo, read_evaluations, run_tool, short_run
from test_benchmark import benchmark
from test_enjoy_and_videos import EGL, render_shape, video_frames
from test_resume import RESUMABLE_RUN, check_killed_then_stopped_run_resumes

TASK = "dm_control/cartpole-swingup-v0"  # a cheap one: a Dict of 3 positions and 2 velocities, one action
RUN_ENV = "dm_control-cartpole-swingup-v0"  # its part of a run's name
INSTALL = 'pip install dm-control "shimmy[dm-control]"'
needs_dm_control = pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("dm_control", "shimmy")),
                                      reason=f"the DeepMind Control Suite is an optional extra: {INSTALL}")


def test_without_dm_control_a_task_of_it_is_refused_in_one_line(algo, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "shimmy", None)  # `import shimmy` now fails as it does where it is not installed
    with pytest.raises(SystemExit) as stop:
        module.main(tyro.cli(module.Args, args=["--no-cuda", "--env-id", TASK]))
    assert str(stop.value.code) == f"{algo}: error: --env-id {TASK}: the DeepMind Control Suite needs dm-control and shimmy: {INSTALL}"
    assert not (tmp_path / "runs").exists()


def test_a_run_name_with_a_slash_is_refused(algo):
    module = load_algo(algo)
    assert module.find_arg_problem(module.Args(run_name="a/b")) == "--run-name must be one folder name, without '/', got 'a/b'"


@needs_dm_control
def test_every_file_trains_evaluates_and_saves_on_a_dm_control_task(algo, tmp_path):
    short_run(algo, tmp_path, "--env-id", TASK, "--save-model")  # the default run name
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"{RUN_ENV}__{algo}__1__")  # one folder deep
    rows = read_evaluations(run_dir)
    assert [row["global_step"] for row in rows] == [200, 400]
    assert all(0 <= row["mean_return"] <= 1000 for row in rows)  # dm_control's rewards lie in [0, 1], 1000 steps

    module = load_algo(algo)
    envs = module.make_vector_env(TASK, 0, 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 5) and obs.dtype == "float32"  # the Dict as one float32 vector
    assert envs.single_observation_space.shape == (5,)
    envs.close()
    saved = torch.load(run_dir / f"{algo}.pt", weights_only=True)
    networks = module.make_networks(5, 1, torch.ones(1), module.Args(**saved["args"]))
    for name, network in networks.items():
        network.load_state_dict(saved[name])  # strict: the networks saw 5 numbers and nothing else


@needs_dm_control
def test_killed_dm_control_run_resumes_to_the_uninterrupted_schedule(tmp_path):
    """The env draws from a legacy np.random.RandomState (dm_control's): the checkpoint keeps it as plain data."""
    check_killed_then_stopped_run_resumes("fpmd_m", tmp_path, [*RESUMABLE_RUN, "--env-id", TASK])


@needs_dm_control
def test_videos_play_in_real_time(tmp_path):
    render_shape()  # skips where MUJOCO_GL=egl cannot render
    short_run("sac_baseline", tmp_path, "--env-id", TASK, "--run-name", "filmed", "--capture-video", "--save-model", env=EGL)
    (trained,) = (tmp_path / "videos" / "filmed").glob("*.mp4")
    assert video_frames(trained)[2] == 100  # cartpole's control step is 0.01 s (shimmy's metadata says 10 frames/s)
    result = run_tool("enjoy.py", str(tmp_path / "runs" / "filmed" / "sac_baseline.pt"), "--episodes", "1", "--capture-video",
                      cwd=tmp_path, env=EGL)
    assert result.returncode == 0, result.stderr[-2000:]
    (watched,) = (tmp_path / "videos" / "filmed-enjoy").glob("*.mp4")
    _, frames, fps = video_frames(watched)
    assert fps == 100 and frames >= 999  # a whole episode: 1000 steps, 10 s


def test_benchmark_selects_the_hard_tasks_with_one_option(tmp_path):
    dry = benchmark("--dry-run", "--suite", "dmc-hard", "--algos", "fpmd_m", "--seeds", "1", "--out", str(tmp_path))
    lines = dry.stdout.strip().splitlines()
    tasks = ["dog-run", "dog-trot", "dog-stand", "dog-walk", "humanoid-run", "humanoid-walk"]
    assert len(lines) == len(tasks)
    for line, task in zip(lines, tasks):
        assert f"--env-id dm_control/{task}-v0 --seed 1 --run-name dm_control-{task}-v0__fpmd_m__1 --total-timesteps 1000000" in line
        assert "--eval-freq 25000 --eval-episodes 20" in line  # the MuJoCo tables' protocol
    bad = benchmark("--dry-run", "--suite", "dmc", "--out", str(tmp_path))
    assert bad.returncode != 0 and bad.stderr.strip() == "benchmark.sh: error: --suite must be mujoco or dmc-hard, got 'dmc'"


@needs_dm_control
def test_benchmark_runs_and_summarizes_a_dm_control_task(tmp_path):
    pytest.importorskip("matplotlib", reason="the learning curves need the optional extra requirements-extras.txt")
    out = tmp_path / "out"
    selection = ["--algos", "sac_baseline", "--envs", TASK, "--seeds", "1", "--total-timesteps", "400", "--out", str(out),
                 "--", "--learning-starts", "300", "--eval-freq", "200", "--eval-episodes", "1", "--batch-size", "32", "--no-cuda"]
    first = benchmark(*selection)
    assert first.returncode == 0 and "1 trained" in first.stdout.splitlines()[-1], first.stdout + first.stderr
    assert [path.name for path in (out / "runs").iterdir()] == [f"{RUN_ENV}__sac_baseline__1"]
    again = benchmark(*selection)
    assert "0 trained, 1 already finished, 0 failed" in again.stdout  # the finished-run rule sees it

    summary = subprocess.run([sys.executable, str(ROOT / "tools" / "summarize.py"), str(out / "runs"), "--out", str(tmp_path / "summary")],
                             capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    table = (tmp_path / "summary" / "table.md").read_text()
    assert f"| {RUN_ENV} |" in table and "*paper: none*" in table  # no paper prints a DMC number in a table
    assert (tmp_path / "summary" / "curves" / f"{RUN_ENV}.png").exists()


@needs_dm_control
def test_throughput_times_a_dm_control_task(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "throughput.py"), "--algos", "sac_baseline", "--envs", TASK,
                             "--device", "cpu", "--seconds", "2", "--table", str(tmp_path / "t.json"), "--",
                             "--learning-starts", "300", "--buffer-size", "10000", "--eval-episodes", "2"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((tmp_path / "t.json").read_text()).values()
    assert entry["env_steps_per_s"] > 0 and entry["eval_vector_steps_timed"] == 1000  # dm_control's episodes: 1000 steps
    assert f"| sac_baseline | {TASK} |" in result.stdout


@needs_dm_control
def test_inference_time_takes_a_dm_control_id(tmp_path):
    result = run_tool("inference_time.py", "--env-id", TASK, "--algos", "sac_baseline", "fpmd_m", "--calls", "1000", "--warmup", "10",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| fpmd_m | 1 |" in result.stdout
