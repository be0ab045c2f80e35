"""Same seed on CPU: bitwise-identical evaluation returns; another seed: different ones."""

from conftest import read_evaluations, short_run


def eval_returns(algo: str, workdir, seed: int) -> list[float]:
    workdir.mkdir()
    short_run(algo, workdir, "--env-id", "Pendulum-v1", "--seed", str(seed), "--run-name", "run")
    return [row["mean_return"] for row in read_evaluations(workdir / "runs" / "run")]


def test_same_seed_same_returns_other_seed_differs(algo, tmp_path):
    first = eval_returns(algo, tmp_path / "first", seed=1)
    second = eval_returns(algo, tmp_path / "second", seed=1)
    other = eval_returns(algo, tmp_path / "other", seed=2)
    assert first == second
    assert first != other
