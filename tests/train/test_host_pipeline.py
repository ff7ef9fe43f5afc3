"""msmm.train runs MindSpore's host pipeline inline on CPU (no busy-waiting queue threads),
and detects when it was imported too late. Fresh processes: MindSpore reads the setting once."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import json, sys
import numpy as np
if sys.argv[1] == "first":
    import msmm.train
import mindspore
from mindspore import Tensor, ops
mindspore.set_device("CPU")
a = Tensor(np.ones((4, 4), np.float32))
out = float(ops.matmul(a, a).sum().asnumpy())
from msmm.train.host_pipeline import async_queue_threads
print(json.dumps({"threads": async_queue_threads(), "out": out}))
"""


def run(order: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_v="3")
    env.pop("MS_DEV_HOST_BLOCKING_RUN", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, order], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_first_runs_the_host_pipeline_inline():
    result = run("first")
    assert result["threads"] == []
    assert result["out"] == 64.0


def test_an_op_before_the_import_starts_the_queue_threads():
    # the detector Trainer's warning relies on
    result = run("late")
    assert result["threads"] == ["backend_queue", "frontend_queue"]
    assert result["out"] == 64.0
