"""Same seed on CPU: bitwise-identical evaluation returns; another seed: different ones."""

import subprocess

from conftest import ONE_THREAD, SHORT_RUN, TINY_ARGS, algo_command, read_evaluations


def test_same_seed_same_returns_other_seed_differs(algo, tmp_path):
    runs = {"first": 1, "second": 1, "other": 2}
    processes = {}
    for name, seed in runs.items():  # the three runs side by side, one thread each
        (tmp_path / name).mkdir()
        flags = [*SHORT_RUN, *TINY_ARGS[algo], "--env-id", "Pendulum-v1", "--seed", str(seed), "--run-name", "run"]
        processes[name] = subprocess.Popen(algo_command(algo, *flags), cwd=tmp_path / name, env=ONE_THREAD,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    returns = {name: [row["mean_return"] for row in read_evaluations(tmp_path / name / "runs" / "run")] for name in runs}
    assert len(returns["first"]) == 2
    assert returns["first"] == returns["second"]
    assert returns["first"] != returns["other"]
