# torch-style cases for elementwise math, comparisons, reductions and products;
# `torch` is injected by tests/adapters/harness.load_cases.


def arithmetic(a, b):
    return (torch.add(a, b, alpha=2), torch.sub(a, b, alpha=0.5), torch.subtract(a, b),
            torch.mul(a, b), torch.multiply(a, 3.0), torch.div(a, b), torch.divide(a, 2),
            torch.true_divide(a, b), torch.add(a, 1), torch.mul(a, 2),
            torch.neg(a), torch.negative(b), a + b * 2 - a / b)


def powers(a, p):
    return (torch.pow(a, 2), torch.pow(p, a), torch.pow(2.0, a), torch.sqrt(p), torch.rsqrt(p),
            torch.reciprocal(p), torch.square(a))


def transcendental(a, p):
    return (torch.exp(a), torch.log(p), torch.log2(p), torch.log1p(p), torch.expm1(a),
            torch.sin(a), torch.cos(a), torch.tanh(a), torch.sigmoid(a), torch.erf(a), torch.abs(a))


def rounding(a, b):
    return (torch.floor(a * 3), torch.ceil(a * 3), torch.round(a * 3), torch.round(a, decimals=2),
            torch.trunc(a * 3), torch.sign(a), torch.div(a, b, rounding_mode="trunc"),
            torch.div(a, b, rounding_mode="floor"), torch.floor_divide(a, b),
            torch.remainder(a, b), torch.remainder(a, -0.7), torch.fmod(a, b))


def bounds(a, lo, hi):
    return (torch.clamp(a, -0.5, 0.5), torch.clamp(a, min=0.1), torch.clamp(a, max=-0.1),
            torch.clamp(a, lo, hi), torch.clip(a, -0.3, 0.2), torch.maximum(a, lo), torch.minimum(a, hi),
            torch.max(a, lo), torch.min(a, hi))


def selection(a, b):
    return (torch.where(a > 0, a, b), torch.where(a > b, a, 0.0), torch.masked_fill(a, a > 0.5, -1.0),
            torch.masked_fill(b, b < 0, torch.tensor(2.0)), torch.lerp(a, b, 0.3), torch.lerp(a, b, b))


def where_indices(a):
    return torch.where(a > 0)


def predicates(a):
    x = torch.where(a > 1.0, a / 0.0, a)  # +-inf where a > 1
    x = torch.where(a < -1.0, x * 0.0 / 0.0, x)  # and nan where a < -1
    return (torch.isnan(x), torch.isinf(x), torch.isfinite(x))


def comparisons(a, b):
    return (torch.eq(a, b), torch.ne(a, a), torch.lt(a, b), torch.le(a, 0.0), torch.gt(a, b),
            torch.ge(b, 0.1), a == b, a != b, a < 0, a >= b,
            torch.logical_and(a > 0, b > 0), torch.logical_or(a > 0, b > 0),
            torch.logical_not(a > 0), torch.logical_xor(a > 0, b > 0),
            torch.isclose(a, a + 1e-9), torch.isclose(a, b))


def closeness(a, b):
    """allclose/equal give Python bools: returned as tensors for the comparison."""
    return torch.tensor([torch.allclose(a, a + 1e-9), torch.allclose(a, b), torch.equal(a, a),
                         torch.equal(a, b)])


def promotion(a, i, j):
    """torch's type promotion: int tensors with Python floats, bools, true division, int sums."""
    return (i * 0.5, i + 1, i + (i > 2), i / j, i // j, torch.div(i, 2), torch.sum(i),
            torch.sum(i > 2, dim=1), torch.cumsum(i, 0), torch.prod(i, 1), a * i, torch.sum(a > 0),
            torch.mean(a, dim=0, dtype=torch.float64))


def reductions(a):
    return (torch.sum(a), torch.sum(a, 1), torch.sum(a, dim=(0, 2), keepdim=True),
            torch.sum(a, -1, dtype=torch.float64), torch.mean(a), torch.mean(a, (1, 2)),
            torch.mean(a, -1, keepdim=True), torch.prod(a, 1), torch.prod(a),
            torch.amax(a, 1), torch.amax(a, (0, 2), keepdim=True), torch.amin(a, -1),
            torch.logsumexp(a, 1), torch.logsumexp(a, (0, 2), keepdim=True),
            torch.cumsum(a, 1), torch.cumsum(a, dim=-1), torch.cumprod(a, 2))


def statistics(a):
    return (torch.var(a), torch.var(a, 1), torch.var(a, -1, unbiased=False),
            torch.var(a, (0, 1), correction=0, keepdim=True), torch.var(a, False),
            torch.std(a), torch.std(a, dim=2), torch.std(a, 1, keepdim=True, correction=0),
            torch.norm(a), torch.norm(a, dim=1), torch.norm(a, p=2, dim=-1, keepdim=True),
            torch.norm(a, p=1, dim=0), torch.norm(a, float("inf"), dim=1), torch.norm(a, 3, (1, 2)))


def extrema(a):
    values, indices = torch.max(a, 1)
    min_values, min_indices = torch.min(a, dim=-1, keepdim=True)
    return (torch.max(a), torch.min(a), values, indices, min_values, min_indices,
            torch.argmax(a), torch.argmax(a, 1), torch.argmax(a, dim=-1, keepdim=True),
            torch.argmin(a), torch.argmin(a, 0))


def truth(a):
    return (torch.all(a > -3), torch.all(a > 0, 1), torch.any(a > 1), torch.any(a > 1, dim=-1, keepdim=True),
            torch.all(a > 0, dim=0))


def ordering(a):
    top_values, top_indices = torch.topk(a, 2)
    low_values, low_indices = torch.topk(a, 3, dim=0, largest=False)
    sort_values, sort_indices = torch.sort(a, dim=1)
    desc_values, desc_indices = torch.sort(a, 0, descending=True)
    return (top_values, top_indices, low_values, low_indices, sort_values, sort_indices,
            desc_values, desc_indices, torch.argsort(a), torch.argsort(a, dim=0, descending=True))


def products(a, b, v, w, batch1, batch2):
    return (torch.matmul(a, b), torch.matmul(w, b), torch.matmul(a, w), torch.matmul(batch1, b),
            torch.matmul(batch1, batch2), torch.mm(a, b), torch.bmm(batch1, batch2),
            torch.baddbmm(batch1 @ batch2, batch1, batch2, beta=0.5, alpha=2.0),
            torch.baddbmm(batch1 @ batch2, batch1, batch2), torch.outer(v, w), a @ b)


def einsums(q, k, v, t, f):
    return (torch.einsum("bhqd,bhkd->bhqk", q, k),
            torch.einsum("bhqk,bhkd->bhqd", torch.softmax(q @ torch.transpose(k, -1, -2), -1), v),
            torch.einsum("i,j->ij", t, f),
            torch.einsum("...d,...d->...", k, v),
            torch.einsum("bhqd->bqhd", q),
            torch.einsum("bhqd,bhqd", q, q),
            torch.einsum("bhqd,d->bhq", q, f[:4]),
            torch.einsum("ij,jk,kl->il", q[0, 0], torch.transpose(k[0, 0], 0, 1), v[0, 0]),
            torch.einsum("bhqd", q),
            torch.einsum("ab,cb->ac", [q[0, 0], k[0, 1]]))


def normalised(a):
    return (torch.softmax(a, -1), torch.softmax(a, dim=0), torch.log_softmax(a, 1),
            torch.softmax(a, 1, dtype=torch.float64), torch.tril(a), torch.tril(a, -1),
            torch.triu(a), torch.triu(a, diagonal=1), torch.tril(a, 2))
