"""torch.distributed: single-process defaults against real torch (gloo, world size 1), and
a real 2-worker msrun job on CPU (mccl) against torch semantics.

Run as a script, this file is the msrun worker: ``python test_distributed.py OUT_DIR``.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLLECTIVES = ["all_reduce_sum", "functional_all_reduce", "all_reduce_avg", "all_reduce_max", "all_gather_list", "all_gather_into_tensor",
               "broadcast_from_last", "reduce_scatter_tensor", "functional_all_gather_dim1",
               "functional_reduce_scatter_dim1"]
WORLD = 2


def rank_input(rank: int) -> np.ndarray:
    return np.random.default_rng(rank).standard_normal((4, 3)).astype(np.float32)


def mlp_inputs(rank: int):
    rng = np.random.default_rng(10)
    x, cot = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    w = np.random.default_rng(20 + rank).standard_normal((4, 3)).astype(np.float32)
    return x, w, cot


# ---- single process: no init_process_group on our side -----------------------------------
if __name__ != "__main__":
    import mindspore as ms
    import pytest
    import torch
    import torch.distributed._functional_collectives  # noqa: F401 - torch loads these submodules on request only
    import torch.distributed.nn.functional  # noqa: F401

    import adapters.torch as torch_ms
    from tests.adapters.harness import MODES, check, load_cases, randn

    @pytest.fixture(scope="module")
    def torch_world_of_one():
        """Real torch needs a process group even for one process: gloo over a file store."""
        with tempfile.TemporaryDirectory() as tmp:
            store = torch.distributed.FileStore(os.path.join(tmp, "store"), 1)
            torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
            yield
            torch.distributed.destroy_process_group()

    def test_single_process_defaults():
        dist = torch_ms.distributed
        assert dist.is_available() and not dist.is_initialized()
        assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
        group = dist.new_group([0])
        assert (dist.get_rank(group), dist.get_world_size(group)) == (0, 1)
        with pytest.raises(ValueError, match="ranks"):
            dist.new_group([0, 1])
        with pytest.raises(RuntimeError, match="not been initialized"):
            dist.get_backend()
        dist.barrier()

    # all_gather's list form is PyNative only (test_all_gather_list_is_refused_in_graph_mode)
    SINGLE = [(case, mode) for case in COLLECTIVES + ["tensor_parallel_mlp"] for mode in MODES
              if (case, mode) != ("all_gather_list", "graph")]

    @pytest.mark.parametrize("case,mode", SINGLE)
    def test_single_process_collectives(torch_world_of_one, mode, case):
        inputs = [randn(2, 4, seed=1), randn(4, 3, seed=2)] if case == "tensor_parallel_mlp" else [randn(4, 3)]
        check("distributed", case, inputs, mode=mode, grad=case == "tensor_parallel_mlp",  # c10d ops have no autograd
              api=f"torch.distributed.{case.split('_from')[0]}")

    def test_all_gather_list_is_refused_in_graph_mode():
        cases = load_cases("distributed")[1]
        with pytest.raises(TypeError, match="all_gather_into_tensor"):
            ms.jit(cases.all_gather_list)(ms.Tensor(randn(4, 3)))

    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def test_msrun_two_workers(tmp_path):
        """2 CPU workers under msrun; results are compared with torch's semantics."""
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        cmd = ["msrun", f"--worker_num={WORLD}", f"--local_worker_num={WORLD}", f"--master_port={_free_port()}",
               f"--log_dir={tmp_path / 'logs'}", "--join=True", __file__, str(tmp_path)]
        start = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        logs = "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").glob("worker_*.log")))
        assert proc.returncode == 0, f"msrun failed ({time.time() - start:.0f} s):\n{logs}"

        xs = [rank_input(r) for r in range(WORLD)]
        total = sum(xs)
        for mode in ("pynative", "graph"):
            for rank in range(WORLD):
                got = np.load(tmp_path / f"rank{rank}_{mode}.npz")
                chunk = total.shape[0] // WORLD
                want = {"all_reduce_sum": total, "functional_all_reduce": total, "all_reduce_avg": total / WORLD,
                        "all_reduce_max": np.maximum(*xs), "all_gather_list": np.concatenate(xs),
                        "all_gather_into_tensor": np.concatenate(xs), "broadcast_from_last": xs[-1],
                        "reduce_scatter_tensor": total[rank * chunk:(rank + 1) * chunk],
                        "functional_all_gather_dim1": np.concatenate(xs, 1),
                        "functional_reduce_scatter_dim1": total.reshape(2, 6)[:, rank * 3:(rank + 1) * 3]}
                for case in COLLECTIVES:
                    if mode == "graph" and case == "all_gather_list":
                        continue  # PyNative only (refused in graph mode)
                    np.testing.assert_allclose(got[case], want[case], rtol=1e-6, atol=1e-6,
                                               err_msg=f"{case} rank {rank} {mode}")
                assert got["rank"] == rank and got["world_size"] == WORLD and str(got["backend"]) == "gloo"

                # Megatron row-parallel matmul, reference: real torch on the unsplit weight
                x, w, cot = (torch.tensor(a, requires_grad=True) for a in mlp_inputs(rank))
                ws = [torch.tensor(mlp_inputs(r)[1]) for r in range(WORLD)]
                w_full = sum(ws[:rank] + [w] + ws[rank + 1:])
                out = x @ w_full
                (out * cot.detach()).sum().backward()
                np.testing.assert_allclose(got["mlp_out"], out.detach().numpy(), rtol=1e-5, atol=1e-5)
                # grad of x: torch's CopyToModelParallelRegion all-reduces the per-rank cot @ w_r^T
                grad_x = sum(mlp_inputs(0)[2] @ mlp_inputs(r)[1].T for r in range(WORLD))
                np.testing.assert_allclose(got["mlp_grad_x"], grad_x, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(got["mlp_grad_w"], w.grad.numpy(), rtol=1e-5, atol=1e-5)


# ---- the msrun worker ---------------------------------------------------------------------
def worker(out_dir: str) -> None:
    import mindspore as ms

    ms.set_device("CPU")
    import adapters.torch as torch_ms
    from tests.adapters.harness import load_cases

    dist = torch_ms.distributed
    dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    cases = load_cases("distributed")[1]
    x = ms.Tensor(rank_input(rank))
    mx, mw, mcot = (ms.Tensor(a) for a in mlp_inputs(rank))

    def mlp_loss(x, w, cot):
        return (cases.tensor_parallel_mlp(x, w) * cot).sum()

    for mode in ("pynative", "graph"):
        run = ms.jit if mode == "graph" else (lambda fn: fn)
        results = {case: run(getattr(cases, case))(x).asnumpy() for case in COLLECTIVES
                   if not (mode == "graph" and case == "all_gather_list")}  # PyNative only
        results["mlp_out"] = run(cases.tensor_parallel_mlp)(mx, mw).asnumpy()
        grad_x, grad_w = run(ms.grad(mlp_loss, grad_position=(0, 1)))(mx, mw, mcot)
        results.update(mlp_grad_x=grad_x.asnumpy(), mlp_grad_w=grad_w.asnumpy(), rank=rank,
                       world_size=dist.get_world_size(), backend=dist.get_backend())
        dist.barrier()
        np.savez(os.path.join(out_dir, f"rank{rank}_{mode}.npz"), **results)
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(sys.argv[1])
