"""The pipeline-parallel training step: a stage's compiled chunk graphs driven by a schedule.

Each chunk of the stage has up to two graphs (``mindspore.jit``, compiled once per input shape):

* ``forward(hidden, inputs)``: the chunk's output, sent to the next virtual stage (the last
  virtual stage computes nothing here: its forward runs inside its backward);
* ``backward(hidden, d_out, inputs)``: the gradient of ``sum(chunk(hidden) * d_out)`` with
  respect to ``hidden`` (sent back to the previous virtual stage) and to the chunk's trainable
  parameters (added into their fp32 buffers). The last virtual stage's backward is the loss's:
  ``(numerator, denominator, tokens)`` as ``TrainStep`` computes them, and the same gradients.

A backward recomputes its chunk's forward from the stored input (full activation
recomputation inside a stage): a stage keeps one input tensor [B, L, hidden] per micro-batch in
flight instead of every layer's activations, and the forward and backward are each one
compiled graph with no state carried between calls.

Driver (Python, between the graphs): the schedule (``schedule.py``), point-to-point messages
over the pipeline group (``adapters.torch.distributed.isend`` / ``recv``), the sum of the
loss over the pipeline ranks (only the last stage has it) and the squared gradient norms over
every stage. The optimizer update, gradient buffers, clipping and data-parallel reductions are
``TrainStep``'s, unchanged.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import mindspore
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from msmm import runtime

from ..loss import VocabParallelCrossEntropy, micro_batch_loss
from ..optimizer import AdamW
from ..step import MicroResult, TrainStep
from .schedule import Action, Message, outgoing, receives, schedule, sends
from .stage import PipelineChunk, PipelineStage


class ChunkGraphs(nn.Cell):
    """The compiled forward and backward of one chunk; ``buffers`` are the fp32 gradient
    buffers of ``weights`` (the chunk's trainable parameters), in order."""

    def __init__(self, chunk: PipelineChunk, weights: Sequence[Parameter], buffers: Sequence[Parameter],
                 reduction: str, vocab_parallel: Optional[VocabParallelCrossEntropy]) -> None:
        super().__init__(auto_prefix=False)
        self.chunk, self.reduction, self.vocab_parallel = chunk, reduction, vocab_parallel
        self.first, self.last = chunk.place.first, chunk.place.last
        self.has_weights = len(weights) > 0
        self.buffers = mindspore.ParameterTuple(buffers) if buffers else ()
        weights = list(weights) if weights else None
        if self.last:
            self._grad = mindspore.value_and_grad(self._loss, 0, weights, has_aux=True)
        elif self.first:
            self._grad = mindspore.value_and_grad(self._first_objective, None, weights) if weights else None
        else:
            self._grad = mindspore.value_and_grad(self._objective, 0, weights)
        self.forward = runtime.jit(self._forward_first if self.first else self._forward)
        self.backward = None
        if self.last:
            self.backward = runtime.jit(self._backward_loss)
        elif self.first and self.has_weights:
            self.backward = runtime.jit(self._backward_first)
        elif not self.first:
            self.backward = runtime.jit(self._backward)

    # ---- what is differentiated ---------------------------------------------------------------

    def _objective(self, hidden: Tensor, d_out: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        out = self.chunk(hidden, inputs)
        return (out.astype(mindspore.float32) * d_out.astype(mindspore.float32)).sum()

    def _first_objective(self, d_out: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        out = self.chunk(None, inputs)
        return (out.astype(mindspore.float32) * d_out.astype(mindspore.float32)).sum()

    def _loss(self, hidden: Tensor, labels: Tensor, inputs: Dict[str, Tensor]):
        return micro_batch_loss(self.chunk(hidden, inputs), labels, self.reduction, self.vocab_parallel)

    # ---- the compiled graphs --------------------------------------------------------------------

    def _forward(self, hidden: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        return self.chunk(hidden, inputs)

    def _forward_first(self, inputs: Dict[str, Tensor]) -> Tensor:
        return self.chunk(None, inputs)

    def _accumulate(self, grads) -> None:
        for k in range(len(grads)):
            ops.assign_add(self.buffers[k], grads[k].astype(mindspore.float32))

    def _backward(self, hidden: Tensor, d_out: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        _, grads = self._grad(hidden, d_out, inputs)
        if self.has_weights:
            d_hidden, weight_grads = grads
            self._accumulate(weight_grads)
            return d_hidden
        return grads

    def _backward_first(self, d_out: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        _, grads = self._grad(d_out, inputs)
        self._accumulate(grads)
        return d_out[0:1, 0:1, 0:1]  # the graph's output: anything after the writes

    def _backward_loss(self, hidden: Tensor, labels: Tensor, inputs: Dict[str, Tensor]):
        (numerator, denominator, tokens), grads = self._grad(hidden, labels, inputs)
        d_hidden = grads
        if self.has_weights:
            d_hidden, weight_grads = grads
            self._accumulate(weight_grads)
        return numerator, denominator, tokens, d_hidden


HEADER = 8  # int64s before each tensor: its rank, then its shape (padded with -1)


class Channels:
    """Point-to-point messages with the other pipeline ranks of one step. Sends are
    asynchronous; a receive drains the sender's messages in the order it sends them (every
    rank knows every rank's schedule), keeping those not yet needed, since messages between two
    ranks arrive in order and carry no tag. Each tensor is preceded by a small header with its
    shape (text hidden states, or a split vision encoder's, whose shape depends on the images)."""

    def __init__(self, pp: int, vpp: int, rank: int, micro_batches: int, ranks: Sequence[int], group,
                 dtype) -> None:
        import adapters.torch.distributed as dist

        self.dist, self.pp, self.ranks, self.group, self.dtype = dist, pp, tuple(ranks), group, dtype
        # the messages each other rank sends this one, in its order
        self.expected = {src: list(outgoing(schedule(pp, vpp, src, micro_batches), pp, vpp, src).get(rank, []))
                         for src in range(pp) if src != rank}
        self.arrived: Dict[Message, Tensor] = {}
        self.pending: List = []  # (work, tensor): sends in flight (the tensor kept alive)

    def receive(self, message: Message) -> Tensor:
        src = message.source % self.pp
        while message not in self.arrived:
            if not self.expected[src]:
                raise RuntimeError(f"pipeline: waiting for {message} from stage {src}, which sends no more")
            nxt = self.expected[src].pop(0)
            header = ops.zeros((HEADER,), mindspore.int64)
            self.dist.recv(header, self.ranks[src], self.group)
            dims = header.asnumpy()
            buffer = ops.zeros(tuple(int(d) for d in dims[1:1 + int(dims[0])]), self.dtype)
            self.dist.recv(buffer, self.ranks[src], self.group)
            self.arrived[nxt] = buffer
        return self.arrived.pop(message)

    def send(self, dst: int, message: Message, tensor: Tensor) -> None:
        tensor = tensor.astype(self.dtype)
        if len(tensor.shape) >= HEADER:
            raise ValueError(f"pipeline: a {len(tensor.shape)}-d activation does not fit the message header")
        header = Tensor(np.array([len(tensor.shape), *tensor.shape] + [-1] * (HEADER - 1 - len(tensor.shape)),
                                 np.int64))
        for part in (header, tensor):
            self.pending.append((self.dist.isend(part, self.ranks[dst], self.group), part))

    def finish(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()
        if self.arrived or any(self.expected.values()):
            raise RuntimeError("pipeline: messages left over at the end of the step")


class PipelineTrainStep(TrainStep):
    """``TrainStep`` (buffers, clipping, AdamW) for one pipeline rank's ``stage``:
    :meth:`run_schedule` replaces the micro-batch loop."""

    def __init__(self, stage: PipelineStage, optimizer: AdamW, pp: int, pipeline_ranks: Sequence[int],
                 pipeline_group, reduction: str = "micro_batch", clip_grad: float = 0.0,
                 vocab_parallel: Optional[VocabParallelCrossEntropy] = None,
                 sharded: Optional[Sequence[bool]] = None) -> None:
        super().__init__(stage.model, optimizer, reduction, clip_grad, vocab_parallel, sharded)
        self.stage, self.pp, self.vpp = stage, pp, stage.parallel.vpp_size
        self.rank = stage.pp_rank
        self.pipeline_ranks, self.pipeline_group = tuple(pipeline_ranks), pipeline_group
        # each trainable parameter belongs to one chunk (the placement of its name)
        per_chunk: List[List[int]] = [[] for _ in stage.chunks]
        for k, name in enumerate(optimizer.names):
            per_chunk[stage.names[name][0]].append(k)
        self.graphs = [ChunkGraphs(chunk, [self.weights[k] for k in ks], [self.grad_acc[k] for k in ks], reduction,
                                   vocab_parallel) for chunk, ks in zip(stage.chunks, per_chunk)]
        self.hidden_dtype = next(iter(stage.model.parameters())).dtype  # of the activations sent
        self.zero_grads = runtime.jit(self._zero_grads)

    def _zero_grads(self) -> Tensor:
        for buffer in self.grad_acc:
            ops.assign(buffer, ops.zeros_like(buffer))
        return self.grad_acc[0].reshape(-1)[0:1]

    def run_schedule(self, batches: List[Dict[str, Tensor]]) -> MicroResult:
        """One step's forward and backward passes over ``batches`` (every micro-batch of the
        step, the same on every pipeline rank); the gradients end in the buffers. Returns the
        loss sums of this rank (zero but on the last stage)."""
        if self.weights:
            self.zero_grads()
        micro = len(batches)
        labels = [b["labels"] for b in batches]
        inputs = [mindspore.mutable({k: v for k, v in b.items() if k != "labels"}) for b in batches]
        channels = Channels(self.pp, self.vpp, self.rank, micro, self.pipeline_ranks, self.pipeline_group,
                            self.hidden_dtype)
        stored: Dict[Tuple[int, int], Optional[Tensor]] = {}
        numerator = denominator = 0.0
        tokens = 0
        for action in schedule(self.pp, self.vpp, self.rank, micro):
            graphs = self.graphs[action.chunk]
            key = (action.chunk, action.micro)
            wanted = receives(action, self.pp, self.vpp, self.rank)
            received = channels.receive(wanted) if wanted is not None else None
            if action.kind == "F":
                stored[key] = received
                if not graphs.last:
                    out = graphs.forward(inputs[action.micro]) if graphs.first else \
                        graphs.forward(received, inputs[action.micro])
                    self._send(channels, action, out)
                continue
            hidden = stored.pop(key)
            if graphs.last:
                num, den, tok, d_hidden = graphs.backward(hidden, labels[action.micro], inputs[action.micro])
                numerator += float(num.asnumpy())
                denominator += float(den.asnumpy())
                tokens += int(tok.asnumpy())
            elif graphs.first:
                if graphs.backward is not None:
                    graphs.backward(received, inputs[action.micro])
                continue
            else:
                d_hidden = graphs.backward(hidden, received, inputs[action.micro])
            self._send(channels, action, d_hidden)
        channels.finish()
        self._accumulating = True
        return MicroResult(numerator, denominator, tokens)

    def _send(self, channels: Channels, action: Action, tensor: Tensor) -> None:
        sent = sends(action, self.pp, self.vpp, self.rank)
        if sent is not None:
            channels.send(sent[0], sent[1], tensor)
