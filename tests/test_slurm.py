"""benchmark.sh --slurm against a real single-node Slurm (Debian's slurm-wlm with munge), started here: the job
array trains every run, a second submission skips the finished ones, and a requeued task (as a preemption does it)
resumes its run from the checkpoint it wrote on Slurm's SIGTERM."""

import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import read_evaluations
from test_benchmark import TINY, TINY_FLAGS, benchmark

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    return encoded.returncode == 0 and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """SLURM_CONF of a one-node cluster on this machine; skips, saying why, where one cannot be started."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"Slurm cannot be started here: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("Slurm cannot be started here: this single-node setup runs its daemons as root")
    if not munge_works():
        os.makedirs("/run/munge", exist_ok=True)
        subprocess.run(["munged", "--force"], capture_output=True)
        if not munge_works():
            pytest.skip("Slurm cannot be started here: munged does not authenticate (is /etc/munge/munge.key there?)")
    directory = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    (directory / "state").mkdir()
    (directory / "spool").mkdir()
    config = directory / "slurm.conf"
    config.write_text(f"""ClusterName=flowpolicytest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AuthType=auth/munge
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(config)}
    subprocess.run(["slurmctld"], env=env, capture_output=True)
    subprocess.run(["slurmd"], env=env, capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
        if state == "idle":
            break
        time.sleep(1)
    else:
        logs = "".join((directory / name).read_text()[-500:] for name in ("slurmctld.log", "slurmd.log") if (directory / name).exists())
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        pytest.skip(f"Slurm cannot be started here: the node did not come up idle ({state!r}); {logs}")
    yield env
    subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)


def wait_for_empty_queue(env: dict, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while True:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
        if queue.returncode == 0 and not queue.stdout.strip():  # a busy slurmctld fails squeue with an empty stdout
            return
        assert time.time() < deadline, "the Slurm jobs did not finish in time"
        time.sleep(2)


def test_slurm_job_array_trains_every_run_and_resubmission_skips(slurm_env, tmp_path):
    out = tmp_path / "out"
    submitted = benchmark(*TINY, "--slurm", "--workers", "2", "--time", "00:20:00", "--out", str(out), *TINY_FLAGS, extra_env=slurm_env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted 4 runs" in submitted.stdout
    script = (out / "slurm" / "benchmark.sbatch").read_text()
    assert "#SBATCH --array=1-4%2" in script and "#SBATCH --time=00:20:00" in script
    wait_for_empty_queue(slurm_env)

    csvs = sorted((out / "runs").glob("*/evaluations.csv"))
    assert len(csvs) == 4 and all(read_evaluations(path.parent)[-1]["global_step"] == 400 for path in csvs)
    stamps = [path.stat().st_mtime_ns for path in csvs]
    task_logs = sorted((out / "slurm").glob("*.out"))
    assert len(task_logs) == 4 and all("done" in path.read_text() for path in task_logs)

    resubmitted = benchmark(*TINY, "--slurm", "--workers", "2", "--out", str(out), *TINY_FLAGS, extra_env=slurm_env)
    assert resubmitted.returncode == 0
    wait_for_empty_queue(slurm_env)
    assert [path.stat().st_mtime_ns for path in csvs] == stamps
    assert sum("(finished)" in path.read_text() for path in (out / "slurm").glob("*.out")) == 4


def test_requeued_task_resumes_from_its_checkpoint(slurm_env, tmp_path):
    out = tmp_path / "out"
    args = ["--algos", "sac_baseline", "--envs", "Pendulum-v1", "--seeds", "1", "--total-timesteps", "3000", "--checkpoint-freq", "300",
            "--slurm", "--out", str(out), "--", "--learning-starts", "200", "--eval-freq", "100", "--eval-episodes", "1", "--no-cuda"]
    submitted = benchmark(*args, extra_env=slurm_env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "#SBATCH --requeue" in (out / "slurm" / "benchmark.sbatch").read_text()
    run_dir = out / "runs" / "Pendulum-v1__sac_baseline__1"
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists():
        assert time.time() < deadline, "the task wrote no checkpoint"
        time.sleep(0.2)
    squeue = lambda *fields: subprocess.run(["squeue", "-h", "-o", " ".join(fields)], env=slurm_env, capture_output=True, text=True).stdout.split()
    task = squeue("%i")[0]
    subprocess.run(["scontrol", "requeue", task], env=slurm_env, check=True)  # as a preemption: SIGTERM, then back to the queue
    requeued_at = time.time()
    while squeue("%T") != ["PENDING"]:
        assert time.time() < deadline, "the requeued task did not return to the queue"
        time.sleep(0.2)
    # Slurm delays a requeued job's start on purpose: slurmd refuses a credential made in the same second as the
    # revocation of the killed one ("Job credential revoked"). Skip the delay, but not that second.
    time.sleep(max(0.0, requeued_at + 2.0 - time.time()))
    subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], env=slurm_env, check=True)
    wait_for_empty_queue(slurm_env)

    task_log = "".join(path.read_text() for path in (out / "slurm").glob("*.out"))
    assert "DUE TO JOB REQUEUE" in task_log and "resume  Pendulum-v1__sac_baseline__1" in task_log, task_log
    assert "stopped by SIGTERM" in (out / "logs" / "Pendulum-v1__sac_baseline__1.log").read_text()
    assert [row["global_step"] for row in read_evaluations(run_dir)] == [100.0 * i for i in range(1, 31)]
    assert not (run_dir / "checkpoint.pt").exists()
