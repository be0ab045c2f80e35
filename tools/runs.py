"""What the tools share about the algorithm files and their runs: which files there are (every *.py beside
benchmark.sh, as it finds them), when a run is finished, and reading what a run wrote: evaluations.csv, the TensorBoard
scalars, a saved model or checkpoint.

  python tools/runs.py finished RUN_DIR ...    prints those of the run directories that are finished, one per line

benchmark.sh asks that question here, so that it, tools/throughput.py and tools/summarize.py share one definition.
"""

import csv
import dataclasses
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["global_step", "mean_return", "std_return", "nfe", "wall_time_s"]
COMPLETION_MARKER = "completed"  # a run's last write, after its final evaluation and its saved model


def algorithm_files() -> list[str]:
    """The algorithm files, without .py: every *.py beside benchmark.sh, as benchmark.sh lists them."""
    return sorted(path.stem for path in ROOT.glob("*.py"))


def run_name(env_id: str, algo: str, seed: int) -> str:
    """benchmark.sh's name of a run, {env}__{algo}__{seed}: the env id with '/' as '-', so that a run is one folder deep
    (dm_control/cheetah-run-v0 -> dm_control-cheetah-run-v0)."""
    return f"{env_id.replace('/', '-')}__{algo}__{seed}"


def is_finished(run_dir) -> bool:
    """A run is finished when it wrote its completion marker and holds no checkpoint. A run killed after its last
    evaluation, even after the marker, still holds its latest checkpoint: it is resumed, not skipped."""
    return (Path(run_dir) / COMPLETION_MARKER).exists() and not (Path(run_dir) / "checkpoint.pt").exists()


def read_evaluations(run_dir) -> list[dict[str, float]]:
    """The rows of a run's evaluations.csv as floats; [] when the run has none yet. A torn last line
    (a run killed mid-write) is dropped."""
    path = Path(run_dir) / "evaluations.csv"
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({key: float(row[key]) for key in FIELDS})
            except (TypeError, ValueError):
                break
    return rows


def load_events(run_dir):
    """All of a run's TensorBoard events, read in full."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def last_scalar(run_dir, tag: str) -> float | None:
    """The last value a run logged under a TensorBoard tag (e.g. charts/SPS), or None."""
    events = load_events(run_dir)
    if tag not in events.Tags()["scalars"]:
        return None
    return events.Scalars(tag)[-1].value


def run_arguments(run_dir) -> dict[str, str]:
    """The arguments a run logged as its TensorBoard "hyperparameters" text (|name|value| rows), or {}."""
    events = load_events(run_dir)
    if "hyperparameters/text_summary" not in events.Tags()["tensors"]:
        return {}
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    cells = [line.strip("|").split("|", 1) for line in table.splitlines()[2:]]
    return {cell[0]: cell[1] for cell in cells if len(cell) == 2}


def read_saved(path: Path) -> tuple[dict, dict, bool]:
    """The saved arguments and networks' state dicts of a model written by --save-model or of a run's checkpoint.pt,
    and whether it is a checkpoint; ValueError, its message one line, for anything else. Read with weights_only=True:
    tensors and plain data only, so that no file, whoever wrote it, runs code when it is read."""
    import pickle

    import torch

    if not path.is_file():
        raise ValueError(f"no file {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):  # weights_only refused a class or function
            raise ValueError(f"{path} holds objects other than tensors and plain data, and loading those could run code (a "
                             "checkpoint written before checkpoint format 2, or not by these algorithm files): not loaded") from None
        # cut short, or not a torch file at all (a text file reads as a pickle that weights_only refuses)
        reason = "not a pickle of torch.save" if isinstance(err, pickle.UnpicklingError) else (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {reason}): truncated, or not a model or checkpoint of these"
                         " files") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("args"), dict):
        raise ValueError(f"{path} is not a model or checkpoint of these files: it holds no saved arguments")
    return saved["args"], saved.get("modules", saved), "modules" in saved  # a checkpoint keeps them under "modules"


def writer_of(saved_args: dict, path: Path, require_exp_name: bool = False):
    """The algorithm file that wrote these arguments, imported: the one their exp_name names, else (unless
    require_exp_name) the one whose arguments they are. It must still accept every one of them; ValueError if not."""
    sys.path.insert(0, str(ROOT))
    fields = {name: {f.name for f in dataclasses.fields(importlib.import_module(name).Args)} for name in algorithm_files()}
    name = saved_args.get("exp_name") if saved_args.get("exp_name") in fields else None
    if name is None and require_exp_name:
        raise ValueError(f"{path} was written with --exp-name {saved_args.get('exp_name')!r}, which names no algorithm file")
    name = name or max(fields, key=lambda algo: len(fields[algo] & saved_args.keys()))
    unknown = sorted(saved_args.keys() - fields[name])
    if unknown:
        flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in unknown)
        raise ValueError(f"{path} was written with arguments that {name}.py no longer accepts: {flags}")
    return importlib.import_module(name)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "finished":
        sys.exit("runs.py: error: usage: python tools/runs.py finished RUN_DIR ...")
    print("".join(f"{run_dir}\n" for run_dir in sys.argv[2:] if is_finished(run_dir)), end="")
