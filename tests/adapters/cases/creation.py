# torch-style cases for tensor creation and random tensors;
# `torch` is injected by tests/adapters/harness.load_cases.


def from_python():
    """dtype inference from Python data: ints -> int64, floats -> float32, bools -> bool."""
    return (torch.tensor([[1, 2], [3, 4]]), torch.tensor([1.0, 2.5]), torch.tensor([1, 2.5]),
            torch.tensor(3), torch.tensor(0.5), torch.tensor([True, False]),
            torch.tensor([1, 2], dtype=torch.float32), torch.tensor([[0.5]], dtype=torch.float64),
            torch.tensor(7, dtype=torch.int32, device="cpu", requires_grad=False),
            torch.as_tensor([1, 2, 3]), torch.as_tensor([1.5], dtype=torch.float16))


def from_tensor(x):
    return torch.tensor(x) * 2, torch.tensor(x, dtype=torch.float64), torch.as_tensor(x) + 1


def filled():
    return (torch.zeros(2, 3), torch.zeros((2, 3), dtype=torch.int64), torch.zeros([4]),
            torch.ones(3, 1), torch.ones((2,), dtype=torch.bool), torch.full((2, 2), 1.5),
            torch.full((3,), 7), torch.full((2, 1), True), torch.full((2,), 2, dtype=torch.float32),
            torch.empty(2, 3).shape[0] * torch.ones(1), torch.eye(3), torch.eye(2, 4),
            torch.eye(3, dtype=torch.int64), torch.zeros(2, 3, device="cpu", requires_grad=True),
            torch.ones(2, pin_memory=False))


def ranges():
    return (torch.arange(5), torch.arange(2, 11, 3), torch.arange(0, 1, 0.1), torch.arange(1.0, 4.0),
            torch.arange(-2, 2, 0.5), torch.arange(10, 0, -3), torch.arange(6, dtype=torch.float32),
            torch.arange(0, 5, 2, dtype=torch.int32), torch.arange(0.5, 3),
            torch.linspace(0, 1, 7), torch.linspace(-2.0, 3.0, 5), torch.linspace(0, 10, 1),
            torch.linspace(1, 4, 4, dtype=torch.float64))


def likes(x, i):
    return (torch.zeros_like(x), torch.ones_like(x), torch.full_like(x, 0.25), torch.full_like(i, 3),
            torch.full_like(i, 2.7), torch.ones_like(i, dtype=torch.float32), torch.zeros_like(i),
            torch.empty_like(x).shape[1] * torch.ones_like(x), torch.full_like(x, -1, dtype=torch.int64))


def uniform(n):
    return torch.rand(n, 1000)


def normal_draws(n):
    return torch.randn(n, 1000), torch.normal(2.0, 3.0, (n, 1000))


def random_shapes(x):
    return (torch.rand(2, 3), torch.rand((4,)), torch.randn(3, 2, dtype=torch.float64), torch.rand_like(x),
            torch.randn_like(x), torch.randint(0, 5, (2, 3)), torch.randint(7, (4,)),
            torch.randint(-3, 3, (2,), dtype=torch.int32), torch.normal(x, 1.0), torch.normal(x, x.abs() + 1),
            torch.normal(0.0, x.abs() + 1), torch.randint_like(x, 10), torch.randperm(6),
            torch.bernoulli(torch.full((2, 500), 0.3)), torch.bernoulli(x.abs(), 0.0))
