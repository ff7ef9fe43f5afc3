"""The tiny InternVL and LLaVA-1.5 examples end to end through msrun (1 worker): assets
generated in the seeds' data formats, model.json parsed and frozen per section, the
data pipeline's pixel_values / image_flags through the compiled step, checkpoints."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from test_msrun import REPO, _free_port, records

# script, the sections model.json freezes, the sections it trains
EXAMPLES = {
    "internvl": ("examples/internvl/finetune_internvl_tiny_cpu.sh", ("vision_tower",),
                 ("multi_modal_projector", "language_model")),
    "llava": ("examples/llava/pretrain_llava_tiny_cpu.sh", ("vision_tower", "language_model"),
              ("multi_modal_projector",)),
}


def run_script(script: str, tmp: str) -> str:
    save = os.path.join(tmp, "save")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", NPUS_PER_NODE="1",
               MASTER_PORT=str(_free_port()), TINY_DIR=os.path.join(tmp, "assets"), SAVE_PATH=save, TRAIN_ITERS="6",
               GLOBAL_BATCH="4")
    proc = subprocess.run(["bash", os.path.join(REPO, script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    log_dir = os.path.join(save, "msrun_log")
    logs = "".join(open(os.path.join(log_dir, f)).read()[-3000:] for f in sorted(os.listdir(log_dir))) \
        if os.path.isdir(log_dir) else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    return save


@pytest.mark.parametrize("family", sorted(EXAMPLES))
def test_tiny_example_trains_with_model_json_freezing(family, tmp_path):
    script, frozen, trained = EXAMPLES[family]
    save = run_script(script, str(tmp_path))
    log = records(save)
    print(f"\n{family} losses:", [round(r["loss"], 4) for r in log])
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s_per_device"] > 0 for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read() == "6"

    early = load_file(os.path.join(save, "iter_0000003", "mp_rank_00", "model_optim_rng.safetensors"))
    late = load_file(os.path.join(save, "iter_0000006", "mp_rank_00", "model_optim_rng.safetensors"))
    for section in frozen + trained:
        names = [k for k in late if k.startswith(f"model.{section}.")]
        assert names, section
        changed = [not np.array_equal(early[k], late[k]) for k in names]
        has_state = [f"optimizer.exp_avg.{k[len('model.'):]}" in late for k in names]
        if section in frozen:
            assert not any(changed) and not any(has_state), section
        else:
            assert all(changed) and all(has_state), section
