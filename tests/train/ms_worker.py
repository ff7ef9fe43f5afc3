"""MindSpore side of the training tests, run in a fresh process (msmm.models is imported
through the auto_convert hook, which a pytest process that imported them under real torch
cannot do): ``python ms_worker.py SPEC.json``.

SPEC: family, checkpoint (HF dir), batches (npz of micro-batches b0_key...), config
(TrainConfig fields), freeze (name prefixes), load (optional --load dir), out (dir);
optional validation: {batches (npz as above), interval, iters} (validation loss, logged
to config.log_dir's validation_log.jsonl).
Writes OUT/result.json (per-step records, trainable names, data position) and
OUT/final.safetensors (the weights after training).
"""
import json
import os
import sys

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from msmm import runtime  # noqa: E402

runtime.start("CPU")  # before any MindSpore op and before msmm.models is imported

import mindspore  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402


class ListSource:
    """A fixed list of micro-batches as one epoch, with a saveable position."""

    def __init__(self, batches):
        self.batches, self.epoch, self.batch_index = batches, 0, 0

    def __iter__(self):
        for i in range(self.batch_index, len(self.batches)):
            self.batch_index = i + 1
            yield self.batches[i]
        self.epoch, self.batch_index = self.epoch + 1, 0

    def state_dict(self):
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state):
        self.epoch, self.batch_index = state["epoch"], state["batch_index"]


def build_model(family, checkpoint):
    from msmm.models import from_pretrained

    return from_pretrained(checkpoint)


def load_batches(path):
    arrays = np.load(path)
    count = len({k.split("_", 1)[0] for k in arrays.files})
    return [{k.split("_", 1)[1]: arrays[k] for k in arrays.files if k.split("_", 1)[0] == f"b{i}"} for i in range(count)]


def main(spec_path):
    from msmm.train.evaluation import Evaluator
    from msmm.train.trainer import TrainConfig, Trainer

    with open(spec_path) as f:
        spec = json.load(f)
    model = build_model(spec["family"], spec["checkpoint"])
    for name, p in model.named_parameters():
        if any(name.startswith(prefix) for prefix in spec.get("freeze", [])):
            p.requires_grad = False
    source = ListSource(load_batches(spec["batches"]))
    validation = spec.get("validation")
    evaluator = None if validation is None else \
        Evaluator(ListSource(load_batches(validation["batches"])), validation["interval"], validation["iters"])
    trainer = Trainer(model, TrainConfig(**spec["config"]), source, evaluator=evaluator)
    if spec.get("load"):
        trainer.load(spec["load"])
    history = trainer.train()
    os.makedirs(spec["out"], exist_ok=True)
    save_file({n: p.asnumpy() for n, p in model.state_dict().items()}, os.path.join(spec["out"], "final.safetensors"))
    with open(os.path.join(spec["out"], "result.json"), "w") as f:
        json.dump({"history": history, "trainable": trainer.optimizer.names, "start_iteration": trainer.iteration - len(history),
                   "data": source.state_dict()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
