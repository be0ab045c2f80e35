"""--track in each file's own copy of the skeleton: the W&B run it leaves, read back offline with wandb's own CLI,
and the same W&B run continued by --resume after a kill."""

import json
import signal
import subprocess
import sys

import pytest
from conftest import ONE_THREAD, TINY_ARGS, algo_command, checkpoint_step, read_evaluations, run_algo, short_run, wait_until
from test_resume import RESUMABLE_RUN

pytest.importorskip("wandb", reason="--track needs wandb, from the optional extra requirements-extras.txt")

OFFLINE = {**ONE_THREAD, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def read_wandb_runs(directory) -> list[dict]:
    """Every offline W&B run under directory/wandb, oldest first, as wandb's own CLI reads it back (`wandb leet inspect
    --json`, one JSON record per line): the id in its directory name, the id and config of its run record, and for
    each logged key the global steps of its history rows."""
    runs = []
    for run_dir in sorted((directory / "wandb").glob("offline-run-*")):
        inspect = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        run = {"dir_id": run_dir.name.rsplit("-", 1)[1], "id": None, "config": {}, "steps": {}}
        for line in inspect.stdout.splitlines():  # a run killed before wandb flushed may have no records
            record = json.loads(line)
            if record.get("type") == "run":
                run["id"] = record["run"]["run_id"]
                run["config"] = record["run"]["config"]["update"]
            elif record.get("type") == "history":
                row = record["history"]["item"]
                for key in row:
                    run["steps"].setdefault(key, []).append(row.get("global_step"))
        runs.append(run)
    return runs


def test_tracked_run_leaves_a_wandb_run_with_its_evaluations_and_config(algo, tmp_path):
    short_run(algo, tmp_path, "--env-id", "Pendulum-v1", "--seed", "3", "--track", "--run-name", "tracked", env=OFFLINE)
    (run,) = read_wandb_runs(tmp_path)
    assert run["id"] == run["dir_id"] and run["config"]["seed"] == 3 and run["config"]["run_name"] == "tracked"
    assert run["config"]["wandb_project_name"] == "flowpolicy-rl"
    evaluations = [row["global_step"] for row in read_evaluations(tmp_path / "runs" / "tracked")]
    assert evaluations and run["steps"]["eval/episodic_return"] == evaluations
    assert run["steps"].get("losses/qf_loss")  # the training scalars too, through TensorBoard


def test_killed_tracked_run_resumes_its_wandb_run(algo, tmp_path):
    flags = [*RESUMABLE_RUN, *TINY_ARGS[algo], "--run-name", "run", "--track"]
    run_dir = tmp_path / "runs" / "run"
    process = subprocess.Popen(algo_command(algo, *flags), cwd=tmp_path, env=OFFLINE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: process.poll() is not None or (run_dir / "checkpoint.pt").exists())
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = checkpoint_step(run_dir)
    (first,) = read_wandb_runs(tmp_path)  # its file may hold nothing: W&B buffers, and SIGKILL leaves no time to flush

    resumed = run_algo(algo, tmp_path, *flags, "--resume", env=OFFLINE)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    earlier, later = read_wandb_runs(tmp_path)
    assert earlier["dir_id"] == first["dir_id"] and later["id"] == later["dir_id"] == first["dir_id"]  # the same W&B run
    # the resumed run logs only what came after its checkpoint: the purged TensorBoard steps are not sent again
    resumed_rows = [row["global_step"] for row in read_evaluations(run_dir) if row["global_step"] > killed_at]
    assert resumed_rows and later["steps"]["eval/episodic_return"] == resumed_rows
