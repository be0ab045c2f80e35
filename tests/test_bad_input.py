"""Bad input stops a file before any training, with one line that names what was wrong."""

import math
import sys

import pytest
import tyro
from conftest import ALGOS, SHORT_RUN, TINY_ARGS, load_algo, read_evaluations, run_algo, short_run

COMMON_BAD_INPUT = [
    (["--env-id", "CartPole-v1"], "not a Box"),
    (["--env-id", "NoSuchEnv-v0"], "--env-id"),
    (["--batch-size", "512", "--buffer-size", "100"], "--batch-size"),
    (["--total-timesteps", "0"], "--total-timesteps"),
    (["--buffer-size", "-5"], "--buffer-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--num-envs", "0"], "--num-envs"),
    (["--eval-episodes", "0"], "--eval-episodes"),
    (["--checkpoint-freq", "-1"], "--checkpoint-freq"),
    (["--resume"], "--run-name"),
    (["--resume", "--run-name", "never-ran"], "no checkpoint runs/never-ran/checkpoint.pt"),
]
# Each algorithm's own flags that must be rejected.
ALGO_BAD_INPUT = {
    "fpmd_r": [(["--num-particles", "0"], "--num-particles"), (["--flow-steps", "0"], "--flow-steps")],
    "fpmd_m": [(["--num-particles", "0"], "--num-particles"), (["--flow-ratio", "1.5"], "--flow-ratio")],
    "mfpo": [
        (["--sampling-steps", "0"], "--sampling-steps"),
        (["--v-min", "10", "--v-max", "10"], "--v-min"),
        (["--num-candidates", "0"], "--num-candidates"),
    ],
}
CASES = [(algo, flags, expected) for algo in ALGOS for flags, expected in COMMON_BAD_INPUT + ALGO_BAD_INPUT.get(algo, [])]


@pytest.mark.parametrize("algo, flags, expected", CASES)
def test_bad_input_stops_before_training_with_one_line(algo, flags, expected, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        module.main(tyro.cli(module.Args, args=["--no-cuda", *flags]))
    message = str(stop.value.code)
    assert message.startswith(f"{algo}: error:") and expected in message and "\n" not in message, message
    assert not (tmp_path / "runs").exists()  # nothing was trained or logged


def test_bad_input_from_the_command_line_exits_non_zero_with_one_line(algo, tmp_path):
    result = run_algo(algo, tmp_path, "--no-cuda", "--batch-size", "512", "--buffer-size", "100")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"{algo}: error: --batch-size (512) must not exceed --buffer-size (100)"
    assert not (tmp_path / "runs").exists()


def test_finished_results_are_never_overwritten(algo, tmp_path):
    short_run(algo, tmp_path, "--env-id", "Pendulum-v1", "--run-name", "done")
    before = (tmp_path / "runs" / "done" / "evaluations.csv").read_text()
    result = run_algo(algo, tmp_path, "--env-id", "Pendulum-v1", "--run-name", "done", "--no-cuda")
    assert result.returncode != 0 and "already holds results" in result.stderr
    assert (tmp_path / "runs" / "done" / "evaluations.csv").read_text() == before


# Valid flags that drive a loss non-finite within a few updates: a critic learning rate that overflows the weights,
# or (MFPO, whose LayerNorms absorb huge weights) a temperature so small that Q / alpha overflows.
NON_FINITE_FLAGS = {"td3_baseline": ["--learning-rate", "1e30"], "mfpo": ["--alpha-init", "1e-45"]}


def test_non_finite_loss_stops_the_run(algo, tmp_path):
    flags = NON_FINITE_FLAGS.get(algo, ["--q-lr", "1e30"])
    result = run_algo(algo, tmp_path, *SHORT_RUN, *TINY_ARGS[algo], "--env-id", "Pendulum-v1", "--run-name", "nan", *flags)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"{algo}: error: non-finite losses/"), result.stderr
    rows = read_evaluations(tmp_path / "runs" / "nan")
    assert rows[-1]["global_step"] < 400  # stopped before the end
    assert all(math.isfinite(row["mean_return"]) for row in rows)  # and no NaN policy was evaluated


@pytest.mark.parametrize("flag, package", [("--track", "wandb"), ("--capture-video", "moviepy")])
def test_an_optional_package_that_is_missing_stops_the_run_with_its_install_command(algo, flag, package, tmp_path, monkeypatch):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, package, None)  # importlib.util.find_spec now finds no such package
    with pytest.raises(SystemExit) as stop:
        module.main(tyro.cli(module.Args, args=["--no-cuda", flag]))
    assert str(stop.value.code) == f"{algo}: error: {flag} needs {package}, which is not installed: pip install {package}"
    assert not (tmp_path / "runs").exists()
