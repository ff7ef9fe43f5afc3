"""Worker of test_compile_cache.py: three training steps of the benchmark's tiny Qwen2-VL
(``rms_norm_eps`` from argv) in a fresh process, honouring MSMM_COMPILE_CACHE; prints the
losses, the peak RSS and what the compile cache did."""
from __future__ import annotations

import json
import os
import resource
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]


def main() -> None:
    eps = float(sys.argv[1])
    from msmm import compile_cache, runtime

    runtime.start("CPU")
    import mindspore
    import train_step as bench
    from msmm.models.qwen2_vl import Qwen2VL, Qwen2VLConfig
    from msmm.train.trainer import TrainConfig, Trainer

    mindspore.set_context(runtime_num_threads=1)
    mindspore.set_seed(0)
    config = bench.hf_config("tiny")
    config["text_config"]["rms_norm_eps"] = eps
    model = Qwen2VL(Qwen2VLConfig.from_hf(config))
    batch = bench.make_batch("tiny")

    size = bench.CONFIGS["tiny"]["batch"]
    trainer = Trainer(model, TrainConfig(train_iters=3, global_batch_size=size, micro_batch_size=size, lr=1e-3,
                                         log_interval=10**9), bench.SameBatch(batch))
    losses = [trainer.train_step()["loss"] for _ in range(3)]
    cache = compile_cache._cache
    print("RESULT " + json.dumps({
        "losses": losses, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cache": None if cache is None else {"dir": cache.dir, "graphs": cache.index, "off": cache.off,
                                             "manifest": cache.manifest}}), flush=True)


if __name__ == "__main__":
    main()
