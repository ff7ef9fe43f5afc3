"""The pipeline schedules msmm-train runs: every micro-batch's forward and backward once per
virtual stage, in an order the stages can execute against each other (non-blocking sends,
blocking in-order receives) without deadlock, with Megatron's warm-up depths and in-flight
bounds; the chunk placement of a rank follows mm-convert's layer order."""
from __future__ import annotations

import pytest

from msmm.checkpoint.parallel import ParallelConfig
from msmm.train.pipeline.schedule import interleaved, one_f_one_b, outgoing, schedule, simulate
from msmm.train.pipeline.stage import rank_chunks

LAYOUTS = [(pp, vpp, m) for pp in (2, 3, 4, 8) for vpp in (1, 2, 3) for m in (pp, 2 * pp, 3 * pp)]
LAYOUTS += [(pp, 1, m) for pp in (2, 4) for m in (1, 3, 5, 7)]  # 1F1B takes any number of micro-batches


@pytest.mark.parametrize("pp, vpp, micro", LAYOUTS)
def test_schedule_runs_every_pass_once_without_deadlock(pp, vpp, micro):
    done = simulate(pp, vpp, micro)
    passes = [(a.kind, a.chunk * pp + r, a.micro) for r, a in done]
    assert len(passes) == len(set(passes)) == 2 * pp * vpp * micro
    # a backward runs after the backward of the next virtual stage for that micro-batch
    position = {p: i for i, p in enumerate(passes)}
    for kind, v, m in passes:
        if kind == "B" and v < pp * vpp - 1:
            assert position[("B", v + 1, m)] < position[("B", v, m)]
        if kind == "F" and v > 0:
            assert position[("F", v - 1, m)] < position[("F", v, m)]


@pytest.mark.parametrize("pp, micro", [(2, 4), (4, 8), (4, 2)])
def test_one_f_one_b_warm_up_and_in_flight(pp, micro):
    for rank in range(pp):
        actions = one_f_one_b(pp, rank, micro)
        warm = next(i for i, a in enumerate(actions) if a.kind == "B")
        assert warm == min(pp - rank - 1, micro) + (1 if micro > pp - rank - 1 else 0)
        in_flight = peak = 0
        for a in actions:
            in_flight += 1 if a.kind == "F" else -1
            peak = max(peak, in_flight)
        assert peak == min(pp - rank, micro)  # what 1F1B bounds the stored activations by
        # backwards in micro-batch order: gradients accumulate in the order one worker sums them
        assert [a.micro for a in actions if a.kind == "B"] == list(range(micro))


def test_interleaved_order_and_its_micro_batch_condition():
    pp, vpp, micro = 2, 2, 4
    forwards = [(a.chunk, a.micro) for a in interleaved(pp, vpp, 0, micro) if a.kind == "F"]
    assert forwards == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    with pytest.raises(ValueError, match="multiple of --pipeline-model-parallel-size 2"):
        interleaved(2, 2, 0, 3)
    assert schedule(2, 1, 0, 3) == one_f_one_b(2, 0, 3)


def test_each_rank_knows_what_the_others_send_it():
    pp, vpp, micro = 4, 2, 8
    sent = {(src, dst): msgs for src in range(pp)
            for dst, msgs in outgoing(schedule(pp, vpp, src, micro), pp, vpp, src).items()}
    for (src, dst), msgs in sent.items():
        assert dst != src
        assert all(m.source % pp == src for m in msgs)
    # every virtual-stage boundary carries each micro-batch once each way
    assert sum(len(m) for m in sent.values()) == 2 * (pp * vpp - 1) * micro


def test_rank_chunks_follow_the_model_order():
    parallel = ParallelConfig(1, [[0, 2, 2, 1], [1, 2, 2, 2]], [[4, 0, 0, 0], [0, 0, 0, 0]]).resolved(12, 4)
    chunks = [rank_chunks(parallel, r) for r in range(4)]
    assert [c.layers for c in chunks[0]] == [(), (5,)]
    assert [c.layers for c in chunks[1]] == [(0, 1), (6, 7)]
    assert [c.layers for c in chunks[3]] == [(4,), (10, 11)]
    assert chunks[0][0].first and not any(c.first for r in chunks[1:] for c in r)
    assert chunks[3][1].last and sum(c.last for r in chunks for c in r) == 1


def test_simulation_catches_a_schedule_that_would_hang(monkeypatch):
    """All of a rank's backwards before its forwards: it waits for gradients that need its own
    outputs."""
    from msmm.train.pipeline import schedule as module

    def gpipe_backwards_first(pp, vpp, rank, micro):
        actions = one_f_one_b(pp, rank, micro)
        return sorted(actions, key=lambda a: a.kind) if rank == 0 else actions  # "B" < "F"

    monkeypatch.setattr(module, "schedule", gpipe_backwards_first)
    with pytest.raises(RuntimeError, match="deadlocks|before its forward"):
        module.simulate(2, 1, 4)
