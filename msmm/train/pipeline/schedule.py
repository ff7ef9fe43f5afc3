"""Pipeline schedules: what each stage does, in order, in one optimizer step.

A schedule is a list of :class:`Action` per pipeline rank: the forward or backward pass of one
micro-batch through one model chunk. The messages follow from it: a forward of virtual stage
``v`` (chunk ``c`` on rank ``r``: ``v = c * pp + r``) receives its input from virtual stage
``v - 1`` and sends its output to ``v + 1``; a backward receives the gradient of its output from
``v + 1`` and sends the gradient of its input to ``v - 1``.

* :func:`one_f_one_b` (Megatron's non-interleaved schedule): rank ``r`` runs ``pp - r - 1``
  warm-up forwards, then alternates one forward and one backward, then drains the backwards;
  at most ``pp - r`` micro-batches are in flight on a rank.
* :func:`interleaved` (Megatron's interleaved schedule, ``vpp`` chunks per rank): forwards
  walk the chunks in groups of ``pp`` micro-batches (chunk 0 of micro-batches 0..pp-1, chunk 1
  of the same, ..., then the next group); backwards walk the chunks in reverse; the warm-up is
  ``(pp - r - 1) * 2 + (vpp - 1) * pp`` forwards. It needs the number of micro-batches to be a
  multiple of ``pp``.

:func:`simulate` runs all ranks' lists against each other with sends that never block and
receives that do (as the runtime's point-to-point messages behave) and returns the order the
actions complete in; it raises if the schedule would deadlock or computes a backward before
its forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Action:
    kind: str  # "F" forward or "B" backward
    chunk: int  # the model chunk on this rank (virtual pipeline stage = chunk * pp + rank)
    micro: int  # the micro-batch


@dataclass(frozen=True)
class Message:
    """One point-to-point transfer: the output of a forward (``kind`` "F") or the input
    gradient of a backward ("B") of ``micro`` at virtual stage ``source``."""

    kind: str
    source: int  # virtual stage that sends
    micro: int


def one_f_one_b(pp: int, rank: int, micro_batches: int) -> List[Action]:
    """Rank ``rank``'s actions under the non-interleaved 1F1B schedule."""
    warmup = min(pp - rank - 1, micro_batches)
    actions = [Action("F", 0, m) for m in range(warmup)]
    backward = 0
    for m in range(warmup, micro_batches):
        actions.append(Action("F", 0, m))
        actions.append(Action("B", 0, backward))
        backward += 1
    actions.extend(Action("B", 0, m) for m in range(backward, micro_batches))
    return actions


def interleaved(pp: int, vpp: int, rank: int, micro_batches: int) -> List[Action]:
    """Rank ``rank``'s actions under the interleaved 1F1B schedule with ``vpp`` chunks."""
    if micro_batches % pp:
        raise ValueError(f"the interleaved schedule needs the micro-batches per step ({micro_batches}) to be a "
                         f"multiple of --pipeline-model-parallel-size {pp}")
    total = micro_batches * vpp

    def slot(k: int, forward: bool) -> Tuple[int, int]:
        group, within = divmod(k, pp * vpp)
        chunk = within // pp
        return (chunk if forward else vpp - 1 - chunk), group * pp + within % pp

    warmup = min((pp - rank - 1) * 2 + (vpp - 1) * pp, total)
    actions = [Action("F", *slot(k, True)) for k in range(warmup)]
    backward = 0
    for k in range(warmup, total):
        actions.append(Action("F", *slot(k, True)))
        actions.append(Action("B", *slot(backward, False)))
        backward += 1
    actions.extend(Action("B", *slot(k, False)) for k in range(backward, total))
    return actions


def schedule(pp: int, vpp: int, rank: int, micro_batches: int) -> List[Action]:
    """The schedule msmm-train runs: 1F1B, interleaved with more than one chunk per rank."""
    return one_f_one_b(pp, rank, micro_batches) if vpp == 1 else interleaved(pp, vpp, rank, micro_batches)


def receives(action: Action, pp: int, vpp: int, rank: int) -> Optional[Message]:
    """The message ``action`` waits for (None at the first / last virtual stage)."""
    v = action.chunk * pp + rank
    if action.kind == "F":
        return Message("F", v - 1, action.micro) if v > 0 else None
    return Message("B", v + 1, action.micro) if v < pp * vpp - 1 else None


def sends(action: Action, pp: int, vpp: int, rank: int) -> Optional[Tuple[int, Message]]:
    """(destination rank, message) that ``action`` sends when done (None at the ends)."""
    v = action.chunk * pp + rank
    if action.kind == "F" and v < pp * vpp - 1:
        return (v + 1) % pp, Message("F", v, action.micro)
    if action.kind == "B" and v > 0:
        return (v - 1) % pp, Message("B", v, action.micro)
    return None


def outgoing(actions: List[Action], pp: int, vpp: int, rank: int) -> Dict[int, List[Message]]:
    """{destination rank: the messages ``rank`` sends it, in order}."""
    out: Dict[int, List[Message]] = {}
    for action in actions:
        sent = sends(action, pp, vpp, rank)
        if sent is not None:
            out.setdefault(sent[0], []).append(sent[1])
    return out


def simulate(pp: int, vpp: int, micro_batches: int) -> List[Tuple[int, Action]]:
    """Run every rank's schedule against the others (non-blocking sends, blocking in-order
    receives per sender) and return (rank, action) in completion order. Raises RuntimeError
    on a deadlock or on a backward before its forward."""
    plans = [schedule(pp, vpp, r, micro_batches) for r in range(pp)]
    position = [0] * pp
    delivered: Dict[Tuple[int, int], List[Message]] = {}  # (src, dst) -> sent, not yet received
    done: List[Tuple[int, Action]] = []
    forwarded = set()
    while any(position[r] < len(plans[r]) for r in range(pp)):
        progressed = False
        for r in range(pp):
            if position[r] == len(plans[r]):
                continue
            action = plans[r][position[r]]
            wanted = receives(action, pp, vpp, r)
            if wanted is not None:
                queue = delivered.get((wanted.source % pp, r), [])
                if wanted not in queue:
                    continue
                queue.remove(wanted)
            if action.kind == "B" and (r, action.chunk, action.micro) not in forwarded:
                raise RuntimeError(f"rank {r}: backward of {action} before its forward")
            if action.kind == "F":
                forwarded.add((r, action.chunk, action.micro))
            sent = sends(action, pp, vpp, r)
            if sent is not None:
                delivered.setdefault((r, sent[0]), []).append(sent[1])
            done.append((r, action))
            position[r] += 1
            progressed = True
        if not progressed:
            raise RuntimeError(f"pipeline schedule deadlocks (pp={pp}, vpp={vpp}, micro-batches={micro_batches}) "
                               f"at positions {position}")
    return done
