"""tools/enjoy.py on each file's saved model and on a checkpoint, its one-line errors, and real MP4 videos from
--capture-video in training and in enjoy.py on a machine without a screen (MUJOCO_GL=egl)."""

import signal
import subprocess
import sys

import pytest
import torch
from conftest import ONE_THREAD, TINY_ARGS, algo_command, checkpoint_step, run_tool, short_run, wait_until
from test_resume import RESUMABLE_RUN

EGL = {**ONE_THREAD, "MUJOCO_GL": "egl"}


def enjoy(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_tool("enjoy.py", *args, cwd=cwd, env=env)


def returns_of(result: subprocess.CompletedProcess) -> list[float]:
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("returns: "))
    return [float(value) for value in line.removeprefix("returns: ").split(", ")]


def test_enjoy_rescores_a_saved_model(algo, tmp_path):
    short_run(algo, tmp_path, "--env-id", "Pendulum-v1", "--run-name", "saved", "--save-model")
    model = tmp_path / "runs" / "saved" / f"{algo}.pt"
    first = returns_of(enjoy(str(model), "--episodes", "2", "--seed", "5", cwd=tmp_path))
    assert len(first) == 2 and all(-1e4 < value < 0 for value in first)  # Pendulum's returns are finite and negative
    assert returns_of(enjoy(str(model), "--episodes", "2", "--seed", "5", cwd=tmp_path)) == first  # same seed, same returns
    assert returns_of(enjoy(str(model), "--episodes", "2", "--seed", "6", cwd=tmp_path)) != first


def test_enjoy_rescores_a_checkpoint(tmp_path):
    flags = [*RESUMABLE_RUN, *TINY_ARGS["fpmd_m"], "--run-name", "stopped"]
    run_dir = tmp_path / "runs" / "stopped"
    process = subprocess.Popen(algo_command("fpmd_m", *flags), cwd=tmp_path, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: process.poll() is not None or (run_dir / "checkpoint.pt").exists())
    process.send_signal(signal.SIGTERM)  # the run writes a checkpoint of its latest step and stops
    process.wait()
    assert checkpoint_step(run_dir) > 250  # past the warm-up: the weights were trained
    result = enjoy(str(run_dir / "checkpoint.pt"), "--episodes", "2", cwd=tmp_path)
    assert len(returns_of(result)) == 2 and "fpmd_m.py policy" in result.stdout and "NFE 1" in result.stdout
    assert returns_of(enjoy(str(run_dir / "checkpoint.pt"), "--episodes", "2", cwd=tmp_path)) == returns_of(result)


def test_enjoy_refuses_what_it_cannot_load_with_one_line(tmp_path):
    short_run("sac_baseline", tmp_path, "--env-id", "Pendulum-v1", "--run-name", "saved", "--save-model")
    model = torch.load(tmp_path / "runs" / "saved" / "sac_baseline.pt", weights_only=True)
    torch.save({**model, "args": {**model["args"], "old_flag": 3}}, tmp_path / "old.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("not a model\n")
    cases = {"missing.pt": "no file", "other.pt": "no saved arguments", "notes.txt": "not a model or checkpoint",
             "old.pt": "no longer accepts: --old-flag"}
    for name, expected in cases.items():
        result = enjoy(str(tmp_path / name), cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr


def render_shape() -> tuple[int, ...]:
    """The shape of a Hopper-v4 frame rendered off-screen with MUJOCO_GL=egl; skips the test where that fails."""
    pytest.importorskip("moviepy", reason="videos need moviepy, from the optional extra requirements-extras.txt")
    probe = "import gymnasium as gym; env = gym.make('Hopper-v4', render_mode='rgb_array'); env.reset(seed=0); print(*env.render().shape)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=EGL)
    if result.returncode != 0:
        pytest.skip(f"MUJOCO_GL=egl does not render here: {result.stderr.strip().splitlines()[-1]}")
    return tuple(int(size) for size in result.stdout.split())


def video_frames(path) -> tuple[tuple[int, ...], int, float]:
    """The frame shape, the number of frames and the frames per second of an MP4, read back with moviepy."""
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(path))
    try:
        return clip.get_frame(0).shape, round(clip.duration * clip.fps), clip.fps
    finally:
        clip.close()


def test_videos_from_training_and_from_enjoy_are_real_mp4s(tmp_path):
    frame_shape = render_shape()
    short_run("sac_baseline", tmp_path, "--env-id", "Hopper-v4", "--run-name", "filmed", "--capture-video", "--save-model", env=EGL)
    trained = sorted((tmp_path / "videos" / "filmed").glob("*.mp4"))
    assert trained and all(video_frames(path)[0] == frame_shape for path in trained)
    result = enjoy(str(tmp_path / "runs" / "filmed" / "sac_baseline.pt"), "--episodes", "2", "--capture-video", cwd=tmp_path, env=EGL)
    assert result.returncode == 0, result.stderr[-2000:]
    watched = sorted((tmp_path / "videos" / "filmed-enjoy").glob("*.mp4"))
    assert len(watched) == 2  # every episode
    for path in watched:
        shape, frames, _ = video_frames(path)
        assert shape == frame_shape and frames >= 2
