"""Learning check: train algorithm files on one env for several seeds and print a markdown table of
env steps to first reach a return threshold, final and best eval return, steps/s and wall time.

  python tools/learning_check.py --algos sac_baseline td3_baseline --env-id InvertedPendulum-v4 \
      --seeds 1 2 3 --threshold 1000 --workers 2 --out checks/ip -- --learning-starts 1000 --total-timesteps 30000

Everything after `--` is passed to every run. Runs are named {env}__{algo}__{seed}; a run directory that already
holds results is reported, not re-run. Each run uses one CPU thread, so `--workers` runs share the machine fairly.
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluations import last_scalar, read_evaluations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_one(algo: str, env_id: str, seed: int, out: Path, extra: list[str]) -> float:
    """Train one run (unless its results exist); return its wall time in seconds."""
    run_name = f"{env_id}__{algo}__{seed}"
    if read_evaluations(out / "runs" / run_name):
        return float("nan")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / f"{algo}.py"), "--env-id", env_id, "--seed", str(seed)]
    command += ["--run-name", run_name, "--no-cuda", *extra]
    start = time.time()
    with open(out / f"{run_name}.log", "w") as log:
        subprocess.run(command, cwd=out, stdout=log, stderr=subprocess.STDOUT, check=False)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=None, help="report the first env step reaching it")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args, extra = parser.parse_known_args()
    extra = [flag for flag in extra if flag != "--"]
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = [(algo, seed) for algo in args.algos for seed in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        wall = dict(zip(jobs, pool.map(lambda job: run_one(job[0], args.env_id, job[1], args.out, extra), jobs)))

    print(f"\n{args.env_id}, flags: {' '.join(extra) or '(defaults)'}\n")
    print("| algo | seed | steps to return >= threshold | final eval return | best eval return | steps/s | wall time |")
    print("|---|---|---|---|---|---|---|")
    for algo, seed in jobs:
        run_dir = args.out / "runs" / f"{args.env_id}__{algo}__{seed}"
        rows = read_evaluations(run_dir)
        if not rows:
            print(f"| {algo} | {seed} | run failed, see {run_dir.name}.log | | | | |")
            continue
        reached = [row["global_step"] for row in rows if args.threshold is not None and row["mean_return"] >= args.threshold]
        first = f"{reached[0]:.0f}" if reached else "not reached"
        sps = last_scalar(run_dir, "charts/SPS")
        print(
            f"| {algo} | {seed} | {first} | {rows[-1]['mean_return']:.1f} (step {rows[-1]['global_step']:.0f}) | "
            f"{max(row['mean_return'] for row in rows):.1f} | {sps or float('nan'):.0f} | "
            f"{rows[-1]['wall_time_s'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
