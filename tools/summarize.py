"""Turn benchmark runs into the papers' tables and learning curves.

  python tools/summarize.py benchmark_runs/runs --out benchmark_runs/summary

Reads every {env}__{algo}__{seed}/evaluations.csv under RUNS_DIR (partial runs included) and writes to --out:
  table.md / table.csv        the FPMD paper's Table 1 form: best return (the max over evaluations of the
                              across-episode mean, per seed), mean +- std over seeds, the paper's number beside it,
                              the final-return mean +- std, the seeds found and how many of them have finished
                              (tools/runs.py's definition: the others are running or stopped), the evaluation protocol
                              the runs used (evaluations per run, their spacing, episodes each): the best of many
                              noisy evaluations is higher than the best of few, so a table is only comparable with
                              one of the same protocol (the FPMD paper: 40 evaluations of 20 episodes per 1M steps);
  walltime.md                 seeds, finished seeds, wall time, env steps reached and env steps/s of the runs;
  curves/{env}.png            eval return against env steps, mean +- std band over seeds per algorithm.
Std is over seeds with ddof = 0. Pusher-v5 rows are compared with the paper's Pusher-v4 numbers. A cell without a
paper number says so ("paper: none"): the MFPO paper draws its results (MuJoCo, Fig. 2; the DeepMind Control Suite's
hard tasks, Fig. 6) as curves only, and the FPMD paper has no DeepMind Control Suite table. A pair without runs reads
"no runs". DeepMind Control Suite runs are named like the others: dm_control-dog-run-v0__{algo}__{seed}.
"""

import argparse
import csv
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import algorithm_files, is_finished, read_evaluations, run_arguments  # noqa: E402

# FPMD paper (arXiv 2507.23675), Table 1: best mean return +- std over 5 seeds.
PAPER_TABLE_1 = {
    "HalfCheetah": {"sac_baseline": (8981, 370), "td3_baseline": (8149, 688), "fpmd_r": (9345, 642), "fpmd_m": (8549, 791)},
    "Reacher": {"sac_baseline": (-65.35, 56.42), "td3_baseline": (-3.10, 0.07), "fpmd_r": (-3.30, 0.14), "fpmd_m": (-3.48, 0.06)},
    "Humanoid": {"sac_baseline": (2858, 2637), "td3_baseline": (5816, 358), "fpmd_r": (6124, 436), "fpmd_m": (3930, 1393)},
    "Pusher": {"sac_baseline": (-31.22, 0.26), "td3_baseline": (-25.07, 1.01), "fpmd_r": (-23.66, 1.00), "fpmd_m": (-24.63, 1.49)},
    "InvertedPendulum": {"sac_baseline": (1000, 0), "td3_baseline": (1000, 0), "fpmd_r": (1000, 0), "fpmd_m": (1000, 0)},
    "Ant": {"sac_baseline": (2500, 767), "td3_baseline": (3733, 1336), "fpmd_r": (5376, 658), "fpmd_m": (5350, 211)},
    "Hopper": {"sac_baseline": (3197, 294), "td3_baseline": (1934, 1079), "fpmd_r": (3278, 93), "fpmd_m": (2076, 1504)},
    "Swimmer": {"sac_baseline": (63.5, 10.2), "td3_baseline": (71.9, 15.3), "fpmd_r": (53.5, 6.3), "fpmd_m": (46.5, 3.5)},
    "Walker2d": {"sac_baseline": (3233, 871), "td3_baseline": (2476, 1357), "fpmd_r": (4760, 175), "fpmd_m": (3253, 1475)},
    "InvertedDoublePendulum": {"sac_baseline": (9359, 1), "td3_baseline": (9360, 0), "fpmd_r": (9359, 1), "fpmd_m": (9357, 1)},
}


def load_runs(runs_dir: Path) -> dict[tuple[str, str], dict[int, list[dict[str, float]]]]:
    """{(env, algo): {seed: evaluation rows}} for every run directory named {env}__{algo}__{seed} with rows."""
    runs: dict[tuple[str, str], dict[int, list]] = defaultdict(dict)
    for run_dir in sorted(Path(runs_dir).iterdir()):
        parts = run_dir.name.split("__")
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        rows = read_evaluations(run_dir)
        if rows:
            runs[(parts[0], parts[1])][int(parts[2])] = rows
    return runs


def num_finished(runs_dir: Path, env: str, algo: str, seeds) -> int:
    """How many of a group's runs are finished (tools/runs.py's definition); the others are running or were stopped."""
    return sum(is_finished(runs_dir / f"{env}__{algo}__{seed}") for seed in seeds)


def evaluation_protocol(runs_dir: Path, env: str, algo: str, seeds: dict[int, list]) -> dict[str, str]:
    """How a group's runs were evaluated: evaluations per run, their spacing and first step, episodes each (from the
    run's logged arguments). A field on which the seeds disagree lists their values."""
    fields = defaultdict(set)
    for seed, rows in seeds.items():
        fields["evaluations"].add(str(len(rows)))
        fields["eval_every"].add(f"{rows[1]['global_step'] - rows[0]['global_step']:.0f}" if len(rows) > 1 else "-")
        fields["first_eval_step"].add(f"{rows[0]['global_step']:.0f}")
        fields["eval_episodes"].add(run_arguments(runs_dir / f"{env}__{algo}__{seed}").get("eval_episodes", "?"))
    return {name: "/".join(sorted(values, key=lambda v: (len(v), v))) for name, values in fields.items()}


def env_base(env_id: str) -> str:
    return env_id.split("-")[0]


def ordered(runs) -> tuple[list[str], list[str]]:
    """Envs in the paper's table order, algorithms in the order benchmark.sh lists the files; others after them."""
    paper_order = list(PAPER_TABLE_1)
    envs = sorted({env for env, _ in runs}, key=lambda e: (paper_order.index(env_base(e)) if env_base(e) in paper_order else 99, e))
    files = algorithm_files()
    algos = sorted({algo for _, algo in runs}, key=lambda a: (files.index(a) if a in files else len(files), a))
    return envs, algos


def mean_std(values) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def fmt(mean: float, std: float) -> str:
    digits = 2 if abs(mean) < 100 else 0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_tables(runs, runs_dir: Path, out: Path) -> None:
    envs, algos = ordered(runs)
    records = []
    for env in envs:
        for algo in algos:
            seeds = runs.get((env, algo))
            if not seeds:
                continue
            best = mean_std([max(row["mean_return"] for row in rows) for rows in seeds.values()])
            final = mean_std([rows[-1]["mean_return"] for rows in seeds.values()])
            steps = [rows[-1]["global_step"] for rows in seeds.values()]
            paper = PAPER_TABLE_1.get(env_base(env), {}).get(algo)
            records.append({"env": env, "algo": algo, "num_seeds": len(seeds), "num_finished": num_finished(runs_dir, env, algo, seeds),
                            "best_mean": best[0], "best_std": best[1],
                            "final_mean": final[0], "final_std": final[1], "min_steps": min(steps), "max_steps": max(steps),
                            "paper_best_mean": paper[0] if paper else "", "paper_best_std": paper[1] if paper else "",
                            **evaluation_protocol(runs_dir, env, algo, seeds)})
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["env"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)

    by_key = {(r["env"], r["algo"]): r for r in records}
    lines = ["# Results", "", "Best return: max over evaluations of the mean over episodes, per seed; mean ± std over "
             "seeds (ddof 0). *paper*: FPMD paper Table 1 (5 seeds; Pusher-v4 there); *paper: none*: no table of either "
             "paper has this number (the MFPO paper's results, MuJoCo and DeepMind Control Suite, are curves: its Fig. 2 "
             "and Fig. 6). [n]: seeds found, all finished ([n, f finished]: f of them); steps: env steps reached (fewest "
             "over seeds).", ""]
    lines += ["| env | " + " | ".join(algos) + " |", "|---" * (len(algos) + 1) + "|"]
    for env in envs:
        cells = []
        for algo in algos:
            r = by_key.get((env, algo))
            if r is None:
                cells.append("no runs")
                continue
            paper = f"<br>*paper {fmt(r['paper_best_mean'], r['paper_best_std'])}*" if r["paper_best_mean"] != "" else "<br>*paper: none*"
            seeds = f"[{r['num_seeds']}]" if r["num_finished"] == r["num_seeds"] else f"[{r['num_seeds']}, {r['num_finished']} finished]"
            cells.append(f"{fmt(r['best_mean'], r['best_std'])} {seeds}{paper}<br>steps {r['min_steps']:.0f}")
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    lines += ["", "Final return (the last evaluation of each seed), mean ± std over seeds:", ""]
    lines += ["| env | " + " | ".join(algos) + " |", "|---" * (len(algos) + 1) + "|"]
    for env in envs:
        cells = [fmt(by_key[(env, a)]["final_mean"], by_key[(env, a)]["final_std"]) if (env, a) in by_key else "no runs" for a in algos]
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    lines += ["", "Evaluation protocol of these runs (the FPMD paper's: 40 evaluations per run, every 25000 env steps after "
              "the 30000 warm-up steps, 20 episodes each):", "",
              "| env | algo | evaluations per run | every (env steps) | first at step | episodes each |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['env']} | {r['algo']} | {r['evaluations']} | {r['eval_every']} | {r['first_eval_step']} | {r['eval_episodes']} |"
              for r in records]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def write_walltime(runs, runs_dir: Path, out: Path) -> None:
    envs, algos = ordered(runs)
    lines = ["| env | algo | seeds | finished | env steps reached | wall time (h), mean ± std | env steps/s |", "|---|---|---|---|---|---|---|"]
    for env in envs:
        for algo in algos:
            seeds = runs.get((env, algo))
            if not seeds:
                continue
            hours = [rows[-1]["wall_time_s"] / 3600 for rows in seeds.values()]
            rates = [rows[-1]["global_step"] / max(rows[-1]["wall_time_s"], 1e-9) for rows in seeds.values()]
            steps = [rows[-1]["global_step"] for rows in seeds.values()]
            lines.append(f"| {env} | {algo} | {len(seeds)} | {num_finished(runs_dir, env, algo, seeds)} | {min(steps):.0f}-{max(steps):.0f} | "
                         f"{np.mean(hours):.2f} ± {np.std(hours):.2f} | {np.mean(rates):.0f} |")
    (out / "walltime.md").write_text("\n".join(lines) + "\n")


def plot_curves(runs, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs, algos = ordered(runs)
    (out / "curves").mkdir(exist_ok=True)
    paths = []
    for env in envs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for algo in algos:
            seeds = runs.get((env, algo))
            if not seeds:
                continue
            returns_at = defaultdict(list)  # partial runs: each step averages the seeds that reached it
            for rows in seeds.values():
                for row in rows:
                    returns_at[row["global_step"]].append(row["mean_return"])
            steps = np.array(sorted(returns_at))
            mean = np.array([np.mean(returns_at[s]) for s in steps])
            std = np.array([np.std(returns_at[s]) for s in steps])
            ax.plot(steps, mean, label=f"{algo} (n={len(seeds)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=env, xlabel="env steps", ylabel="eval return")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "curves" / f"{env}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path, help="the directory holding the {env}__{algo}__{seed} run directories")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-plots", action="store_true", help="skip the learning curves (no matplotlib needed)")
    args = parser.parse_args()
    if not args.runs_dir.is_dir():
        sys.exit(f"summarize.py: error: {args.runs_dir} is not a directory")
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        sys.exit("summarize.py: error: the learning curves need matplotlib, which is not installed: pip install matplotlib, or --no-plots")
    runs = load_runs(args.runs_dir)
    if not runs:
        sys.exit(f"summarize.py: error: no {{env}}__{{algo}}__{{seed}} runs with evaluations under {args.runs_dir}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_tables(runs, args.runs_dir, args.out)
    write_walltime(runs, args.runs_dir, args.out)
    plots = [] if args.no_plots else plot_curves(runs, args.out)
    finished = sum(num_finished(args.runs_dir, env, algo, seeds) for (env, algo), seeds in runs.items())
    print(f"{sum(len(s) for s in runs.values())} runs ({finished} finished) in {len(runs)} (env, algo) pairs -> "
          f"{args.out}/table.md, table.csv, walltime.md, {len(plots)} curves")
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
