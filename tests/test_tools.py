"""The tools run on real files and say what they should: inference-time table, flow trajectories, learning check."""

import subprocess
import sys

import pytest
import torch
from conftest import ALGOS, SHORT_RUN, TINY_ARGS, run_tool, short_run


def tool(name: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    result = run_tool(name, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_inference_time_table_has_every_file_with_nfe_and_ratio():
    table = tool("inference_time.py", "--env-id", "Hopper-v4", "--calls", "1000", "--warmup", "10").stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(ALGOS) <= set(rows)
    expected_nfe = {"sac_baseline": "1", "td3_baseline": "1", "fpmd_r": "1", "fpmd_m": "1", "mfpo": "20"}
    for algo in ALGOS:
        assert rows[algo][0].strip() == expected_nfe[algo]
        assert float(rows[algo][1]) > 0
    assert rows["sac_baseline"][3].strip() == "1.00" and rows["sac_baseline"][5].strip() == "1.00"  # batch 1 and 10
    assert all(float(rows[algo][4]) > 0 for algo in ALGOS)


def test_flow_trajectory_plot_from_a_saved_model(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs the optional extra requirements-extras.txt")
    short_run("fpmd_r", tmp_path, "--env-id", "Hopper-v4", "--run-name", "traj", "--save-model")
    out = tmp_path / "paths.png"
    result = tool("plot_flow_trajectories.py", str(tmp_path / "runs" / "traj" / "fpmd_r.pt"), "--out", str(out), "--num-states", "2")
    assert "mean straightness" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_check_reports_steps_to_threshold(tmp_path):
    result = tool("learning_check.py", "--algos", "sac_baseline", "--env-id", "Pendulum-v1", "--seeds", "1", "--threshold", "-100000",
                  "--out", str(tmp_path), "--", *SHORT_RUN, *TINY_ARGS["sac_baseline"])
    row = [line for line in result.stdout.splitlines() if line.startswith("| sac_baseline | 1 |")]
    assert row and row[0].split("|")[3].strip() == "200"  # the first evaluation already clears -100000


def test_checkpoint_size_reports_a_size_that_grows_with_the_buffer():
    table = tool("checkpoint_size.py", "--algo", "sac_baseline", "--env-id", "Pendulum-v1", "--transitions", "1000").stdout
    small = [line.split("|") for line in table.splitlines() if line.startswith("| Pendulum-v1 |")]
    table = tool("checkpoint_size.py", "--algo", "sac_baseline", "--env-id", "Pendulum-v1", "--transitions", "200000").stdout
    large = [line.split("|") for line in table.splitlines() if line.startswith("| Pendulum-v1 |")]
    assert small and large and small[0][2].strip() == "3" and small[0][3].strip() == "1"
    # (2 x 3 + 1 + 2) float32 numbers per transition: 200000 transitions are 7.2 MB more than 1000 with the same networks
    assert float(large[0][5]) - float(small[0][5]) == pytest.approx(199_000 * 9 * 4 / 1e6, abs=1)


def test_inference_time_refuses_what_it_would_not_time(tmp_path):
    short_run("sac_baseline", tmp_path, "--env-id", "Pendulum-v1", "--run-name", "saved", "--save-model")
    model = torch.load(tmp_path / "runs" / "saved" / "sac_baseline.pt", weights_only=True)
    torch.save({"args": model["args"], "modules": {k: v for k, v in model.items() if k != "args"}}, tmp_path / "checkpoint.pt")
    torch.save({**model, "args": {**model["args"], "exp_name": "my_sac"}}, tmp_path / "renamed.pt")
    cases = {"checkpoint.pt": "is a training checkpoint", "renamed.pt": "--exp-name 'my_sac', which names no algorithm file"}
    for name, expected in cases.items():
        result = run_tool("inference_time.py", "--env-id", "Pendulum-v1", "--load", str(tmp_path / name), cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr


def test_summarize_without_matplotlib_says_so_in_one_line(tmp_path, monkeypatch):
    import summarize

    short_run("sac_baseline", tmp_path, "--env-id", "Pendulum-v1", "--run-name", "Pendulum-v1__sac_baseline__1")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importlib.util.find_spec now finds no matplotlib
    monkeypatch.setattr(sys, "argv", ["summarize.py", str(tmp_path / "runs"), "--out", str(tmp_path / "summary")])
    with pytest.raises(SystemExit) as stop:
        summarize.main()
    assert str(stop.value.code) == ("summarize.py: error: the learning curves need matplotlib, which is not installed: "
                                    "pip install matplotlib, or --no-plots")
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--no-plots"])
    summarize.main()  # the tables, without curves
    assert "| Pendulum-v1 | sac_baseline | 1 | 1 |" in (tmp_path / "summary" / "walltime.md").read_text()
