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


def last_scalar(run_dir: Path, tag: str) -> float | None:
    """The last value a run logged under a TensorBoard tag (e.g. charts/SPS), or None."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return None
    return events.Scalars(tag)[-1].value
