"""The README documents every flag of every file, its test command is the one CI runs, and its recipe for AMD CPUs
builds and takes effect."""

import ctypes
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

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


LIBTORCH_CPU = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
NUMBERS = """
import sys, torch
torch.manual_seed(0)
x, w = torch.randn(1024, 256), torch.randn(256, 101)
preloaded = "libmkl_intel_path.so" in open("/proc/self/maps").read()
torch.save({"mm": x @ w, "exp": torch.exp(x), "preloaded": preloaded}, sys.argv[1])
"""


@pytest.mark.skipif(not (torch.backends.mkl.is_available() and os.path.exists(LIBTORCH_CPU)), reason="PyTorch without MKL")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="the README's recipe builds with gcc")
def test_the_readmes_mkl_library_builds_and_replaces_a_function_pytorch_exports(tmp_path):
    """The recipe's lines, run as they are, build the library and preload it; the function it defines is one that the
    installed PyTorch exports (looked up by name at run time, so the preloaded one takes its place); and PyTorch's
    matmul and exp give the same numbers under it, to float32 rounding."""
    recipe = re.search(r"```bash\n(echo 'int mkl_serv_intel_cpu_true.*?)```", README, re.S)
    assert recipe, "README.md lost its recipe for AMD CPUs"
    assert hasattr(ctypes.CDLL(LIBTORCH_CPU), "mkl_serv_intel_cpu_true"), "the installed PyTorch does not export the function"
    (tmp_path / "same_numbers.py").write_text(NUMBERS)
    environment = {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}
    for preamble, out in (("", "plain.pt"), (recipe[1], "preloaded.pt")):
        script = f"{preamble}\n{shlex.quote(sys.executable)} same_numbers.py {out}\n"
        result = subprocess.run(["bash", "-euc", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    plain, preloaded = (torch.load(tmp_path / out, weights_only=True) for out in ("plain.pt", "preloaded.pt"))
    assert preloaded["preloaded"] and not plain["preloaded"]
    torch.testing.assert_close(preloaded["exp"], plain["exp"], rtol=1e-6, atol=0)
    # sums of 256 products of standard normals (about 16 in size): another order of the additions moves them by 1e-5
    torch.testing.assert_close(preloaded["mm"], plain["mm"], rtol=1e-5, atol=1e-4)
