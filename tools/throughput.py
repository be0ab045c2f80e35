"""What a benchmark run costs on this machine, measured before launching it: each file's own training loop, timed.

  python tools/throughput.py --algos sac_baseline fpmd_m --envs Hopper-v4 Ant-v4 --device cpu --seconds 30
  python tools/throughput.py --envs Hopper-v4 -- --num-particles 4        # flags after -- go to every run
  python tools/throughput.py --floor --device cuda                        # eager and --compile at tiny shapes
  python tools/throughput.py --floor --device cuda --jobs 4               # four measurements at a time
  python tools/throughput.py --algos mfpo --envs Hopper-v4 --device cpu --against ../old  # this tree beside another
  bash benchmark.sh --estimate --algos fpmd_m --seeds "1 2 3" --workers 4  # the bill of a launch (uses --estimate)

Each (file, env) pair runs the command benchmark.sh would launch for it (from `benchmark.sh --dry-run`: the file's
defaults, the papers' budget, the benchmark's evaluation protocol, the flags after --), in a child process of its
own: the file's main() trains as it would, its replay buffer's add() is timestamped (once per vector step), and once
--seconds have passed after a few warm-up updates the child sends itself SIGTERM, which the file answers by ending the
iteration and exiting. One evaluation as the file schedules it (--eval-episodes envs) is then timed separately with
the file's own make_networks, make_inference_policy and evaluate, random weights, and scaled to full-length episodes
(the env's time limit): trained agents mostly reach it, so this is the evaluation's upper bound.

Printed per pair: env steps/s and gradient iterations/s once updates have begun, env steps/s of the random warm-up,
the seconds of one evaluation, and the hours of one run of the pair's benchmark budget, evaluations included. The
measurements go to --table (JSON, merged with what it held), keyed by machine, device and command, so that
`benchmark.sh --estimate` reuses them. The estimate assumes each run has the machine's cores as it had them here:
runs side by side on too few cores are slower. A command with --compile (after --) is timed once its first
COMPILE_WARMUP_UPDATES update iterations have compiled.

--floor times each file's own loop at shapes so small that the arithmetic vanishes (FLOOR_SHAPES: batch 2, 2
particles, 2 policy and 2 Gaussian proposals; the flow steps, the networks and the loop as they are): what is left is
what an iteration dispatches, the cost that bounds a run on a GPU. Each pair runs eager and with --compile, and the
table prints both rates and their ratio; nothing is written to --table, and no evaluation is timed.

--jobs N takes N measurements at a time, each in its own child; they share the machine's cores and its GPU, as the runs of
benchmark.sh --workers N share them. Most of a child's time is start-up and (under --compile) compiling, so on a
machine with N cores to spare a table takes about 1/N of the time. The rates are those of runs side by side: the
table's header says how many, and --table keeps them apart from rates measured one at a time.

--against DIR compares this tree's code with another checkout of the project (a worktree of an older commit, say) on
this machine: each tree's own tool measures the same pairs, both at once, each pinned to a core of its own with one
torch thread, so that a speed-up is measured side by side in one run rather than across runs on a shared machine. It
prints each pair's rates in both trees, their ratio, and how much of the two timed windows overlapped (only rates
timed at the same time are side by side). Nothing goes to --table.
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import cache
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
WARMUP_UPDATES = 3  # update iterations not timed: the first ones allocate the optimizer state and caches
COMPILE_WARMUP_UPDATES = 10  # under --compile the first calls of each update function compile it
FLOOR_SHAPES = {"batch_size": 2, "num_particles": 2, "num_policy_samples": 2, "num_gaussian_samples": 2}
PER_RUN_FLAGS = {"--seed", "--run-name", "--total-timesteps", "--checkpoint-freq"}  # they do not change the rate


ERROR_PREFIX = "throughput.py: error: "


def fail(message: str):
    sys.exit(ERROR_PREFIX + message)


def rate_key(command: list[str]) -> str:
    """What the rate of a run depends on: the file and its flags, less the ones that only name or size the run."""
    file, flags, kept = Path(command[1]).name, command[2:], []
    skip = False
    for flag in flags:
        if skip:
            skip = False
        elif flag in PER_RUN_FLAGS:
            skip = True
        else:
            kept.append(flag)
    return " ".join([file, *kept])


@cache
def load_file(path: str):
    """An algorithm file as a module (importing it has no side effects)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).parent))
    spec.loader.exec_module(module)
    return module


def parsed_args(command: list[str]):
    """The file's Args for a benchmark command, its defaults filled in as the file fills them."""
    return tyro.cli(load_file(command[1]).Args, args=command[2:])


def cpu_name() -> str:
    """The CPU's model, its cores and its widest vector instructions: machines that differ only there run the same
    update several times apart."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "instruction set unknown"
    return f"{model} ({os.cpu_count()} cores, {vectors})"


def machine_name(device: str) -> str:
    """The machine and device a table describes: the host and its CPU, the GPU's name on CUDA, and the libraries
    preloaded into every process (LD_PRELOAD), which can change the speed of the same code on the same CPU (the README's
    library that puts MKL on its fast path on an AMD CPU: 1.15-1.26x)."""
    gpu = f" / {torch.cuda.get_device_name(0)}" if device == "cuda" else ""
    preloaded = [Path(library).name for library in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()]
    return f"{platform.node()} / {cpu_name()}{gpu}" + (f" / LD_PRELOAD={','.join(preloaded)}" if preloaded else "")


# ---- the child: one pair, in its own process -------------------------------------------------------------------------
def measure(command: list[str], seconds: float, device: str, time_evaluation: bool = True) -> dict:
    """Run the file of `command` in this process with the command's flags and time its training loop and (unless
    told not to) one evaluation."""
    module = load_file(command[1])
    args = dataclasses.replace(parsed_args(command), cuda=device == "cuda")
    _, final_step = module.step_schedule(args)
    warmup = COMPILE_WARMUP_UPDATES if getattr(args, "compile", False) else WARMUP_UPDATES

    # training: every add() is one vector step, stamped in constant time; SIGTERM once the window is over
    random_phase, updates, stopping = [], [], []  # (time, env steps so far) of each vector step
    original_add, env_steps = module.ReplayBuffer.add, 0

    def timed_add(buffer, obs, *rest):
        nonlocal env_steps
        original_add(buffer, obs, *rest)
        env_steps += len(obs)
        (updates if env_steps > args.learning_starts else random_phase).append((time.perf_counter(), env_steps))
        if len(updates) > warmup and updates[-1][0] - updates[warmup][0] >= seconds and not stopping:
            stopping.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # the file's own handler: end the iteration, checkpoint, exit

    module.ReplayBuffer.add = timed_add
    timed_args = dataclasses.replace(args, run_name="throughput", checkpoint_freq=0, eval_freq=10 * final_step)
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)  # the run's directory and its SIGTERM checkpoint go there
        try:
            module.main(timed_args)
        except SystemExit as stop:
            if not stopping:  # the file stopped by itself: bad flags, a non-finite loss
                fail(f"{rate_key(command)}: {stop.code}")
        os.chdir(ROOT)
    module.ReplayBuffer.add = original_add
    updates = updates[warmup:]
    if len(updates) < 2:
        fail(f"{rate_key(command)}: the run ended before {warmup + 2} update iterations; raise --total-timesteps")
    (start, start_step), (end, end_step) = updates[0], updates[-1]
    random_rate = None
    if len(random_phase) > 1:
        random_rate = (random_phase[-1][1] - random_phase[0][1]) / (random_phase[-1][0] - random_phase[0][0])

    eval_seconds, eval_vector_steps = evaluation_seconds(module, args, device) if time_evaluation else (None, 0)
    return {
        "command": rate_key(command), "machine": machine_name(device), "device": device, "threads": torch.get_num_threads(),
        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,  # the ones it could run on
        "env_steps_per_s": (end_step - start_step) / (end - start), "iterations_per_s": (len(updates) - 1) / (end - start),
        "random_env_steps_per_s": random_rate, "eval_seconds": eval_seconds, "eval_vector_steps_timed": eval_vector_steps,
        "window": [stamp + time.time() - time.perf_counter() for stamp in (start, end)],  # the timed seconds, in unix time
    }


def evaluation_seconds(module, args, device: str) -> tuple[float, int]:
    """One evaluation of --eval-episodes episodes with the file's own make_networks, make_inference_policy and
    evaluate (random weights), timed per vector step and scaled to the env's time limit; and the vector steps timed."""
    env = module.make_gym_env(args.env_id)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    time_limit = env.spec.max_episode_steps  # None for dm_control's tasks, which end their own episodes: all run full length
    torch_device = torch.device(device)
    low = torch.as_tensor(env.action_space.low, dtype=torch.float32, device=torch_device)
    high = torch.as_tensor(env.action_space.high, dtype=torch.float32, device=torch_device)
    networks = {k: v.to(torch_device) for k, v in module.make_networks(obs_dim, action_dim, (high - low) / 2, args).items()}
    eval_envs = module.make_vector_env(args.env_id, args.seed + 10_000, args.eval_episodes)
    eval_envs.reset(seed=args.seed + 10_000)
    vector_steps = []

    def counted_policy(obs):
        vector_steps.append(1)
        return policy(obs)

    eval_start = time.perf_counter()
    policy, _ = module.make_inference_policy(networks, action_dim, args)
    module.evaluate(counted_policy, eval_envs, low, high, torch_device)
    eval_envs.close()
    return (time.perf_counter() - eval_start) / len(vector_steps) * (time_limit or len(vector_steps)), len(vector_steps)


# ---- the parent: commands from benchmark.sh, one child per distinct rate, the table and the estimate -------------------
def run_cost(command: list[str], m: dict) -> float:
    """Seconds of one run of `command` at the measured rates: the random warm-up, the updates, the evaluations. The
    step schedule is read from the command's own flags with the file's defaults, as the file counts it."""
    args = parsed_args(command)
    budget_start, final_step = load_file(command[1]).step_schedule(args)  # the file's own count of its budget
    random_steps = min(args.learning_starts, final_step)
    evaluations = math.ceil((final_step - budget_start) / args.eval_freq)  # every eval_freq, and one at the end
    random_seconds = random_steps / m["random_env_steps_per_s"] if m["random_env_steps_per_s"] else 0.0
    return random_seconds + (final_step - random_steps) / m["env_steps_per_s"] + evaluations * m["eval_seconds"]


def benchmark_commands(algos: list[str] | None, envs: list[str], extra: list[str]) -> list[list[str]]:
    """The commands benchmark.sh would launch for these pairs, seed 1 (its --dry-run, into an empty directory); no
    algos: every algorithm file, as benchmark.sh finds them."""
    selection = ["--algos", " ".join(algos)] if algos else []
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(["bash", str(ROOT / "benchmark.sh"), "--dry-run", "--out", out, "--seeds", "1", *selection,
                                 "--envs", " ".join(envs), "--", *extra], capture_output=True, text=True)
    if result.returncode != 0:
        fail(result.stderr.strip().splitlines()[-1].removeprefix("benchmark.sh: error: "))
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def measure_in_child(command: list[str], seconds: float, device: str, time_evaluation: bool = True) -> dict:
    """measure() in a child process of its own, so that no measurement inherits another's state."""
    print(f"measuring {rate_key(command)} on {device} ({seconds:g} s after the warm-up updates) ...", file=sys.stderr, flush=True)
    child = subprocess.run([sys.executable, __file__, "--child", json.dumps(command), "--seconds", str(seconds), "--device", device,
                            *([] if time_evaluation else ["--no-evaluation"])], capture_output=True, text=True)
    if child.returncode != 0:
        last_line = (child.stderr.strip().splitlines() or ["no output"])[-1]
        own_error = last_line.startswith(ERROR_PREFIX)  # the child's fail(), which names the command already
        fail(last_line.removeprefix(ERROR_PREFIX) if own_error else f"{rate_key(command)}: {last_line}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure_in_children(commands: list[list[str]], seconds: float, device: str, time_evaluation: bool, jobs: int):
    """measure_in_child for each command, `jobs` children at a time; the measurements as they finish, in any order,
    each with its command's index."""
    pool = ThreadPoolExecutor(max_workers=jobs)  # each thread waits on its child
    futures = {pool.submit(measure_in_child, command, seconds, device, time_evaluation): i for i, command in enumerate(commands)}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()  # a child's fail() is raised here
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, no child not yet started starts


def side_by_side(jobs: int) -> str:
    """How a table's rates were measured, for its header: one child at a time, or `jobs`."""
    return "one measurement at a time" if jobs == 1 else f"{jobs} measurements at a time, side by side"


def floor_flags(command: list[str]) -> list[str]:
    """The FLOOR_SHAPES flags that the command's file takes."""
    fields = {field.name for field in dataclasses.fields(load_file(command[1]).Args)}
    return [token for name, value in FLOOR_SHAPES.items() if name in fields for token in (f"--{name.replace('_', '-')}", str(value))]


def print_floor(commands: list[list[str]], seconds: float, device: str, jobs: int) -> None:
    """Each command at the floor shapes, eager and with --compile, each measured in a child process now."""
    floors = [[*command, *floor_flags(command), *compile_flag] for command in commands for compile_flag in ([], ["--compile"])]
    measurements = dict(measure_in_children(floors, seconds, device, False, jobs))
    rows = [(command, measurements[2 * i], measurements[2 * i + 1]) for i, command in enumerate(commands)]
    shrunk = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in FLOOR_SHAPES.items())
    print(f"\nThe floor: each file's own loop with {shrunk} (where the file has the flag); the flow steps, the networks"
          f" and the loop as they are.\n{rows[0][1]['machine']}, {device}, {rows[0][1]['threads']} torch thread(s),"
          f" {side_by_side(jobs)}\n")
    print("| file | env | eager: iterations / s | eager: env steps / s | --compile: iterations / s | --compile: env steps / s | --compile / eager |")
    print("|---|---|---|---|---|---|---|")
    for command, eager, compiled in rows:
        print(f"| {Path(command[1]).stem} | {parsed_args(command).env_id} | {eager['iterations_per_s']:.1f} | {eager['env_steps_per_s']:.1f} | "
              f"{compiled['iterations_per_s']:.1f} | {compiled['env_steps_per_s']:.1f} | "
              f"{compiled['iterations_per_s'] / eager['iterations_per_s']:.2f} |")


def table_key(machine: str, command: list[str], jobs: int) -> str:
    """A measurement's key in --table: the machine and device, the rate key, and how many were measured side by side."""
    return f"{machine} | {rate_key(command)}" + ("" if jobs == 1 else f" | {jobs} at a time")


def measured(commands: list[list[str]], table_path: Path, seconds: float, device: str, jobs: int) -> dict[str, dict]:
    """The measurement of every distinct rate key among `commands`: from the table where it holds one for this machine,
    device and --jobs, else measured now in a child process (`jobs` at a time) and added to the table as it comes."""
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    machine = machine_name(device)
    missing = list({table_key(machine, c, jobs): c for c in commands if table_key(machine, c, jobs) not in table}.values())
    for i, measurement in measure_in_children(missing, seconds, device, True, jobs):
        table[table_key(machine, missing[i], jobs)] = measurement
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table_path.write_text(json.dumps(table, indent=1) + "\n")
    return {rate_key(command): table[table_key(machine, command, jobs)] for command in commands}


def print_table(commands: list[list[str]], results: dict[str, dict], jobs: int) -> None:
    first = results[rate_key(commands[0])]
    print(f"\n{first['machine']}, {first['device']}, {first['threads']} torch thread(s), {side_by_side(jobs)}\n")
    print("| file | env | env steps / s | iterations / s | warm-up env steps / s | one evaluation, s | budget, env steps | hours / run |")
    print("|---|---|---|---|---|---|---|---|")
    for command in commands:
        m, args = results[rate_key(command)], parsed_args(command)
        warmup = f"{m['random_env_steps_per_s']:.0f}" if m["random_env_steps_per_s"] else "-"
        print(f"| {Path(command[1]).stem} | {args.env_id} | {m['env_steps_per_s']:.1f} | {m['iterations_per_s']:.2f} | "
              f"{warmup} | {m['eval_seconds']:.2f} | {args.total_timesteps} | {run_cost(command, m) / 3600:.2f} |")


def print_estimate(commands: list[list[str]], results: dict[str, dict], workers: int, slurm: bool) -> None:
    """Hours per run, per algorithm and for the selection on `workers` workers, each taking the next run in
    benchmark.sh's order when it is free (its local scheduler); with --slurm, the --time an array task needs."""
    hours = [run_cost(command, results[rate_key(command)]) / 3600 for command in commands]
    per_algo: dict[str, list[float]] = {}
    for command, h in zip(commands, hours):
        per_algo.setdefault(Path(command[1]).stem, []).append(h)
    print("\n| file | runs | hours / run (min - max) | run-hours |")
    print("|---|---|---|---|")
    for algo, values in per_algo.items():
        print(f"| {algo} | {len(values)} | {min(values):.2f} - {max(values):.2f} | {sum(values):.2f} |")
    free_at = [0.0] * workers
    for h in hours:
        worker = free_at.index(min(free_at))
        free_at[worker] += h
    print(f"\n{len(commands)} runs, {sum(hours):.2f} run-hours: {max(free_at):.2f} hours on {workers} worker(s)"
          " (each with the cores it had in the measurement)")
    if slurm:
        limit = math.ceil(max(hours) * 1.25 * 3600 / 60) * 60  # the longest run and a 25 % margin, whole minutes
        print(f"slurm: each array task needs --time {limit // 3600:02d}:{limit % 3600 // 60:02d}:00 (the longest run + 25 %;"
              " a run that overruns it stops with a checkpoint and resumes when benchmark.sh --slurm is run again)")


def file_and_env(rate: str) -> tuple[str, str]:
    """The file and the env of a rate key ("mfpo.py --env-id Hopper-v4 ..."): how two trees' measurements of the same
    pair are matched, since the flags benchmark.sh passes can differ from one commit to another."""
    tokens = rate.split()
    return tokens[0], tokens[tokens.index("--env-id") + 1]


def print_against(other_root: Path, selection: list[str], device: str) -> None:
    """--against: the selection measured by other_root's tool and by this tree's, at the same time, each child pinned
    to one core of this process's with one torch thread; then the two rates of each pair, their ratio and the overlap
    of their timed windows."""
    if not hasattr(os, "sched_getaffinity"):
        fail("--against pins each tree to a core of its own, which Python cannot do on this OS (Linux can)")
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        fail(f"--against needs two cores, one for each tree; this process may run on {len(cores)}")
    print(f"measuring {' '.join(selection)} in {other_root} and {ROOT} at once, on cores {cores[0]} and {cores[1]} ...",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tables:
        children = {}
        for root, core in zip((other_root, ROOT), cores):
            table_path = Path(tables) / f"core{core}.json"
            command = [sys.executable, str(root / "tools" / "throughput.py"), "--table", str(table_path), *selection]
            children[root] = table_path, subprocess.Popen(
                command, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}))
        rates = {}
        for root, (table_path, child) in children.items():
            _, stderr = child.communicate()
            if child.returncode != 0:
                for _, sibling in children.values():
                    sibling.kill()  # a child still measuring would run on, unread
                fail(f"{root}: " + (stderr.strip().splitlines() or ["no output"])[-1].removeprefix(ERROR_PREFIX))
            rates[root] = {file_and_env(m["command"]): m for m in json.loads(table_path.read_text()).values()}
    there, here = rates[other_root], rates[ROOT]
    where = {name: f"{root} (cores {m.get('cores', [core])}, {m['threads']} torch thread(s))" for name, root, core, m in
             (("there", other_root, cores[0], next(iter(there.values()))), ("here", ROOT, cores[1], next(iter(here.values()))))}
    print(f"\n{next(iter(here.values()))['machine']}, {device}, both trees at once: there = {where['there']}, here = {where['here']}\n")
    print("| file | env | there: env steps / s | here: env steps / s | here / there | timed windows overlapping |")
    print("|---|---|---|---|---|---|")
    for pair, mine in here.items():
        theirs = there.get(pair)
        if theirs is None:  # a file that the other checkout does not have
            print(f"| {Path(pair[0]).stem} | {pair[1]} | - | {mine['env_steps_per_s']:.2f} | - | - |")
            continue
        (start_a, end_a), (start_b, end_b) = theirs["window"], mine["window"]
        overlap = max(0.0, min(end_a, end_b) - max(start_a, start_b)) / max(end_a - start_a, end_b - start_b)
        print(f"| {Path(pair[0]).stem} | {pair[1]} | {theirs['env_steps_per_s']:.2f} | {mine['env_steps_per_s']:.2f} | "
              f"{mine['env_steps_per_s'] / theirs['env_steps_per_s']:.2f} | {overlap:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", help="algorithm files, without .py; default: all, as benchmark.sh finds them")
    parser.add_argument("--envs", nargs="+", help="default: Hopper-v4 Ant-v4 Humanoid-v4; with --floor, Hopper-v4")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda where available, as the runs")
    parser.add_argument("--seconds", type=float, default=30.0, help="the timing window per pair, after the warm-up updates")
    parser.add_argument("--table", type=Path, default=ROOT / "benchmark_runs" / "throughput.json",
                        help="measurements are read from and added to this JSON file")
    parser.add_argument("--estimate", action="store_true", help="read benchmark commands on stdin, one per line, and print their bill")
    parser.add_argument("--workers", type=int, default=1, help="with --estimate: runs at a time")
    parser.add_argument("--slurm", action="store_true", help="with --estimate: the --time of a Slurm array task")
    parser.add_argument("--floor", action="store_true", help="eager and --compile at tiny shapes, side by side (see above)")
    parser.add_argument("--jobs", type=int, default=1, help="measurements at a time, each in its own child process (see above)")
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout of this project: the same pairs measured there and here"
                        " at once, one core each, and their ratios (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-evaluation", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help="flags after -- go to every run, as in benchmark.sh")
    args = parser.parse_args()
    if not args.seconds > 0:
        fail(f"--seconds must be positive, got {args.seconds:g}")
    if args.workers < 1:
        fail(f"--workers must be positive, got {args.workers}")
    if args.jobs < 1:
        fail(f"--jobs must be positive, got {args.jobs}")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device here")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.seconds, args.device, not args.no_evaluation)))
        return
    if args.floor and args.estimate:
        fail("--floor and --estimate are two different tables: ask for one")
    if args.against:
        if args.floor or args.estimate or args.jobs != 1:
            fail("--against measures one pair at a time in each tree: not with --floor, --estimate or --jobs")
        if not (args.against / "tools" / "throughput.py").is_file():
            fail(f"--against {args.against}: no tools/throughput.py there; give the root of another checkout of this project")
        if args.device != "cpu":
            fail("--against runs the two trees on two CPU cores at once; on one GPU they would share it: pass --device cpu")
    if args.estimate:
        commands = [shlex.split(line) for line in sys.stdin.read().splitlines() if line.strip()]
        if not commands:
            fail("--estimate: no commands on stdin (is every selected run finished?)")
    else:
        envs = args.envs or (["Hopper-v4"] if args.floor else ["Hopper-v4", "Ant-v4", "Humanoid-v4"])
        commands = benchmark_commands(args.algos, envs, args.extra)
    for command in commands:  # a wrong env id gets its line before any child starts
        if problem := load_file(command[1]).find_env_problem(parsed_args(command).env_id):
            fail(problem)
    if args.floor:
        print_floor(list({rate_key(c): c for c in commands}.values()), args.seconds, args.device, args.jobs)
        return
    if args.against:
        selection = ["--device", args.device, "--seconds", str(args.seconds), *(["--algos", *args.algos] if args.algos else []),
                     "--envs", *envs, "--", *args.extra]
        print_against(args.against.resolve(), selection, args.device)
        return
    results = measured(commands, args.table, args.seconds, args.device, args.jobs)
    print_table(list({rate_key(c): c for c in commands}.values()), results, args.jobs)
    if args.estimate:
        print_estimate(commands, results, args.workers, args.slurm)


if __name__ == "__main__":
    main()
