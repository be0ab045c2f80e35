"""Reading what the algorithm files write: runs/{run_name}/evaluations.csv and the TensorBoard scalars."""

import csv
from pathlib import Path

FIELDS = ["global_step", "mean_return", "std_return", "nfe", "wall_time_s"]


def read_evaluations(run_dir: Path) -> list[dict[str, float]]:
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


def load_events(run_dir: Path):
    """All of a run's TensorBoard events, read in full."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def last_scalar(run_dir: Path, tag: str) -> float | None:
    """The last value a run logged under a TensorBoard tag (e.g. charts/SPS), or None."""
    events = load_events(run_dir)
    if tag not in events.Tags()["scalars"]:
        return None
    return events.Scalars(tag)[-1].value


def run_arguments(run_dir: Path) -> dict[str, str]:
    """The arguments a run logged as its TensorBoard "hyperparameters" text (|name|value| rows), or {}."""
    events = load_events(run_dir)
    if "hyperparameters/text_summary" not in events.Tags()["tensors"]:
        return {}
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    cells = [line.strip("|").split("|", 1) for line in table.splitlines()[2:]]
    return {cell[0]: cell[1] for cell in cells if len(cell) == 2}
