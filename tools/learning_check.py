"""Learning check: train algorithm files on one env for several seeds and print a markdown table of
env steps to first reach a return threshold, final and best eval return, steps/s and wall time.

  python tools/learning_check.py --algos sac_baseline td3_baseline --env-id InvertedPendulum-v4 \
      --seeds 1 2 3 --threshold 1000 --workers 2 --out checks/ip -- --learning-starts 1000 --total-timesteps 30000

Everything after `--` is passed to every run. Runs are named as benchmark.sh names them; a run directory that already
holds results is reported, not re-run. Each run uses one CPU thread, so `--workers` runs share the machine fairly.
With --stop-at-threshold a run is ended at its first evaluation that reaches --threshold (what the check measures);
with --max-minutes every run gets the same wall-clock budget.
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import last_scalar, read_evaluations, run_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_one(algo: str, env_id: str, seed: int, out: Path, extra: list[str], stop_at: float | None, max_minutes: float | None) -> None:
    """Train one run unless its results exist; with `stop_at`, end it once an evaluation reaches that return, with
    `max_minutes` once it has run that long (a wall-clock budget)."""
    name = run_name(env_id, algo, seed)
    run_dir = out / "runs" / name
    if read_evaluations(run_dir):
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / f"{algo}.py"), "--env-id", env_id, "--seed", str(seed)]
    command += ["--run-name", name, "--no-cuda", *extra]
    start = time.time()
    with open(out / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, cwd=out, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(5)
            reached = stop_at is not None and any(row["mean_return"] >= stop_at for row in read_evaluations(run_dir))
            if reached or (max_minutes is not None and time.time() - start > 60 * max_minutes):
                process.terminate()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=None, help="report the first env step reaching it")
    parser.add_argument("--stop-at-threshold", action="store_true", help="end each run once it reaches --threshold")
    parser.add_argument("--max-minutes", type=float, default=None, help="end each run after this wall time")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = [(algo, seed) for algo in args.algos for seed in args.seeds]
    stop_at = args.threshold if args.stop_at_threshold else None
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda job: run_one(job[0], args.env_id, job[1], args.out, extra, stop_at, args.max_minutes), jobs))

    print(f"\n{args.env_id}, flags: {' '.join(extra) or '(defaults)'}\n")
    print("| algo | seed | env steps to return >= threshold | wall time then | last eval return (step) | best eval return | steps/s | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for algo, seed in jobs:
        run_dir = args.out / "runs" / run_name(args.env_id, algo, seed)
        rows = read_evaluations(run_dir)
        if not rows:
            print(f"| {algo} | {seed} | run failed, see {run_dir.name}.log | | | | | |")
            continue
        reached = [row for row in rows if args.threshold is not None and row["mean_return"] >= args.threshold]
        first = f"{reached[0]['global_step']:.0f} | {reached[0]['wall_time_s'] / 60:.1f} min" if reached else "not reached | -"
        last, best = rows[-1], max(row["mean_return"] for row in rows)
        sps = last_scalar(run_dir, "charts/SPS") or float("nan")
        print(
            f"| {algo} | {seed} | {first} | {last['mean_return']:.1f} ({last['global_step']:.0f}) | {best:.1f} | "
            f"{sps:.0f} | {last['wall_time_s'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
