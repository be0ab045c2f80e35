"""Checkpoints and saved models are read with weights_only=True by every reader: a file whose pickle would run code is
refused before any of it runs, and a file that cannot be used (truncated, not a torch file, of an older format,
written by another file or with other flags) gets one line that names it and the way out, and is left as it was."""

import numpy as np
import pytest
import torch
import tyro
from conftest import ROOT, TINY_ARGS, load_algo, run_algo, run_tool
from test_resume import RESUMABLE_RUN, StopAfterCheckpoint


class WritesMarker:
    """Pickled as a call of open(marker, "w"): unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_checkpoint(module, algo: str, tmp_path, monkeypatch) -> list[str]:
    """A real checkpoint of `algo` in runs/run (the run stops right after writing it); the flags that resume it."""
    flags = [*RESUMABLE_RUN, *TINY_ARGS[algo], "--run-name", "run"]
    save_checkpoint = module.save_checkpoint

    def save_then_stop(path, state):
        save_checkpoint(path, state)
        raise StopAfterCheckpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(module, "save_checkpoint", save_then_stop)
    with pytest.raises(StopAfterCheckpoint):
        module.main(tyro.cli(module.Args, args=flags))
    monkeypatch.undo()
    return flags


def resume_problem(module, flags: list[str], tmp_path, monkeypatch) -> str:
    """The one line with which `--resume` refuses runs/run/checkpoint.pt, checked to name that file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        module.main(tyro.cli(module.Args, args=[*flags, "--resume"]))
    message = str(stop.value.code)
    assert message.startswith(f"{module.__name__}: error: --resume: runs/run/checkpoint.pt ") and "\n" not in message, message
    return message


def test_every_refused_checkpoint_gets_one_line_and_stays_as_it_was(algo, tmp_path, monkeypatch):
    module = load_algo(algo)
    flags = write_checkpoint(module, algo, tmp_path, monkeypatch)
    path = tmp_path / "runs" / "run" / "checkpoint.pt"
    checkpoint, evaluations = torch.load(path, weights_only=True), (path.parent / "evaluations.csv").read_text()
    other = "td3_baseline.py" if algo != "td3_baseline" else "sac_baseline.py"
    variants = {  # what the file holds: what the line says
        "crafted": ({**checkpoint, "random": WritesMarker(tmp_path / "marker")}, "holds objects other than tensors and plain data"),
        "format 1": ({**checkpoint, "random": {**checkpoint["random"], "numpy": np.random.get_state()}}, "written before format 2"),
        "no format": ({k: v for k, v in checkpoint.items() if k != "format"}, "is not a checkpoint of format 2"),
        "another file": ({**checkpoint, "written_by": other}, f"was written by {other}, not {algo}.py: resume it with {other}"),
        "other flags": ({**checkpoint, "args": {**checkpoint["args"], "gamma": 0.5}}, "was written with --gamma 0.5, not 0.99: rerun"),
    }
    for name, (content, expected) in variants.items():
        torch.save(content, path)
        written = path.read_bytes()
        assert expected in resume_problem(module, flags, tmp_path, monkeypatch), name
        assert path.read_bytes() == written and (path.parent / "evaluations.csv").read_text() == evaluations, name
    assert not (tmp_path / "marker").exists()  # the crafted pickle never ran
    path.write_text("not a checkpoint\n")  # a text file reads as a pickle that weights_only refuses: not a crafted one
    assert "cannot be read (UnpicklingError: not a pickle of torch.save)" in resume_problem(module, flags, tmp_path, monkeypatch)

    torch.save(checkpoint, path)  # the file itself, cut to half its size, from the command line: one line, no traceback
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    truncated = path.read_bytes()
    result = run_algo(algo, tmp_path, *flags, "--resume")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{algo}: error: --resume: runs/run/checkpoint.pt cannot be read (") and "remove it" in line, line
    assert path.read_bytes() == truncated and (path.parent / "evaluations.csv").read_text() == evaluations


def test_the_tools_refuse_a_file_that_would_run_code_and_a_truncated_one_with_one_line(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"args": {"exp_name": "fpmd_r"}, "policy": WritesMarker(marker)}, tmp_path / "crafted.pt")
    torch.save({"args": {"exp_name": "fpmd_r"}, "policy": torch.zeros(3)}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    commands = {"enjoy.py": [], "inference_time.py": ["--load"], "plot_flow_trajectories.py": []}
    (tmp_path / "notes.txt").write_text("not a model\n")
    cases = {"crafted.pt": "holds objects other than tensors and plain data", "truncated.pt": "cannot be read (", "notes.txt": "cannot be read ("}
    for tool, before in commands.items():
        for name, expected in cases.items():
            result = run_tool(tool, *before, str(tmp_path / name), cwd=tmp_path)
            assert result.returncode != 0 and "Traceback" not in result.stderr, (tool, name, result.stderr[-2000:])
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: ") and expected in lines[0], (tool, lines)
    assert not marker.exists()


def test_no_reader_in_the_repository_unpickles_arbitrary_objects():
    """Every torch.load in the algorithm files and the tools passes weights_only=True."""
    sources = [*ROOT.glob("*.py"), *(ROOT / "tools").glob("*.py")]
    loads = [(path.name, line.strip()) for path in sources for line in path.read_text().splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for _, line in loads), loads
