"""The flow files' networks take a big batch on a CPU a block of rows at a time (in_row_blocks): the same outputs and
the same gradients as one call through the same layers, for 2-d batches and for a sampler's (states, particles, .)."""

import pytest
import torch
from conftest import load_algo

FLOW_FILES = ["fpmd_r", "fpmd_m", "mfpo"]


@pytest.mark.parametrize("algo", FLOW_FILES)
@pytest.mark.parametrize("shape", [(2500, 30), (100, 32, 30), (7, 30)])  # blocks and a short last one; 3-d; one call
def test_row_blocks_equal_one_call(algo, shape):
    module = load_algo(algo)
    torch.manual_seed(0)
    network = module.mlp(30, 5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # float64: the sums' order is not what is tested
    network = network.double()
    blocked = network(x)
    whole = torch.nn.Sequential.forward(network, x)  # the layers in one call
    assert blocked.shape == whole.shape == (*shape[:-1], 5)
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(whole)
    grads_blocked = torch.autograd.grad((blocked * weights).sum(), [x, *network.parameters()])
    grads_whole = torch.autograd.grad((whole * weights).sum(), [x, *network.parameters()])
    for a, b in zip(grads_blocked, grads_whole):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algo", FLOW_FILES)
def test_a_big_batch_is_split_into_blocks(algo, monkeypatch):
    """What makes the blocks: the layers see ROW_BLOCK rows at most, and every row once."""
    module = load_algo(algo)
    network = module.mlp(30, 5)
    seen = []
    network[0].register_forward_hook(lambda layer, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        network(torch.randn(3 * module.ROW_BLOCK + 10, 30))
    assert seen == [module.ROW_BLOCK] * 3 + [10]


@pytest.mark.parametrize("algo", FLOW_FILES)
def test_compiled_code_on_a_cpu_traces_the_blocks(algo):
    """Under torch.compile on a CPU the loop over the blocks is traced into the graph: every Linear of it takes at most
    ROW_BLOCK rows (inductor then fuses each block's elementwise work, which the blocks keep in cache), and the compiled
    network computes what the eager one does."""
    module = load_algo(algo)
    torch.manual_seed(0)
    network = module.mlp(30, 5)
    graphs = []

    def recording_backend(graph_module, example_inputs):  # keeps the traced graph, runs it as traced
        graphs.append(graph_module)
        return graph_module.forward

    x = torch.randn(2 * module.ROW_BLOCK + 10, 30)
    with torch.no_grad():
        compiled = torch.compile(network, backend=recording_backend, fullgraph=True)(x)
        torch.testing.assert_close(compiled, network(x))
    (graph,) = graphs
    linear_rows = [node.args[0].meta["example_value"].shape[0] for node in graph.graph.nodes if node.target is torch._C._nn.linear]
    assert linear_rows == [module.ROW_BLOCK] * 8 + [10] * 4  # 3 hidden layers and the output layer, per block
