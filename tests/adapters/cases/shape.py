# torch-style cases for shape, indexing and joining ops;
# `torch` is injected by tests/adapters/harness.load_cases.


def reshaping(x):
    return (torch.reshape(x, (6, 4)), torch.reshape(x, [-1]), torch.reshape(x, (2, -1, 2)),
            torch.flatten(x), torch.flatten(x, 1), torch.flatten(x, 0, 1), torch.flatten(x, start_dim=-2),
            torch.unflatten(x, 2, (2, 2)), torch.unflatten(x, -1, (-1, 2)),
            torch.squeeze(x[:, :1]), torch.squeeze(x[:, :1], 1), torch.squeeze(x, 0),
            torch.squeeze(x[:1, :, :1], (0, 2)), torch.unsqueeze(x, 0), torch.unsqueeze(x, -1))


def transposing(x):
    return (torch.permute(x, (2, 0, 1)), torch.permute(x, [1, 2, 0]), torch.transpose(x, 0, 2),
            torch.transpose(x, -1, -2), torch.swapaxes(x, 0, 1), torch.swapdims(x, 1, 2),
            torch.t(x[0]), torch.t(x[0, 0]), torch.movedim(x, 0, -1), torch.movedim(x, (0, 1), (2, 0)),
            torch.moveaxis(x, 1, 0))


def expanding(x, v):
    return (torch.broadcast_to(v, (2, 3, 4)), torch.broadcast_to(x[:, :1], (-1, 3, -1)),
            torch.tile(x, (2, 1, 1)), torch.tile(v, (2,)), torch.tile(x, (2, 1, 1, 2)),
            torch.repeat_interleave(x, 2, dim=1), torch.repeat_interleave(v, 3),
            torch.repeat_interleave(x, 2), torch.flip(x, (0, 2)), torch.flip(x, [-1]),
            torch.roll(x, 1, 1), torch.roll(x, (1, -2), (0, 2)), torch.roll(x, 5), torch.roll(x, -1, -1))


def repeat_counts(x, repeats):
    """Tensor repeats: data-dependent length."""
    return torch.repeat_interleave(x, repeats, dim=0), torch.repeat_interleave(x[:, 0], repeats + 1)


def repeat_counts_sized(x, repeats):
    """Tensor repeats with the total given: a static shape, so it compiles."""
    return torch.repeat_interleave(x, repeats, dim=0, output_size=4), torch.repeat_interleave(x[:, :3], repeats, 1, output_size=4)


def joining(x, y):
    return (torch.cat((x, y), 0), torch.cat([x, y], dim=-1), torch.concat((x, y), 1),
            torch.concatenate([x, y, x], 0), torch.stack((x, y)), torch.stack([x, y], dim=-1),
            torch.stack((x, y, x), 1))


def splitting(x):
    return (*torch.split(x, 2, 1), *torch.split(x, [1, 4], dim=1), *torch.split(x, 3, -1),
            *torch.chunk(x, 2), *torch.chunk(x, 3, dim=1), *torch.chunk(x, 4, -1), *torch.unbind(x, 1),
            torch.narrow(x, 1, 1, 3), torch.narrow(x, -1, 0, 2), torch.select(x, 1, 2))


def split_pieces_transposed(x):
    """Pieces of a split along a middle dim, then transposed or permuted (as attention
    splits a packed qkv projection into heads): the gradient must flow back to x."""
    q, k, v = torch.split(x, [3, 1, 1], dim=2)
    a, b = torch.split(x, 4, dim=1)
    rows = torch.unbind(x, 1)
    return (torch.transpose(q, 1, 2), torch.permute(k.squeeze(2), (1, 0, 2)), torch.transpose(v, 0, 1) * 2.0,
            torch.transpose(a, 0, 1), torch.permute(b, (3, 2, 1, 0)), torch.transpose(rows[1], 0, 1))


def indexing(x, index, rows):
    return (torch.gather(x, 1, index), torch.gather(x, -1, index[:, :2]), torch.index_select(x, 0, rows),
            torch.index_select(x, 1, rows), torch.take_along_dim(x, index, 1),
            torch.take_along_dim(x, index[:1], dim=1), torch.take_along_dim(x, rows))


def scattering(x, index, src):
    return (torch.scatter(x, 1, index, src),
            torch.scatter(x, 1, index, 2.5), torch.scatter(x, 1, index, value=-1.0),
            torch.scatter_add(x, 1, index, src), torch.scatter_add(x, 0, index, src))


def scatter_reduce_add(x, index, src):
    """torch has no derivative for scatter with ``reduce``: forward only."""
    return torch.scatter(x, 1, index, src, reduce="add"), torch.scatter(x, 0, index, 1.5, reduce="add")


def data_dependent(x):
    """Output lengths depend on the values."""
    return (torch.masked_select(x, x > 0), torch.nonzero(x > 0), *torch.nonzero(x > 0, as_tuple=True))


def grids(u, v):
    return (*torch.meshgrid(u, v, indexing="ij"), *torch.meshgrid(u, v, indexing="xy"),
            *torch.meshgrid([u, v], indexing="ij"))


def copies(x):
    y = torch.clone(x)
    return (y * 2, torch.detach(x) * x, torch.clone(x).contiguous())
