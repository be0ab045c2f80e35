"""The README documents every flag of every file, and its test command is the one CI runs."""

import dataclasses
import re

from conftest import ROOT, load_algo

README = (ROOT / "README.md").read_text()


def test_every_flag_of_the_file_is_in_the_readme(algo):
    module = load_algo(algo)
    missing = [f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(module.Args)]
    missing = [flag for flag in missing if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", README)]  # the whole token
    assert not missing, f"README.md does not document {algo}'s {missing}"


def test_readme_test_command_is_what_ci_runs():
    command = "python -m pytest -q tests"
    assert command in README and command in (ROOT / ".ci" / "run").read_text()
