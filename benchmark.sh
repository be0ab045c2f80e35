#!/usr/bin/env bash
# Reproduce the papers' MuJoCo tables (and the MFPO paper's DeepMind Control Suite tasks): every (algorithm x env x
# seed) trains as its own process.
#
#   ./benchmark.sh                                  # all algorithm files x the 10 tasks x seeds 1-5, one at a time
#   ./benchmark.sh --algos fpmd_r sac_baseline --envs Hopper-v4 --seeds 1 2 --workers 4   # lists quoted or not
#   ./benchmark.sh --dry-run                        # print the commands, one per line, run nothing
#   ./benchmark.sh --estimate --workers 4           # the hours it would take here, measured first; runs nothing
#   ./benchmark.sh --slurm --workers 20 --time 48:00:00 --gpus-per-task 1   # one sbatch job array
#   ./benchmark.sh --envs Hopper-v4 -- --eval-episodes 5                    # flags after -- go to every run
#   ./benchmark.sh --suite dmc-hard --estimate      # the DeepMind Control Suite's 6 hard tasks instead (needs dm-control)
#
# Options (or the environment variables in brackets):
#   --algos LIST            algorithm files, without .py [ALGOS]; default: every *.py beside this script
#   --suite NAME            the tasks [SUITE]: mujoco (default), the FPMD paper's 10 MuJoCo tasks (Pusher-v5 for
#                           Pusher-v4); or dmc-hard, the DeepMind Control Suite's 6 hard tasks of the MFPO paper's
#                           Appendix E.2 (dog-run, dog-trot, dog-stand, dog-walk, humanoid-run, humanoid-walk, as
#                           dm_control/...-v0 ids; pip install dm-control "shimmy[dm-control]"), 1M env steps each
#   --envs LIST             env ids [ENVS], in place of the suite's
#   --seeds LIST            [SEEDS]; default "1 2 3 4 5"
#   --total-timesteps N     one budget for every run [TOTAL_TIMESTEPS]; default: the papers' per-task budgets
#   --workers N             parallel local runs, or the Slurm array's concurrency [WORKERS]; default 1
#   --checkpoint-freq N     each run writes a checkpoint every N env steps, 0 for none [CHECKPOINT_FREQ]; default 50000
#   --out DIR               where runs/, logs/ and interrupted/ go [OUT]; default benchmark_runs
#   --dry-run               print the commands that would run
#   --estimate              print the hours per run, per algorithm and for the selection on --workers workers (with
#                           --slurm: the --time an array task needs), from each (file, env) timed once for --seconds S
#                           (default 30) by tools/throughput.py, or read from OUT/throughput.json; launches nothing
#   --slurm                 write and submit a Slurm job array instead of running locally, with
#                           --partition P --time T --gpus-per-task G --cpus-per-task C --mem M
#
# Every run is evaluated as the FPMD paper's Table 1 was: every 25k env steps, 20 episodes (flags after -- override).
# Runs are named {env}__{algo}__{seed} under OUT/runs ({env}: the id, '/' as '-'). A run that wrote its completion
# marker and holds no checkpoint is finished and skipped (tools/runs.py has that definition); a run with a checkpoint continues from it (--resume);
# one with neither (killed before its first checkpoint) is moved to OUT/interrupted/ and starts again. A failing run writes OUT/logs/{run}.log and the
# others go on. The last line sums it up, and the exit status is non-zero if any run failed. With several GPUs
# visible, each local worker gets its own GPU. Slurm array tasks are submitted with --requeue: a preempted task
# comes back and resumes (the file checkpoints on the SIGTERM that Slurm sends first).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PAPER_ENVS="HalfCheetah-v4 Reacher-v4 Humanoid-v4 Pusher-v5 InvertedPendulum-v4 Ant-v4 Hopper-v4 Swimmer-v4 Walker2d-v4 InvertedDoublePendulum-v4"
DMC_HARD_ENVS="dm_control/dog-run-v0 dm_control/dog-trot-v0 dm_control/dog-stand-v0 dm_control/dog-walk-v0 dm_control/humanoid-run-v0 dm_control/humanoid-walk-v0"
SUITE=${SUITE:-mujoco}
ALGOS=${ALGOS:-$(cd "$ROOT" && ls -- *.py 2>/dev/null | sed 's/\.py$//' | tr '\n' ' ')}
ENVS=${ENVS:-}
SEEDS=${SEEDS:-"1 2 3 4 5"}
TOTAL_TIMESTEPS=${TOTAL_TIMESTEPS:-}
WORKERS=${WORKERS:-1}
CHECKPOINT_FREQ=${CHECKPOINT_FREQ:-50000}
OUT=${OUT:-benchmark_runs}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
DRY_RUN=0 SLURM=0 ESTIMATE=0 ESTIMATE_SECONDS=30 RUN_ONE=()
SBATCH_FLAGS=() EXTRA=()

die() { echo "benchmark.sh: error: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --algos | --envs | --seeds)  # one quoted list, or the words up to the next option
      option=$1 values=()
      shift
      while (($#)) && [[ $1 != --* ]]; do values+=("$1"); shift; done
      ((${#values[@]})) || die "$option needs a list, e.g. $option \"a b\" or $option a b"
      case $option in --algos) ALGOS=${values[*]} ;; --envs) ENVS=${values[*]} ;; --seeds) SEEDS=${values[*]} ;; esac ;;
    --suite) SUITE=$2; shift 2 ;;
    --total-timesteps) TOTAL_TIMESTEPS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --checkpoint-freq) CHECKPOINT_FREQ=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --estimate) ESTIMATE=1; shift ;;
    --seconds) ESTIMATE_SECONDS=$2; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --partition | --time | --gpus-per-task | --cpus-per-task | --mem) SBATCH_FLAGS+=("$1=$2"); shift 2 ;;
    --run-one) RUN_ONE=("$2" "$3" "$4"); shift 4 ;;  # internal: one run, as a Slurm array task does
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option $1 (see the header of benchmark.sh)" ;;
  esac
done
case $SUITE in
  mujoco) ENVS=${ENVS:-$PAPER_ENVS} ;;
  dmc-hard) ENVS=${ENVS:-$DMC_HARD_ENVS} ;;
  *) die "--suite must be mujoco or dmc-hard, got '$SUITE'" ;;
esac
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$WORKERS'"
[[ -z $TOTAL_TIMESTEPS || $TOTAL_TIMESTEPS =~ ^[1-9][0-9]*$ ]] || die "--total-timesteps must be a positive integer"
[[ $CHECKPOINT_FREQ =~ ^[0-9]+$ ]] || die "--checkpoint-freq must be a non-negative integer, got '$CHECKPOINT_FREQ'"
for algo in $ALGOS; do [[ -f $ROOT/$algo.py ]] || die "no algorithm file $ROOT/$algo.py"; done
OUT=$(realpath -m "$OUT")

# The papers' budgets: Humanoid trains the FPMD files for 5M env steps, everything else for 1M.
budget() {  # ALGO ENV
  if [[ -n $TOTAL_TIMESTEPS ]]; then echo "$TOTAL_TIMESTEPS"
  elif [[ $2 == Humanoid-* && $1 == fpmd_* ]]; then echo 5000000
  else echo 1000000; fi
}

run_name() {  # ALGO ENV SEED: {env}__{algo}__{seed}, the env id's '/' as '-' so that every run is one folder deep
  local env=${2//\//-}
  echo "${env}__${1}__${3}"
}

build_command() {  # ALGO ENV SEED: the training command, into the array CMD
  CMD=("$PYTHON" "$ROOT/$1.py" --env-id "$2" --seed "$3" --run-name "$(run_name "$@")" --total-timesteps "$(budget "$1" "$2")")
  # the FPMD paper's evaluation protocol (40 evaluations of 20 episodes per 1M steps; the FPMD files' defaults) for
  # every file: the best of many noisy evaluations is higher than the best of few, so the table compares like with like
  CMD+=(--eval-freq 25000 --eval-episodes 20 --checkpoint-freq "$CHECKPOINT_FREQ")
  [[ $1 == mfpo && $2 == HalfCheetah-* ]] && CMD+=(--no-use-cdq)  # the MFPO paper's one per-task flag
  CMD+=("${EXTRA[@]}")
}

finished_runs() {  # RUN_DIR...: those of them that are finished, one per line (the definition: tools/runs.py)
  "$PYTHON" "$ROOT/tools/runs.py" finished "$@"
}

# One run with the resumability rules. Exit status: 0 trained now, 10 already finished, else failed.
run_one() {  # ALGO ENV SEED
  local algo=$1 env=$2 seed=$3
  local name
  name=$(run_name "$algo" "$env" "$seed")
  local dir=$OUT/runs/$name log=$OUT/logs/$name.log
  if [[ -n $(finished_runs "$dir") ]]; then echo "skip    $name (finished)"; return 10; fi
  mkdir -p "$OUT/logs" "$OUT/interrupted"
  build_command "$algo" "$env" "$seed"
  if [[ -f $dir/checkpoint.pt ]]; then  # an interrupted run with a checkpoint: go on from it
    echo "resume  $name (from its checkpoint)"
    CMD+=(--resume)
    echo "--- resumed $(date)" >>"$log"
  else
    if [[ -e $dir ]]; then  # interrupted before its first checkpoint: keep what it wrote, start it again cleanly
      mv "$dir" "$OUT/interrupted/$name.$(date +%s)"
      [[ -f $log ]] && mv "$log" "$OUT/interrupted/$name.$(date +%s).log"
    fi
    echo "start   $name"
    : >"$log"
  fi
  (cd "$OUT" && exec "${CMD[@]}") >>"$log" 2>&1
  local status=$?
  if ((status == 0)) && [[ -n $(finished_runs "$dir") ]]; then echo "done    $name"; return 0; fi
  echo "FAILED  $name (exit $status; see $log: $(tail -n 1 "$log" 2>/dev/null))"
  return 1
}

if ((${#RUN_ONE[@]})); then
  run_one "${RUN_ONE[@]}"
  status=$?
  ((status == 10)) && exit 0
  exit $status
fi

RUNS=()
for env in $ENVS; do for algo in $ALGOS; do for seed in $SEEDS; do RUNS+=("$algo $env $seed"); done; done; done

print_commands() {  # the command of every run that is not finished, one per line
  local dirs=() finished
  for run in "${RUNS[@]}"; do
    # shellcheck disable=SC2086
    set -- $run
    dirs+=("$OUT/runs/$(run_name "$@")")
  done
  finished=$(finished_runs "${dirs[@]}")
  for run in "${RUNS[@]}"; do
    # shellcheck disable=SC2086
    set -- $run
    grep -qxF "$OUT/runs/$(run_name "$@")" <<<"$finished" && continue
    build_command "$1" "$2" "$3"
    line=$(printf '%q ' "${CMD[@]}")
    echo "${line% }"
  done
}

if ((ESTIMATE)); then
  [[ $ESTIMATE_SECONDS =~ ^[0-9]*\.?[0-9]+$ ]] && [[ ! $ESTIMATE_SECONDS =~ ^0*\.?0*$ ]] \
    || die "--seconds must be a positive number, got '$ESTIMATE_SECONDS'"
  SLURM_FLAG=() && ((SLURM)) && SLURM_FLAG=(--slurm)
  print_commands | "$PYTHON" "$ROOT/tools/throughput.py" --estimate --workers "$WORKERS" --seconds "$ESTIMATE_SECONDS" \
    --table "$OUT/throughput.json" "${SLURM_FLAG[@]}"
  exit
fi

if ((DRY_RUN)) && ((!SLURM)); then
  print_commands
  exit 0
fi

if ((SLURM)); then
  mkdir -p "$OUT/slurm"
  printf '%s\n' "${RUNS[@]}" >"$OUT/slurm/runs.txt"
  script=$OUT/slurm/benchmark.sbatch
  {
    echo "#!/usr/bin/env bash"
    echo "#SBATCH --job-name=flowpolicy-benchmark"
    echo "#SBATCH --array=1-${#RUNS[@]}%$WORKERS"
    echo "#SBATCH --output=$OUT/slurm/%A_%a.out"
    echo "#SBATCH --open-mode=append"
    echo "#SBATCH --requeue"
    for flag in "${SBATCH_FLAGS[@]}"; do echo "#SBATCH $flag"; done
    echo "# one line of runs.txt per array task: the same resumability rules as a local run"
    printf 'export PYTHON=%q TOTAL_TIMESTEPS=%q CHECKPOINT_FREQ=%q\n' "$PYTHON" "$TOTAL_TIMESTEPS" "$CHECKPOINT_FREQ"
    printf 'exec bash %q --out %q --run-one $(sed -n "${SLURM_ARRAY_TASK_ID}p" %q)' "$ROOT/benchmark.sh" "$OUT" "$OUT/slurm/runs.txt"
    ((${#EXTRA[@]})) && printf ' -- %s' "$(printf '%q ' "${EXTRA[@]}")"
    echo
  } >"$script"
  if ((DRY_RUN)); then cat "$script"; exit 0; fi
  command -v sbatch >/dev/null || die "--slurm needs sbatch on the PATH"
  sbatch "$script" || die "sbatch refused $script"
  echo "benchmark: submitted ${#RUNS[@]} runs as one job array ($script); run the same command without --slurm, or tools/summarize.py $OUT/runs, to see the results"
  exit 0
fi

# Local runs, at most WORKERS at a time; with several GPUs, worker w uses GPU w mod #GPUs.
GPUS=()
if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then IFS=, read -r -a GPUS <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null; then mapfile -t GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null); fi
declare -a SLOT_PID=()
trained=0 skipped=0 failed=0
collect() {  # PID: count how a finished run ended
  wait "$1"
  case $? in 0) trained=$((trained + 1)) ;; 10) skipped=$((skipped + 1)) ;; *) failed=$((failed + 1)) ;; esac
}
for run in "${RUNS[@]}"; do
  slot=-1
  while ((slot < 0)); do
    for ((w = 0; w < WORKERS; w++)); do
      pid=${SLOT_PID[w]:-}
      if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        [[ -n $pid ]] && collect "$pid"
        SLOT_PID[w]=""
        slot=$w
        break
      fi
    done
    ((slot < 0)) && sleep 1
  done
  # shellcheck disable=SC2086
  if ((${#GPUS[@]} > 1)); then
    CUDA_VISIBLE_DEVICES=${GPUS[slot % ${#GPUS[@]}]} run_one $run &
  else
    run_one $run &
  fi
  SLOT_PID[slot]=$!
done
for pid in "${SLOT_PID[@]}"; do [[ -n $pid ]] && collect "$pid"; done
echo "benchmark: ${#RUNS[@]} runs: $trained trained, $skipped already finished, $failed failed (results in $OUT/runs)"
((failed == 0))
