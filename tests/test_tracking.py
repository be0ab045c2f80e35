"""--track in each file's own copy of the skeleton: the W&B run it leaves, read back offline with wandb's own reader,
and the same W&B run continued by --resume after a kill."""

import json
import signal
import subprocess

import pytest
from conftest import ONE_THREAD, TINY_ARGS, algo_command, checkpoint_step, read_evaluations, run_algo, short_run, wait_until
from test_resume import RESUMABLE_RUN

pytest.importorskip("wandb", reason="--track needs wandb, from the optional extra requirements-extras.txt")
from wandb.proto import wandb_internal_pb2  # noqa: E402
from wandb.sdk.internal import datastore  # noqa: E402  (wandb < 0.30: the reader of offline run files)

OFFLINE = {**ONE_THREAD, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def read_wandb_runs(directory) -> list[dict]:
    """Every offline W&B run under directory/wandb, oldest first: the id in its directory name, the id and config
    of its run record, and for each logged key the global steps of its history rows."""
    runs = []
    for path in sorted((directory / "wandb").glob("offline-run-*/run-*.wandb")):
        store = datastore.DataStore()
        store.open_for_scan(str(path))
        run = {"dir_id": path.stem.removeprefix("run-"), "id": None, "config": {}, "steps": {}}
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "run":
                run["id"] = record.run.run_id
                run["config"] = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            elif record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
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
