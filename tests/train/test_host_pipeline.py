"""``msmm.runtime.start()`` runs MindSpore's host pipeline inline on CPU (no busy-waiting queue
threads), and ``async_queue_threads`` detects when it came too late. Fresh processes: MindSpore
reads the setting once. Importing msmm starts nothing; ``start()`` installs the import hook."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import json, sys
import numpy as np
from msmm import runtime
if sys.argv[1] == "first":
    runtime.start("CPU", convert_models=False)
import mindspore
from mindspore import Tensor, ops
a = Tensor(np.ones((4, 4), np.float32))
out = float(ops.matmul(a, a).sum().asnumpy())
runtime.start("CPU", convert_models=False)  # a no-op after the first, too late after an op
print(json.dumps({"threads": runtime.async_queue_threads(), "out": out}))
"""


def run(order: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_v="3")
    env.pop("MS_DEV_HOST_BLOCKING_RUN", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, order], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_start_first_runs_the_host_pipeline_inline():
    result = run("first")
    assert result["threads"] == []
    assert result["out"] == 64.0


def test_an_op_before_start_starts_the_queue_threads():
    # the detector Trainer's warning relies on
    result = run("late")
    assert result["threads"] == ["backend_queue", "frontend_queue"]
    assert result["out"] == 64.0


HOOK_SCRIPT = """
import json
import msmm, msmm.train
from auto_convert import hook
before = hook.installed()
from msmm import runtime
device = runtime.start()
again = runtime.start("CPU")
try:
    runtime.start("Ascend")
    switch = None
except RuntimeError as err:
    switch = str(err)
import msmm.models.text.decoder as decoder
print(json.dumps({"before": before is not None, "packages": sorted(hook.installed().packages), "device": device,
                  "again": again, "switch": switch, "torch": decoder.torch.__name__}))
"""


def test_importing_msmm_starts_nothing_and_start_installs_the_hook(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_v="3", MSMM_AUTO_CONVERT="1", MSMM_AUTO_CONVERT_PACKAGES="mypkg",
               MSMM_AUTO_CONVERT_CACHE=str(tmp_path), MSMM_DEVICE="CPU")
    proc = subprocess.run([sys.executable, "-c", HOOK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] is False  # `source auto_convert.sh mm` + import msmm: no hidden hook
    assert result["packages"] == ["msmm.models", "mypkg"]  # start(): msmm.models and MSMM_AUTO_CONVERT_PACKAGES
    assert result["device"] == result["again"] == "CPU"
    assert "already started on CPU" in result["switch"]
    assert result["torch"] == "adapters.torch"
