"""Training logs: one line per ``--log-interval`` on stdout, the same record in
``<log_dir>/train_log.jsonl``, TensorBoard scalars (tensorboardX) in ``<log_dir>/tensorboard``,
and ``<log_dir>/loss_curve.png`` at the end; validation losses on stdout, in
``<log_dir>/validation_log.jsonl`` and TensorBoard. Only rank 0 writes."""
from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import Dict, List, Optional


VALIDATION_LOG = "validation_log.jsonl"


def trim_jsonl(path: str, iteration: int) -> int:
    """Drop the records of iterations after ``iteration`` from the JSONL file ``path`` (a torn
    last line of a killed run goes too), rewriting it atomically (temporary file + rename).
    Returns how many records were dropped."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines(keepends=True)
    kept, dropped = [], 0
    for line in lines:
        if not line.endswith("\n"):
            continue  # torn write
        try:
            logged = json.loads(line).get("iteration")
        except (ValueError, AttributeError):
            logged = None
        if isinstance(logged, int) and logged > iteration:
            dropped += 1
        else:
            kept.append(line)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return dropped


def peak_memory_mb() -> float:
    """Peak resident memory of this process (ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TrainLogger:
    def __init__(self, log_dir: Optional[str], enabled: bool = True, log_tps: bool = False) -> None:
        self.enabled, self.log_tps, self.log_dir = enabled, log_tps, log_dir
        self.records: List[Dict[str, float]] = []
        self._jsonl = self._tb = None
        if enabled and log_dir:
            os.makedirs(log_dir, exist_ok=True)
            self._jsonl = open(os.path.join(log_dir, "train_log.jsonl"), "a")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(log_dir, "tensorboard"))

    def resume_at(self, iteration: int) -> int:
        """A run resumed at ``iteration``: drop the records of later iterations from
        ``train_log.jsonl`` and ``validation_log.jsonl`` (the interrupted run logged them, this
        one logs them again; ``trim_jsonl``). TensorBoard hides the later events
        (``purge_step``). Returns how many train records were dropped."""
        if not self._jsonl:
            return 0
        path = self._jsonl.name
        self._jsonl.close()
        dropped = trim_jsonl(path, iteration)
        validation = os.path.join(self.log_dir, VALIDATION_LOG)
        if os.path.exists(validation):
            trim_jsonl(validation, iteration)
        self._jsonl = open(path, "a")
        if self._tb:
            from tensorboardX import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(os.path.join(self.log_dir, "tensorboard"), purge_step=iteration + 1)
        return dropped

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        if self.enabled:
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def log(self, iteration: int, train_iters: int, record: Dict[str, float], peak_mb: float) -> None:
        if not self.enabled:
            return
        t = record["step_time"]
        entry = {
            "iteration": iteration, "loss": record["loss"], "lr": record["lr"], "grad_norm": record["grad_norm"],
            "step_time_s": t, "samples_per_s": record["samples"] / t, "peak_memory_mb": peak_mb,
            "skipped": record["skipped"],
        }
        if self.log_tps:
            entry["tokens_per_s_per_device"] = record["tokens"] / t
        self.records.append(entry)
        line = (f" iteration {iteration:8d}/{train_iters:8d} | elapsed time per iteration (ms): {t * 1000:.1f} | "
                f"learning rate: {record['lr']:.6E} | lm loss: {record['loss']:.6E} | grad norm: {record['grad_norm']:.4f} | "
                f"samples per second: {entry['samples_per_s']:.2f} | ")
        if self.log_tps:
            line += f"tokens per second per device: {entry['tokens_per_s_per_device']:.1f} | "
        line += f"peak memory (MB): {peak_mb:.0f}" + (" | skipped" if record["skipped"] else "")
        print(line, flush=True)
        if self._jsonl:
            self._jsonl.write(json.dumps(entry) + "\n")
            self._jsonl.flush()
        if self._tb:
            for key in ("loss", "lr", "grad_norm", "samples_per_s", "peak_memory_mb", "tokens_per_s_per_device"):
                if key in entry:
                    self._tb.add_scalar(f"train/{key}", entry[key], iteration)
            self._tb.flush()

    def validation(self, iteration: int, prefix: str, loss: float) -> None:
        """A validation loss, as Megatron prints it (``validation loss at iteration N | lm loss
        value: ... | lm loss PPL: ... |`` between dashed lines), in ``validation_log.jsonl`` and as
        TensorBoard ``validation/loss`` and ``validation/ppl``."""
        if not self.enabled:
            return
        ppl = math.exp(min(20.0, loss))
        line = f" validation loss at {prefix} | lm loss value: {loss:.6E} | lm loss PPL: {ppl:.6E} | "
        print("-" * (len(line) + 1), line, "-" * (len(line) + 1), sep="\n", flush=True)
        if self.log_dir:
            with open(os.path.join(self.log_dir, VALIDATION_LOG), "a") as f:
                f.write(json.dumps({"iteration": iteration, "validation_loss": loss, "validation_ppl": ppl}) + "\n")
        if self._tb:
            self._tb.add_scalar("validation/loss", loss, iteration)
            self._tb.add_scalar("validation/ppl", ppl, iteration)
            self._tb.flush()

    def finish(self) -> None:
        if not self.enabled:
            return
        if self.log_tps and self.records:
            mean = sum(r["tokens_per_s_per_device"] for r in self.records) / len(self.records)
            print(f"average tokens per second per device: {mean:.1f}", flush=True)
        if self._jsonl:
            self._jsonl.close()
            self._jsonl = None
        if self._tb:
            self._tb.close()
            self._tb = None
        if self.log_dir and self.records:
            self.plot(os.path.join(self.log_dir, "loss_curve.png"))

    def plot(self, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["iteration"] for r in self.records], [r["loss"] for r in self.records], marker=".")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
