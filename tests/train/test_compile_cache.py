"""MSMM_COMPILE_CACHE (msmm.runtime.jit): a second process loads the first one's compiled
graphs (same losses, lower peak RSS), and a configuration whose graphs differ with the same
shapes never loads them (MindSpore's own cache would: it checks neither inputs nor constants)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from msmm import compile_cache

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_cache_worker.py")
LOADED = "Use the compilation cache"  # MindSpore's warning for each graph it loads


def run(eps: float, cache_dir=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != compile_cache.COMPILE_CACHE_ENV}
    env.update(GLOG_v="2", OMP_NUM_THREADS="1")  # 2: MindSpore's warnings, which say when a graph is loaded
    if cache_dir is not None:
        env[compile_cache.COMPILE_CACHE_ENV] = str(cache_dir)
    proc = subprocess.run([sys.executable, WORKER, str(eps)], env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    result["loaded"] = proc.stderr.count(LOADED)
    return result


@pytest.mark.slow
def test_second_run_loads_the_graphs_and_another_config_does_not(tmp_path):
    first = run(1e-6, tmp_path)
    assert first["loaded"] == 0 and not first["cache"]["off"]
    graphs = first["cache"]["graphs"]
    assert graphs >= 3 and len(first["cache"]["manifest"]) == graphs  # sync_master and the step's graphs

    second = run(1e-6, tmp_path)
    assert second["loaded"] == graphs and not second["cache"]["off"]
    assert second["losses"] == first["losses"]
    assert second["peak_rss_mb"] < first["peak_rss_mb"] - 100  # no frontend compilation (720 -> ~495 MB)

    # same shapes, another constant in the graphs: its own directory, nothing loaded
    other = run(1e-2, tmp_path)
    assert other["loaded"] == 0 and other["cache"]["dir"] != first["cache"]["dir"]
    reference = run(1e-2)
    assert reference["cache"] is None
    assert other["losses"] == reference["losses"] != first["losses"]


def test_compile_key_follows_constants_shapes_and_sources():
    import mindspore
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    class Net(nn.Cell):
        def __init__(self, width: int, eps: float, table: np.ndarray):
            super().__init__()
            self.weight = Parameter(Tensor(np.ones((width,), np.float32)), name="weight")
            self.eps = eps
            self.table = Tensor(table)

        def construct(self, x):
            return x * self.weight + self.eps + self.table

    def key(net, x):
        return compile_cache.compile_key(net.construct, (x,), {})

    table = np.arange(4, dtype=np.float32)
    x = Tensor(np.zeros((2, 4), np.float32))
    base = key(Net(4, 1e-6, table), x)
    assert key(Net(4, 1e-6, table.copy()), x) == base  # another object alike: the same graph
    assert key(Net(4, 1e-6, table), Tensor(np.ones((2, 4), np.float32))) == base  # input values: not constants
    assert key(Net(4, 1e-6, table), Tensor(np.zeros((3, 4), np.float32))) != base  # input shape
    assert key(Net(4, 1e-6, table), x.astype(mindspore.float16)) != base  # input dtype
    assert key(Net(4, 1e-2, table), x) != base  # a scalar the graph captures
    assert key(Net(4, 1e-6, table + 1), x) != base  # a tensor constant's value
    assert key(Net(8, 1e-6, table), x) != base  # a parameter's shape


def test_compile_key_sees_through_mindspore_wrappers():
    """``runtime.jit(mindspore.value_and_grad(loss, ...))`` (compiled_value_and_grad): the key
    follows the closure's model, not only the wrapper's name."""
    import mindspore
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    class Scale(nn.Cell):
        def __init__(self, value: float):
            super().__init__()
            self.weight = Parameter(Tensor(np.ones((4,), np.float32)), name="weight")
            self.value = value

        def construct(self, x):
            return (x * self.weight * self.value).sum()

    def key(value):
        net = Scale(value)
        step = mindspore.value_and_grad(lambda x: net(x), None, net.trainable_params())
        return compile_cache.compile_key(step, (Tensor(np.ones((2, 4), np.float32)),), {})

    assert key(2.0) == key(2.0)
    assert key(2.0) != key(3.0)
