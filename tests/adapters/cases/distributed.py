# torch-style distributed cases; `torch` is injected by tests/adapters/harness.load_cases.
# Each runs on every rank of the job; torch's collectives work in place.
dist = torch.distributed


def all_reduce_sum(x):
    y = x * 1
    dist.all_reduce(y)
    return y


def all_reduce_avg(x):
    y = x * 1
    dist.all_reduce(y, op=dist.ReduceOp.AVG)
    return y


def all_reduce_max(x):
    y = x * 1
    dist.all_reduce(y, op=dist.ReduceOp.MAX)
    return y


def functional_all_reduce(x):
    """torch.distributed.nn.functional.all_reduce: the sum is returned, the argument kept."""
    y = torch.distributed.nn.functional.all_reduce(x * 1)
    return y * 1 + x * 0


def all_gather_list(x):
    outs = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(outs, x)
    return torch.cat(outs, 0)


def all_gather_into_tensor(x):
    out = torch.zeros((x.shape[0] * dist.get_world_size(), x.shape[1]), dtype=x.dtype)
    dist.all_gather_into_tensor(out, x)
    return out


def broadcast_from_last(x):
    y = x * 1
    dist.broadcast(y, src=dist.get_world_size() - 1)
    return y


def reduce_scatter_tensor(x):
    out = torch.zeros((x.shape[0] // dist.get_world_size(), x.shape[1]), dtype=x.dtype)
    dist.reduce_scatter_tensor(out, x)
    return out


class CopyToModelParallelRegion(torch.autograd.Function):
    """Megatron: identity forward, all-reduce of the gradient in backward."""

    @staticmethod
    def forward(ctx, input_, group):
        ctx.group = group
        return input_

    @staticmethod
    def backward(ctx, grad_output):
        dist.all_reduce(grad_output, group=ctx.group)
        return grad_output, None


class ReduceFromModelParallelRegion(torch.autograd.Function):
    """Megatron: all-reduce forward, identity backward."""

    @staticmethod
    def forward(ctx, input_, group):
        dist.all_reduce(input_, group=group)
        return input_

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def tensor_parallel_mlp(x, w):
    """Row-parallel matmul: each rank holds a slice of w; grads of x are all-reduced."""
    h = CopyToModelParallelRegion.apply(x, None)
    return ReduceFromModelParallelRegion.apply(torch.matmul(h, w), None)


def functional_all_gather_dim1(x):
    """torch.distributed._functional_collectives.all_gather_single along dim 1, returned."""
    return torch.distributed._functional_collectives.all_gather_single(x, 1, dist.group.WORLD)


def functional_reduce_scatter_dim1(x):
    """torch.distributed._functional_collectives.reduce_scatter_tensor of [2, 6] along dim 1."""
    return torch.distributed._functional_collectives.reduce_scatter_single(x.reshape(2, 6), "sum", 1, dist.group.WORLD)
