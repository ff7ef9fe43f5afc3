# torch Tensor methods called directly on tensors, as model code does; one case per
# method. `torch` is injected by tests/adapters/harness.load_cases. On adapters the
# tensors are MindSpore Tensors, so these cases measure MindSpore's own methods:
# adapters/torch/tensor_methods.py lists those that differ and their rewrites.
# Inputs: x (2, 3, 4) float, y like x, v (4,) float, i (2, 3) int64, p (2, 3, 4) > 0.


def view(x):
    return x.view(6, 4), x.view(-1), x.view((2, 12)), x.view(2, -1, 2)


def reshape(x):
    return x.reshape(6, 4), x.reshape((4, -1)), x.reshape(-1), x.reshape([2, 12])


def transpose(x):
    return x.transpose(0, 2), x.transpose(-1, -2)


def size(x):
    return x.reshape(x.size(0), -1), x.reshape(x.size(-1), -1), torch.zeros(x.size())


def shape(x):
    return x.reshape(x.shape[0], -1), torch.zeros(x.shape), x.reshape(*x.shape[:-1], 2, 2)


def dim(x):
    return x.reshape(x.dim(), -1)


def ndim(x):
    return x.reshape(x.ndim, -1)


def numel(x):
    return x.reshape(x.numel())


def flatten(x):
    return x.flatten(), x.flatten(1), x.flatten(0, 1), x.flatten(start_dim=-2)


def unflatten(x):
    return x.unflatten(-1, (2, 2)), x.unflatten(1, (3, 1))


def unsqueeze(x):
    return x.unsqueeze(0), x.unsqueeze(-1), x.unsqueeze(dim=1)


def expand(x, v):
    return x[:, :1].expand(2, 5, 4), x[:, :1].expand(-1, 5, -1), v.expand(3, 4), v.expand((2, 4))


def expand_as(x, v):
    return v.expand_as(x), x[:, :1].expand_as(x)


def repeat(x, v):
    return x.repeat(2, 1, 1), x.repeat(1, 2, 1, 1), v.repeat(3), v.repeat((2, 2))


def float_(i):
    return i.float(), i.float() / 2


def half(x):
    return x.half(), x.half().float()


def double(x):
    return x.double() * 2


def long(x):
    return (x * 3).long(), (x > 0).long()


def int_(x):
    return (x * 3).int()


def bool_(i):
    return i.bool(), (i - 4).bool()


def to_dtype(x):
    return x.to(torch.float64), x.to(torch.float16), (x * 3).to(torch.int64), x.to(dtype=torch.float64)


def to_other(x, i):
    return i.to(x), x.to(i)


def to_device(x):
    return x.to("cpu") * 2, x.to("cpu", torch.float64)


def type_as(x, i):
    return i.type_as(x), x.type_as(i)


def type_(x):
    return x.type(torch.float64), (x * 3).type(torch.int32)


def contiguous(x):
    return x.contiguous() * 2


def sum_(x):
    return x.sum(), x.sum(1), x.sum(dim=-1, keepdim=True), x.sum((0, 2)), (x > 0).sum(), (x > 0).sum(-1)


def mean(x):
    return x.mean(), x.mean(1), x.mean(dim=(0, 2)), x.mean(-1, keepdim=True)


def max_(x):
    values, indices = x.max(1)
    return x.max(), values, indices, x.max(dim=-1, keepdim=True)[0], x.max(-1)[1]


def min_(x):
    values, indices = x.min(0)
    return x.min(), values, indices, x.min(dim=2, keepdim=True)[1]


def argmax(x):
    return x.argmax(), x.argmax(-1), x.argmax(dim=1, keepdim=True)


def softmax(x):
    return x.softmax(-1), x.softmax(dim=1)


def log_softmax(x):
    return x.log_softmax(-1), x.log_softmax(dim=0)


def masked_fill(x):
    return x.masked_fill(x > 0, 0.0), x.masked_fill(x < -0.5, float("-inf")).exp()


def chunk(x):
    return x.chunk(2, -1) + x.chunk(3, 1) + x.chunk(2)


def split(x):
    return x.split(2, -1) + x.split([1, 2], 1) + x.split(1)


def index_select(x, i):
    return x.index_select(1, i[0] % 3), x.index_select(-1, i[1] % 4)


def gather(x, i):
    return x.gather(1, torch.broadcast_to(i.unsqueeze(-1), (2, 3, 4)) % 3), x.gather(-1, i.unsqueeze(-1) % 4)


def clone(x):
    return x.clone() * 2


def detach(x):
    return x.detach() * x


def item(x):
    return x * x.sum().item(), x + x[0, 0, 0].item()


def tolist(x):
    return torch.tensor(x[0].tolist()) * 2


def new_zeros(x, i):
    return x.new_zeros((2, 3)), x.new_zeros(2, 3), i.new_zeros(4)


def new_ones(x, i):
    return x.new_ones((2, 3)), x.new_ones(2), i.new_ones((3,))


def new_full(x, i):
    return x.new_full((2, 3), 1.5), i.new_full((2,), 7)


def new_tensor(x):
    return x.new_tensor([1, 2]), x.new_tensor([0.5])


def pow_(x, p):
    return x.pow(2), p.pow(x), x ** 3, 2 ** x


def sqrt(p):
    return p.sqrt()


def rsqrt(p):
    return p.rsqrt()


def exp(x):
    return x.exp()


def log(p):
    return p.log()


def abs_(x):
    return x.abs(), -x.abs()


def neg(x):
    return x.neg()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def clamp(x):
    return x.clamp(-0.5, 0.5), x.clamp(min=0.0), x.clamp(max=0.1)


def arithmetic(x, y):
    return x.mul(y), x.add(y), x.add(y, alpha=2), x.sub(y), x.sub(1.0), x.div(y), x.mul(2)


def div_rounding(x, y):
    return x.div(y, rounding_mode="floor"), x.div(y, rounding_mode="trunc")


def matmul(x, y):
    return x.matmul(torch.transpose(y, -1, -2)), x @ torch.transpose(y, 1, 2)


def T(x):  # noqa: N802
    return x[0].T, x[0].T @ x[0]


def mT(x):  # noqa: N802
    return x.mT, x.mT @ x


def eq(x, y):
    return x.eq(y), x.ne(y), x.gt(0), x.lt(y), x.ge(y), x.le(0.5)


def logical(x):
    return (x > 0).logical_and(x < 1), (x > 0).logical_not(), (x > 0).logical_or(x < -1)


def norm(x):
    return x.norm(), x.norm(dim=-1), x.norm(p=2, dim=1, keepdim=True)


def var(x):
    return x.var(), x.var(-1), x.var(dim=1, unbiased=False), x.std(-1)


def cumsum(x):
    return x.cumsum(-1), x.cumsum(dim=0)


def tril(x):
    return x[0].tril(), x[0].triu(1)


def topk(x):
    values, indices = x.topk(2)
    return values, indices, x.topk(2, dim=1)[0]


def sort(x):
    values, indices = x.sort(-1)
    return values, indices, x.sort(dim=1, descending=True)[0], x.argsort(-1)


def all_any(x):
    return (x > -5).all(), (x > 0).any(), (x > 0).all(-1), (x > 0).any(dim=1)


def is_floating_point(x, i):
    return x * x.is_floating_point(), x * i.is_floating_point()


def narrow(x):
    return x.narrow(1, 1, 2), x.narrow(-1, 0, 3)


def flip(x):
    return x.flip(0), x.flip((0, 2)), x.flip(-1)


def roll(x):
    return x.roll(1, 1), x.roll(-1, -1)


def t(x):
    return x[0].t(), x[0].t() @ x[0]


def swapaxes(x):
    return x.swapaxes(0, 2), x.swapdims(1, 2)


def where(x, y):
    return x.where(x > 0, y), x.where(x > 0, 0.0)


def type_conversions_chain(x):
    return x.float().half().float(), x.to(torch.bfloat16).float()


def getitem(x, i):
    return (x[0], x[:, 1:3], x[..., -1], x[:, None], x[None, ..., None], x[1, :, ::2],
            x[i[0] % 2], x[:, -1], x[..., 1:], x[:, i[0] % 3], x[i[0] % 2, i[1] % 3])


def getitem_int_slice_tensor(x, i):
    """An int and a tensor index separated by a slice: torch applies the int first."""
    return x[0, :, i[1] % 4]


def getitem_mask(x):
    mask = x[:, :, 0] > 0
    return x[mask], x[x > 0]


def setitem(x, v):
    y = torch.clone(x)
    y[0] = 0.0
    y[:, 1] = v
    y[..., 0] = y[..., 1] * 2
    return y


def setitem_mask(x):
    y = torch.clone(x)
    y[y > 0.5] = 0.0
    return y


def masked_fill_inplace(x):
    y = torch.clone(x)
    y.masked_fill_(y > 0, 1.0)
    return y


def inplace_arithmetic(x, y):
    z = torch.clone(x)
    z.add_(y)
    z.mul_(2.0)
    return z


def zero_fill(x):
    z = torch.clone(x)
    z.zero_()
    w = torch.clone(x)
    w.fill_(3.0)
    return z + 1, w


# ---- the differing methods as auto_convert rewrites them: x.m(*a) -> methods.m(x, *a);
# `methods` is injected by tests/adapters/test_methods.py (adapters.torch.tensor_methods on
# adapters, the real Tensor methods on torch).


def transpose_rewritten(x):
    return methods.transpose(x, 0, 2), methods.transpose(x, -1, -2)


def permute_rewritten(x):
    return methods.permute(x, 2, 0, 1), methods.permute(x, (1, 2, 0)), methods.permute(x, -1, 0, 1)


def size_rewritten(x):
    return (x.reshape(methods.size(x, 0), -1), x.reshape(methods.size(x, -1), -1),
            torch.zeros(methods.size(x)), x.reshape(*methods.size(x)[:-1], 2, 2))


def expand_rewritten(x, v):
    return (methods.expand(x[:, :1], 2, 5, 4), methods.expand(x[:, :1], -1, 5, -1), methods.expand(v, 3, 4),
            methods.expand(v, (2, 4)))


def max_rewritten(x):
    values, indices = methods.max(x, 1)
    return methods.max(x), values, indices, methods.max(x, dim=-1, keepdim=True)[0], methods.max(x, x * 0.5)


def min_rewritten(x):
    values, indices = methods.min(x, 0)
    return methods.min(x), values, indices, methods.min(x, dim=2, keepdim=True)[1]


def argmax_rewritten(x):
    return methods.argmax(x), methods.argmax(x, -1), methods.argmax(x, dim=1, keepdim=True)


def softmax_rewritten(x):
    return methods.softmax(x, -1), methods.softmax(x, dim=1)


def log_softmax_rewritten(x):
    return methods.log_softmax(x, -1), methods.log_softmax(x, dim=0)


def norm_rewritten(x):
    return methods.norm(x), methods.norm(x, dim=-1), methods.norm(x, p=2, dim=1, keepdim=True)


def var_rewritten(x):
    return methods.var(x), methods.var(x, -1), methods.var(x, dim=1, unbiased=False), methods.var(x, 1, correction=0)


def std_rewritten(x):
    return methods.std(x), methods.std(x, -1), methods.std(x, dim=1, unbiased=False, keepdim=True)


def flip_rewritten(x):
    return methods.flip(x, 0), methods.flip(x, (0, 2)), methods.flip(x, -1)


def topk_rewritten(x):
    values, indices = methods.topk(x, 2)
    return values, indices, methods.topk(x, 2, dim=1)[0], methods.topk(x, 1, largest=False)[1]


def sort_rewritten(x):
    values, indices = methods.sort(x, -1)
    return values, indices, methods.sort(x, dim=1, descending=True)[0]


def argsort_rewritten(x):
    return methods.argsort(x, -1), methods.argsort(x, dim=0, descending=True)


def unflatten_rewritten(x):
    return methods.unflatten(x, -1, (2, 2)), methods.unflatten(x, 1, (3, 1))


def detach_rewritten(x):
    return methods.detach(x) * x


def new_tensor_rewritten(x):
    return methods.new_tensor(x, [1, 2]), methods.new_tensor(x, [0.5])


def clone_rewritten(x):
    return methods.clone(x) * 2


def amax_rewritten(x):
    return methods.amax(x), methods.amax(x, -1), methods.amax(x, dim=1, keepdim=True)


def rewritten_without_grad(x):
    """Methods torch does not differentiate."""
    return methods.floor_divide(x, 0.5), methods.floor_divide(x, x.abs() + 1)


def squeeze_rewritten(x):
    return (methods.squeeze(x[:, :1]), methods.squeeze(x[:, :1], 1), methods.squeeze(x, 0),
            methods.squeeze(x[:1, :, :1], -1), methods.squeeze(x, dim=-1))


def repeat_interleave_rewritten(x):
    return methods.repeat_interleave(x, 2), methods.repeat_interleave(x, 2, dim=-1), methods.repeat_interleave(x, 0)


def unbind_rewritten(x):
    return methods.unbind(x, 1) + methods.unbind(x) + methods.unbind(x, dim=-1)


def repeat_rewritten(x, v):
    return (methods.repeat(x, 2, 1, 1), methods.repeat(x, 1, 2, 1, 1), methods.repeat(v, 3),
            methods.repeat(v, (2, 2)))


def roll_rewritten(x):
    return methods.roll(x, 1, 1), methods.roll(x, -1, -1), methods.roll(x, (1, 2), (0, 2))


def cumsum_rewritten(x):
    return methods.cumsum(x, -1), methods.cumsum(x, dim=0)


def new_zeros_rewritten(x, i):
    return methods.new_zeros(x, (2, 3)), methods.new_zeros(x, 2, 3), methods.new_zeros(i, 4)


def new_ones_rewritten(x, i):
    return methods.new_ones(x, (2, 3)), methods.new_ones(x, 2), methods.new_ones(i, 3, 1)


def new_full_rewritten(x, i):
    return methods.new_full(x, (2, 3), 1.5), methods.new_full(i, (2,), 7)


def new_empty_rewritten(x):
    return methods.new_empty(x, 2, 3).shape[0] * methods.new_ones(x, 1)


def to_rewritten(x, i):
    return (methods.to(x, torch.float64), methods.to(x * 3, torch.int64) * x, methods.to(i, x),
            methods.to(x, "cpu") * 2, methods.to(x, "cpu", torch.float64), methods.to(x, dtype=torch.float16))


def long_rewritten(x):
    return methods.long(x * 3) * x, methods.int(x * 3) * x, methods.short(x * 3) * x, methods.byte(x.abs() * 3) * x


def type_rewritten(x, i):
    return methods.type(x, torch.float64), methods.type(x * 3, torch.int32) * x, methods.type_as(x * 3, i) * x


def inplace_rewritten(x, y):
    """Each in-place op on its own copy (torch's autograd forbids modifying a saved output)."""
    z = torch.clone(x)
    methods.add_(z, y)
    methods.sub_(z, x, alpha=0.5)
    methods.mul_(z, 2.0)
    methods.div_(z, y.abs() + 1)
    e, c, m, p, u, v = torch.clone(x), torch.clone(x), torch.clone(x), torch.clone(x), torch.clone(x), torch.clone(x)
    r = x.abs() + 1
    methods.exp_(e)
    methods.clamp_(c, -0.5, 0.5)
    methods.masked_fill_(m, x > 0.5, 0.0)
    methods.pow_(p, 2)
    methods.sqrt_(r)
    methods.zero_(u)
    methods.fill_(v, 3.0)
    k, n, b = torch.clone(x), torch.clone(x), torch.clone(x)
    methods.copy_(k, y)
    methods.copy_(n, 2.0)
    methods.copy_(b, y[0, 0])
    return z, e, c, m, p, r, u, v, k, n, b


def random_inplace_rewritten(x):
    """Random fills: checked for shape and range (values differ from torch's stream)."""
    z, w = torch.clone(x), torch.clone(x)
    methods.normal_(z, 2.0, 0.0)
    methods.uniform_(w, 3.0, 3.0)
    return z, w


# ---- groups: one graph compile for many cases (test_methods.py runs these)


def agreeing_shapes(x, v):
    return (*view(x), *reshape(x), *shape(x), dim(x), ndim(x), numel(x), *flatten(x),
            *unsqueeze(x), *expand_as(x, v), *narrow(x), *t(x), *swapaxes(x), *T(x), *mT(x),
            *chunk(x), *split(x), contiguous(x))


def agreeing_math(x, y, p):
    return (*pow_(x, p), sqrt(p), rsqrt(p), exp(x), log(p), *abs_(x), neg(x), sigmoid(x), tanh(x),
            *clamp(x), *arithmetic(x, y), *div_rounding(x, y), *matmul(x, y), *where(x, y), *tril(x),
            *sum_(x), *mean(x), *masked_fill(x), *item(x), *is_floating_point(x, x > 0))


def agreeing_indexing(x, y, v, i):
    return (*index_select(x, i), *gather(x, i), *getitem(x, i), *getitem_mask(x), setitem(x, v),
            setitem_mask(x))


def agreeing_dtypes(x, i):
    return (*float_(i), *half(x), double(x), *type_conversions_chain(x), *bool_(i), *eq(x, x * 2),
            *logical(x), *all_any(x))


def rewritten_shapes(x, v):
    return (*transpose_rewritten(x), *permute_rewritten(x), *size_rewritten(x), *expand_rewritten(x, v),
            *flip_rewritten(x), *unflatten_rewritten(x), *repeat_rewritten(x, v), *roll_rewritten(x),
            clone_rewritten(x), detach_rewritten(x), *unbind_rewritten(x), *squeeze_rewritten(x),
            *repeat_interleave_rewritten(x))


def rewritten_reductions(x):
    return (*max_rewritten(x), *min_rewritten(x), *argmax_rewritten(x), *softmax_rewritten(x),
            *log_softmax_rewritten(x), *norm_rewritten(x), *var_rewritten(x), *std_rewritten(x),
            *topk_rewritten(x), *sort_rewritten(x), *argsort_rewritten(x), *cumsum_rewritten(x),
            *amax_rewritten(x))


def rewritten_dtypes(x, i):
    return (*to_rewritten(x, i), *long_rewritten(x), *type_rewritten(x, i))


def rewritten_constructors(x, i):
    return (*new_zeros_rewritten(x, i), *new_ones_rewritten(x, i), *new_full_rewritten(x, i),
            new_empty_rewritten(x), *new_tensor_rewritten(x))


def rewritten_inplace(x, y):
    return (*inplace_rewritten(x, y), *random_inplace_rewritten(x))
