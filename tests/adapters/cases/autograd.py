# torch-style autograd cases; `torch` is injected by tests/adapters/harness.load_cases


class ScaledMul(torch.autograd.Function):
    """Two tensor inputs and a Python scalar; backward reads saved tensors and an attribute."""

    @staticmethod
    def forward(ctx, x, y, scale=3.0):
        ctx.save_for_backward(x, y)
        ctx.scale = scale
        return x * y * scale

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        grad_x = grad * y * ctx.scale if ctx.needs_input_grad[0] else None
        return grad_x, grad * x * ctx.scale, None


class SquareAndDouble(torch.autograd.Function):
    """Returns a tuple; backward takes one gradient per output; mark_non_differentiable is a no-op."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.set_materialize_grads(True)
        return x * x, x * 2

    @staticmethod
    def backward(ctx, grad_square, grad_double):
        (x,) = ctx.saved_tensors
        return grad_square * 2 * x + grad_double * 2


class FakeGrad(torch.autograd.Function):
    """A gradient that is not the true derivative (straight-through rounding)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class OnlyFirstGrad(torch.autograd.Function):
    """backward returns None for a tensor input: its gradient is zero."""

    @staticmethod
    def forward(ctx, x, y):
        return x + y

    @staticmethod
    def backward(ctx, grad):
        return grad * 2, None


def _all_reduce(tensor, group):
    # as Megatron's _reduce: nothing to do in a single process (the 2-worker run is in test_distributed)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size(group) > 1:
        torch.distributed.all_reduce(tensor, group=group)
    return tensor


class CopyToModelParallelRegion(torch.autograd.Function):
    """Megatron's pattern: identity forward, all-reduce in backward (a process-group argument)."""

    @staticmethod
    def forward(ctx, input_, group):
        ctx.group = group
        return input_

    @staticmethod
    def backward(ctx, grad_output):
        return _all_reduce(grad_output, ctx.group), None


class ReduceFromModelParallelRegion(torch.autograd.Function):
    """Megatron's pattern: all-reduce forward, identity backward."""

    @staticmethod
    def forward(ctx, input_, group):
        return _all_reduce(input_, group)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def scaled_mul(x, y):
    return ScaledMul.apply(x, y, 0.5)


def scaled_mul_default(x, y):
    return ScaledMul.apply(x, y) + ScaledMul.apply(y, x, 2.0)


def square_and_double(x):
    return SquareAndDouble.apply(x)


def fake_grad(x):
    return FakeGrad.apply(x * 3) * x


def only_first_grad(x, y):
    return OnlyFirstGrad.apply(x, y) * y


def megatron_parallel_region(x, w):
    h = CopyToModelParallelRegion.apply(x, None)
    return ReduceFromModelParallelRegion.apply(torch.matmul(h, w), None)


class _Group:
    """Stands for a process group: a Python object the ctx keeps (not a tensor, not None)."""

    name = "model_parallel"


MODEL_PARALLEL_GROUP = _Group()


def megatron_region_with_group_object(x, w):
    h = CopyToModelParallelRegion.apply(x * 2, MODEL_PARALLEL_GROUP)
    return ScaledMul.apply(h, w, 1.5) * ReduceFromModelParallelRegion.apply(h, MODEL_PARALLEL_GROUP)


def no_grad_region(x):
    with torch.no_grad():
        y = x * 3
    return y * x


@torch.no_grad()
def _tripled(x):
    return x * 3


def no_grad_decorator(x):
    return _tripled(x) * x


def enable_grad_inside_no_grad(x):
    with torch.no_grad():
        with torch.enable_grad():
            y = x * 3
    return y * x


class RandomMask(torch.autograd.Function):
    """Dropout-like: backward must use the mask that forward drew (forward runs once)."""

    @staticmethod
    def forward(ctx, x):
        mask = (torch.rand_like(x) > 0.5).to(x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


def random_mask(x):
    return RandomMask.apply(x)
