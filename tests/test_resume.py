"""Checkpoints and --resume in each file's own copy of the skeleton: a run killed with SIGKILL after a checkpoint,
then stopped with SIGTERM, resumes each time to the schedule of an uninterrupted run; the restored state equals the
saved one; a run resumed right after a checkpoint makes the same next update as the run that never stopped; the
progress line comes every 30 s of wall time."""

import random
import signal
import subprocess

import numpy as np
import pytest
import torch
import tyro
from conftest import ONE_THREAD, TINY_ARGS, algo_command, checkpoint_step, load_algo, read_evaluations, run_algo, wait_until
from runs import load_events

TOTAL = 700
RESUMABLE_RUN = ["--env-id", "Pendulum-v1", "--total-timesteps", str(TOTAL), "--learning-starts", "250", "--eval-freq", "100",
                 "--eval-episodes", "1", "--batch-size", "32", "--buffer-size", "5000", "--checkpoint-freq", "300", "--no-cuda"]


@pytest.fixture
def one_torch_thread():
    """In-process runs use one thread, as the subprocess runs do (ONE_THREAD)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_then_stopped_run_resumes_to_the_uninterrupted_schedule(algo, tmp_path):
    check_killed_then_stopped_run_resumes(algo, tmp_path, RESUMABLE_RUN)


def check_killed_then_stopped_run_resumes(algo: str, tmp_path, run_flags: list[str]) -> None:
    """Kill `algo` (SIGKILL) after a checkpoint, resume it, stop it (SIGTERM), resume it to its end: every evaluation of
    the uninterrupted schedule once, those before the checkpoint untouched. `run_flags`: RESUMABLE_RUN's schedule."""
    flags = [*run_flags, *TINY_ARGS[algo], "--run-name", "run"]
    run_dir = tmp_path / "runs" / "run"
    start = lambda *extra: subprocess.Popen(algo_command(algo, *flags, *extra), cwd=tmp_path, env=ONE_THREAD,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    process = start()
    # kill once an evaluation later than the checkpoint is written (the window: 200 env steps until the next one)
    evaluated_past_checkpoint = lambda: (run_dir / "checkpoint.pt").exists() and read_evaluations(run_dir)[-1]["global_step"] > checkpoint_step(run_dir)
    wait_until(lambda: process.poll() is not None or evaluated_past_checkpoint())
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at, rows_at_kill = checkpoint_step(run_dir), read_evaluations(run_dir)
    assert rows_at_kill[-1]["global_step"] > killed_at  # rows the resumed run must drop, and evaluate again
    kept = [row for row in rows_at_kill if row["global_step"] <= killed_at]

    mismatch = run_algo(algo, tmp_path, *flags, "--resume", "--seed", "2")  # a checkpoint of other arguments
    assert mismatch.returncode != 0 and "Traceback" not in mismatch.stderr
    assert mismatch.stderr.strip().splitlines()[-1].startswith(f"{algo}: error: --resume: ") and "--seed" in mismatch.stderr

    process = start("--resume")
    last_before_kill = rows_at_kill[-1]["global_step"]
    wait_until(lambda: read_evaluations(run_dir)[-1]["global_step"] > last_before_kill or process.poll() is not None)
    process.send_signal(signal.SIGTERM)  # Slurm's notice: checkpoint at the end of the iteration, exit non-zero
    _, stderr = process.communicate(timeout=300)
    assert process.returncode not in (0, -signal.SIGTERM), stderr[-2000:]
    assert "stopped by SIGTERM" in stderr.strip().splitlines()[-1]
    stopped_at = checkpoint_step(run_dir)
    assert stopped_at > killed_at and read_evaluations(run_dir)[: len(kept)] == kept

    finished = run_algo(algo, tmp_path, *flags, "--resume")
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = read_evaluations(run_dir)
    assert [row["global_step"] for row in rows] == list(range(100, TOTAL + 1, 100))  # each evaluation once, in order
    assert rows[: len(kept)] == kept  # what came before the checkpoints is untouched
    assert all(later["wall_time_s"] >= earlier["wall_time_s"] for earlier, later in zip(rows, rows[1:]))
    events = load_events(run_dir)
    assert [event.step for event in events.Scalars("eval/episodic_return")] == [row["global_step"] for row in rows]
    assert not (run_dir / "checkpoint.pt").exists()  # a complete run leaves nothing to resume


def build_training_objects(module, args):
    """The objects a checkpoint covers, fresh, for a 3-d observation and 1-d action."""
    networks = module.make_networks(3, 1, torch.ones(1), args)
    modules = {**networks, **{f"{name}_optimizer": torch.optim.Adam(net.parameters(), lr=1e-3) for name, net in networks.items()}}
    tensors = {"log_alpha": torch.zeros(()), "q_std": torch.ones(())}
    rb = module.ReplayBuffer(64, 3, 1, torch.device("cpu"), seed=0)
    vector_envs = [module.make_vector_env("Pendulum-v1", 0, 2), module.make_vector_env("Pendulum-v1", 100, 2)]
    return modules, tensors, rb, vector_envs


def draw_from_a_legacy_random_state(vector_envs, seed: int) -> None:
    """One env of the second vector env draws from a legacy np.random.RandomState from now on, as dm_control's envs do;
    the others keep Gymnasium's Generator. A seeded reset would replace it."""
    vector_envs[1].unwrapped.envs[1].unwrapped.np_random = np.random.RandomState(seed)


def assert_same(saved, restored, where="state") -> None:
    """Equal, tensor by tensor, through nested dicts and lists."""
    if isinstance(saved, dict):
        assert saved.keys() == restored.keys(), where
        for key in saved:
            assert_same(saved[key], restored[key], f"{where}.{key}")
    elif isinstance(saved, (list, tuple)):
        assert len(saved) == len(restored), where
        for i, (a, b) in enumerate(zip(saved, restored)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(saved, torch.Tensor):
        assert torch.equal(saved, restored), where
    else:
        assert saved == restored, where


def test_restored_state_equals_the_saved_state(algo, tmp_path):
    module = load_algo(algo)
    args = module.Args(env_id="Pendulum-v1")
    torch.manual_seed(0)
    modules, tensors, rb, vector_envs = build_training_objects(module, args)
    for name, optimizer in modules.items():  # an optimizer step each, so that Adam has moments to save
        if name.endswith("_optimizer"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            optimizer.zero_grad()
            sum(p.pow(2).sum() for p in params).backward()
            optimizer.step()
    for vec in vector_envs:
        vec.reset(seed=3)
        vec.step(np.zeros((2, 1), dtype=np.float32))
    draw_from_a_legacy_random_state(vector_envs, seed=5)
    vector_envs[1].reset()  # a draw from it before the checkpoint
    for _ in range(40):  # 80 rows into 64: the buffer has wrapped around
        rb.add(np.random.randn(2, 3), np.random.randn(2, 3), torch.randn(2, 1), np.random.randn(2), np.random.rand(2) < 0.1)
    rb.sample(8)
    tensors["log_alpha"].fill_(0.7)
    counters = {"global_step": 80, "num_updates": 40, "next_eval_step": 100, "next_checkpoint_step": 90, "elapsed_time": 1.5,
                "last_train_return": -3.0, "last_eval_return": float("nan")}
    path = str(tmp_path / "checkpoint.pt")
    module.save_checkpoint(path, module.training_state(args, modules, tensors, counters, rb, vector_envs))
    saved = {name: module.state_dict() for name, module in modules.items()}
    next_draws = (random.random(), np.random.rand(), torch.rand(3), rb.sample(8), [vec.reset()[0] for vec in vector_envs])

    torch.manual_seed(1)  # other initial weights: the restore must overwrite them
    fresh_modules, fresh_tensors, fresh_rb, fresh_envs = build_training_objects(module, args)
    draw_from_a_legacy_random_state(fresh_envs, seed=6)
    checkpoint, problem = module.read_checkpoint(path, args)
    assert problem is None
    restored_counters = module.restore_training_state(checkpoint, fresh_modules, fresh_tensors, fresh_rb, fresh_envs)
    assert restored_counters.keys() == counters.keys() and restored_counters["global_step"] == 80
    assert_same(saved, {name: module.state_dict() for name, module in fresh_modules.items()})
    assert_same(tensors, fresh_tensors)
    assert (fresh_rb.size, fresh_rb.pos) == (rb.size, rb.pos) == (64, 16)
    for field in module.ReplayBuffer.FIELDS:
        assert torch.equal(getattr(fresh_rb, field), getattr(rb, field)), field
    # every random stream goes on where it stopped: python, numpy, torch, the buffer's sampler, each env
    restored_draws = (random.random(), np.random.rand(), torch.rand(3), fresh_rb.sample(8), [vec.reset()[0] for vec in fresh_envs])
    assert_same(next_draws[:4], restored_draws[:4])
    for expected, got in zip(next_draws[4], restored_draws[4]):
        np.testing.assert_array_equal(expected, got)


class StopAfterCheckpoint(Exception):
    """A run that stops right after a checkpoint, as a kill would end it."""


def test_resumed_run_makes_the_same_next_update(algo, tmp_path, monkeypatch, one_torch_thread):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    num_envs = module.Args().num_envs
    # one checkpoint, after 1000 vector steps of which the last 99 trained: the first update after resuming is update
    # 100, whose losses are logged (every 100 updates). The long warm-up fills the buffer, so that a batch of 8 rarely
    # draws the transitions of the new episodes, which differ after resuming
    resume_step = 1000 * num_envs
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", str(resume_step + num_envs), "--learning-starts", str(901 * num_envs),
             "--checkpoint-freq", str(resume_step), "--eval-freq", str(10**6), "--eval-episodes", "1", "--batch-size", "8",
             "--buffer-size", "10000", "--no-cuda", *TINY_ARGS[algo]]
    logged, batches = {}, {}

    original_log_losses, original_sample, original_save = module.log_losses, module.ReplayBuffer.sample, module.save_checkpoint

    def recording_log_losses(writer, losses, global_step):
        logged.setdefault(run, {})[global_step] = {name: value.item() for name, value in losses.items()}
        return original_log_losses(writer, losses, global_step)

    def recording_sample(self, batch_size):
        batch = original_sample(self, batch_size)
        batches.setdefault(run, []).append([tensor.clone() for tensor in batch])
        return batch

    def stopping_save(path, state):
        original_save(path, state)
        if run == "stopped" and state["counters"]["global_step"] == resume_step:
            raise StopAfterCheckpoint

    monkeypatch.setattr(module, "log_losses", recording_log_losses)
    monkeypatch.setattr(module.ReplayBuffer, "sample", recording_sample)
    monkeypatch.setattr(module, "save_checkpoint", stopping_save)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        for run, extra in (("straight", []), ("stopped", []), ("resumed", ["--resume"])):
            name = "straight" if run == "straight" else "stopped"
            try:
                module.main(tyro.cli(module.Args, args=[*flags, "--run-name", name, *extra]))
            except StopAfterCheckpoint:
                assert run == "stopped"
    finally:
        signal.signal(signal.SIGTERM, handler)  # the stopped run did not get to put it back

    first_update = 100  # the resumed run's first batch is the straight run's 100th
    same_batch = all(torch.equal(a, b) for a, b in zip(batches["straight"][first_update - 1], batches["resumed"][0]))
    assert same_batch, ("the first batch after resuming is not the straight run's: the buffer was not restored, or it "
                        "drew a row of the new episodes (then pick another seed)")
    step = resume_step + num_envs
    assert step in logged["resumed"] and logged["resumed"][step]
    for name, value in logged["resumed"][step].items():
        assert value == logged["straight"][step][name], name


class FakeClock:
    """time.time() that advances 7 s at every call."""

    def __init__(self):
        self.now = 1e9

    def time(self):
        self.now += 7.0
        return self.now


def test_progress_line_at_least_every_30_seconds(algo, tmp_path, monkeypatch, capsys, one_torch_thread):
    module = load_algo(algo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(module, "time", FakeClock())
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", "300", "--learning-starts", "300", "--eval-freq", str(10**6),
             "--eval-episodes", "1", "--batch-size", "16", "--buffer-size", "1000", "--no-cuda", *TINY_ARGS[algo]]
    module.main(tyro.cli(module.Args, args=[*flags, "--run-name", "progress"]))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("global_step ")]
    iterations = 300 // module.Args().num_envs
    assert len(lines) >= iterations * 7 // 30 // 2  # one evaluation at the end, but a line every few iterations
    assert lines[-1].startswith("global_step 300/300")
