"""Each file trains for a few hundred steps on a MuJoCo task: updates, evaluations and --save-model all happen."""

import torch
from conftest import TINY_ARGS, algorithm_files, load_algo, read_evaluations, short_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_short_run_logs_evaluates_and_saves(algo, tmp_path):
    result = short_run(algo, tmp_path, "--env-id", "Hopper-v4", "--run-name", "smoke", "--save-model")
    run_dir = tmp_path / "runs" / "smoke"

    rows = read_evaluations(run_dir)
    assert [row["global_step"] for row in rows] == [200, 400]
    assert all(row["nfe"] >= 1 and row["wall_time_s"] > 0 for row in rows)
    assert b"\r" not in (run_dir / "evaluations.csv").read_bytes()  # plain "\n" lines, so awk and tail read it too
    assert "global_step 400/400" in result.stdout  # the progress line

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "eval/episodic_return" in tags and "charts/SPS" in tags
    assert any(tag.startswith("losses/") for tag in tags), tags  # the update code ran and was logged

    checkpoint = torch.load(run_dir / f"{algo}.pt", weights_only=True)
    module = load_algo(algo)
    args = module.Args(**checkpoint["args"])
    assert args.env_id == "Hopper-v4" and args.exp_name == algo
    networks = module.make_networks(11, 3, torch.ones(3), args)  # Hopper-v4: 11-d observations, 3-d actions
    assert set(networks) == set(checkpoint) - {"args"}
    for name, network in networks.items():
        network.load_state_dict(checkpoint[name])  # strict: every saved tensor fits the file's own networks
    inference_policy, nfe = module.make_inference_policy(networks, 3, args)
    with torch.no_grad():
        actions = inference_policy(torch.zeros(2, 11))
    assert actions.shape == (2, 3) and actions.abs().max() <= 1.0 and nfe == rows[-1]["nfe"]


def test_every_algorithm_file_is_one_the_suite_tests():
    """The algorithm files on disk, found as benchmark.sh finds them, are exactly the ones the suite knows: a missing
    or renamed file fails here instead of being skipped, and a new one must get its tiny flags in conftest.py."""
    assert algorithm_files() == sorted(TINY_ARGS)
