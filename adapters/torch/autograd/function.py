"""``torch.autograd.Function``: custom backward in PyNative and under ``mindspore.jit``.

A subclass is written as in torch::

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return x * k

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * ctx.k, None

    y = Scale.apply(x, 2.0)

``Scale.apply`` is a Cell (set when the subclass is defined), so graph mode resolves it
like any sub-Cell. Two execution paths:

* PyNative: the call goes to MindSpore's PyNative custom-function node
  (``mindspore.common._Function``), which keeps torch's semantics exactly: forward runs
  once, its ``ctx`` (saved tensors, attributes, ``needs_input_grad``) reaches backward.
* Graph mode: a Cell ``bprop`` gives the custom gradient. Graph mode cannot carry
  ``ctx`` attributes from one function to another (an attribute written on a Python
  object is lost when the writing function returns, and falls back to runtime Python,
  which cuts gradients). So ``forward`` and ``backward`` are rewritten once per class
  (``ast``; the rewritten source is written to a cache folder, since the graph parser
  reads source files): ``ctx.X`` becomes a local variable ``_ctx_X``,
  ``ctx.save_for_backward(*t)`` sets ``_ctx_saved_tensors``, each ``return out`` of
  forward becomes ``return out, (<ctx locals>)`` and backward takes that tuple as an
  extra argument. ``bprop`` re-runs the rewritten forward on the inputs (activation
  recomputation of the custom op) and calls the rewritten backward. A ``forward`` that
  draws random numbers draws them again in graph mode's backward. In graph mode
  ``ctx`` offers attributes, ``save_for_backward``/``saved_tensors``,
  ``needs_input_grad`` (True for tensor arguments) and the no-ops
  ``mark_non_differentiable``, ``set_materialize_grads``, ``mark_dirty`` (MindSpore
  always materializes output grads as tensors); ``ctx`` itself cannot be passed on to
  other functions. A backward that reads no ``ctx`` state does not re-run forward (its side
  effects, such as a collective, would run again in the backward pass, unordered with the
  backward's own collectives).

``bprop`` must have a fixed arity in graph mode, so there is one bprop Cell per number
of ``apply`` arguments (1 to 8). Inputs that are not tensors (Python scalars, process
groups) are passed through as constants; backward's ``None`` for a tensor input
becomes zeros.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, List, Tuple

from mindspore import Tensor, nn, ops
from mindspore.common import _Function

from .grad_mode import _run_in_jit

__all__ = ["Function", "FunctionCtx"]

MAX_ARITY = 8
_STATE = "_msmm_ctx_state"
_NEEDS = "_msmm_needs_input_grad"
_NO_OPS = ("mark_non_differentiable", "set_materialize_grads", "mark_dirty")
_CACHE = Path(os.environ.get("MSMM_CACHE", Path(tempfile.gettempdir()) / "msmm")) / "autograd"


class FunctionCtx:
    """The ``ctx`` argument of graph mode's rewritten ``forward``/``backward``; after the
    rewrite nothing reads it (its attributes became local variables)."""


# ---- the graph-mode rewrite -------------------------------------------------------------
def _source_tree(fn: Callable, what: str) -> ast.FunctionDef:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as error:
        raise TypeError(f"autograd.Function: cannot read the source of {what} "
                        f"(graph mode compiles it): {error}") from None
    tree = ast.parse(source).body[0]
    if not isinstance(tree, ast.FunctionDef) or not tree.args.args:
        raise TypeError(f"autograd.Function: {what} must be a function taking ctx first")
    tree.decorator_list = []
    return tree


def _local(name: str) -> str:
    return f"_ctx_{name}"


def _is_ctx_call(node: ast.AST, ctx: str, names: Tuple[str, ...]) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in names
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == ctx)


class _CtxToLocals(ast.NodeTransformer):
    """``ctx.X`` -> local ``_ctx_X``; ``ctx.save_for_backward(*t)`` -> ``_ctx_saved_tensors = t``;
    the ctx methods without effect here are dropped. With ``state`` given, each
    ``return out`` becomes ``return out, (<the locals in state>)``.

    Nested functions and lambdas are left alone (their returns are not this function's).
    """

    def __init__(self, ctx: str, state: List[str] = None):
        self.ctx, self.state, self.names = ctx, state, []

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == self.ctx:
            if node.attr not in self.names:
                self.names.append(node.attr)
            return ast.copy_location(ast.Name(_local(node.attr), node.ctx), node)
        return self.generic_visit(node)

    def visit_Expr(self, node):
        if _is_ctx_call(node, self.ctx, ("save_for_backward",)):
            target = ast.Name(_local("saved_tensors"), ast.Store())
            return ast.Assign([target], ast.Tuple([self.visit(a) for a in node.value.args], ast.Load()))
        if _is_ctx_call(node, self.ctx, _NO_OPS):
            return ast.Pass()
        return self.generic_visit(node)

    def visit_Return(self, node):
        value = self.visit(node.value) if node.value is not None else ast.Constant(None)
        if self.state is None:
            return ast.Return(value)
        state = ast.Tuple([ast.Name(_local(name), ast.Load()) for name in self.state], ast.Load())
        return ast.Return(ast.Tuple([value, state], ast.Load()))

    def visit_FunctionDef(self, node):
        return node

    visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = visit_FunctionDef


def _set_local(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([ast.Name(_local(name), ast.Store())], value)


def _compile(tree: ast.FunctionDef, fn: Callable, label: str) -> Callable:
    """Compile ``tree`` in ``fn``'s globals. The graph parser reads source files, so the
    source is written to a file named by its content hash in a cache folder."""
    module = ast.fix_missing_locations(ast.Module([tree], type_ignores=[]))
    source = f"# {label}, rewritten by adapters.torch.autograd.function for graph mode\n"
    source += ast.unparse(module) + "\n"
    _CACHE.mkdir(parents=True, exist_ok=True)
    path = _CACHE / f"{label.replace('<', '').replace('>', '')}-{hashlib.sha1(source.encode()).hexdigest()[:12]}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
    namespace: dict = {}
    closure = inspect.getclosurevars(fn).nonlocals
    scope = dict(fn.__globals__, **closure) if closure else fn.__globals__
    exec(compile(source, str(path), "exec"), scope, namespace)  # noqa: S102 - our rewrite of fn
    return namespace[tree.name]


def _graph_pair(cls: type) -> Tuple[Callable, Callable, int]:
    """``(forward, backward, state size)`` of ``cls`` rewritten to carry ctx state explicitly:
    ``forward(ctx, needs_input_grad, *args) -> (out, state)``,
    ``backward(ctx, state, *grads) -> grads``. The size is 0 when backward reads no ctx
    state: then bprop does not re-run forward (whose side effects, e.g. a collective,
    would otherwise run again in the backward pass, unordered with the others)."""
    forward, backward = cls.__dict__["forward"], cls.__dict__["backward"]
    forward = getattr(forward, "__func__", forward)
    backward = getattr(backward, "__func__", backward)
    label = f"{cls.__module__}.{cls.__qualname__}"

    fwd = _source_tree(forward, f"{label}.forward")
    collect = _CtxToLocals(fwd.args.args[0].arg)
    for stmt in fwd.body:
        collect.visit(stmt)
    state = ["needs_input_grad", "saved_tensors"] + [n for n in collect.names
                                                      if n not in ("needs_input_grad", "saved_tensors")]
    rewrite = _CtxToLocals(fwd.args.args[0].arg, state)
    body = [rewrite.visit(stmt) for stmt in fwd.body]
    prologue = [_set_local("needs_input_grad", ast.Name(_NEEDS, ast.Load())),
                _set_local("saved_tensors", ast.Tuple([], ast.Load()))]
    prologue += [_set_local(name, ast.Constant(None)) for name in state[2:]]
    fwd.args.args.insert(1, ast.arg(_NEEDS))
    fwd.body = prologue + body
    if not isinstance(body[-1], ast.Return):
        fwd.body.append(rewrite.visit_Return(ast.Return(None)))

    bwd = _source_tree(backward, f"{label}.backward")
    bwd.args.args.insert(1, ast.arg(_STATE))
    brewrite = _CtxToLocals(bwd.args.args[0].arg)
    body = [brewrite.visit(stmt) for stmt in bwd.body]
    unknown = [n for n in brewrite.names if n not in state]
    if unknown:
        raise TypeError(f"autograd.Function {label}: backward reads ctx.{unknown[0]}, "
                        f"which forward never sets")
    reads_state = bool(brewrite.names)
    unpack = [_set_local(name, ast.Subscript(ast.Name(_STATE, ast.Load()), ast.Constant(i), ast.Load()))
              for i, name in enumerate(state)] if reads_state else []
    bwd.body = unpack + body
    return (_compile(fwd, forward, f"{label}.forward"), _compile(bwd, backward, f"{label}.backward"),
            len(state) if reads_state else 0)


# ---- graph-mode Cells ----------------------------------------------------------------------
def _needs_input_grad(args: tuple) -> tuple:
    needs = ()
    for arg in args:
        needs = needs + (isinstance(arg, Tensor),)
    return needs


def _input_grads(args: tuple, grads) -> tuple:
    """One gradient per ``apply`` argument: zeros for a tensor without one, 0 for constants."""
    if not isinstance(grads, tuple):
        grads = (grads,)
    out = ()
    for i, arg in enumerate(args):
        grad = grads[i] if i < len(grads) else None
        if isinstance(arg, Tensor):
            out = out + ((ops.zeros_like(arg) if grad is None else grad),)
        else:
            out = out + (0,)
    return out


def _tensor_entries(state: tuple) -> tuple:
    """The tensors of a ctx state (entries, and entries of tuple entries), in order: what a
    graph can return (a process group or a Python number cannot be a graph output)."""
    out = ()
    for entry in state:
        if isinstance(entry, Tensor):
            out = out + (entry,)
        elif isinstance(entry, tuple):
            for item in entry:
                if isinstance(item, Tensor):
                    out = out + (item,)
    return out


def _with_tensors(state: tuple, tensors: tuple) -> tuple:
    """``state`` with its tensors (as :func:`_tensor_entries` lists them) replaced by ``tensors``."""
    out, k = (), 0
    for entry in state:
        if isinstance(entry, Tensor):
            out, k = out + (tensors[k],), k + 1
        elif isinstance(entry, tuple):
            items = ()
            for item in entry:
                if isinstance(item, Tensor):
                    items, k = items + (tensors[k],), k + 1
                else:
                    items = items + (item,)
            out = out + (items,)
        else:
            out = out + (entry,)
    return out


class _Bprop(nn.Cell):
    """Runs the rewritten forward once; ``bprop`` (one fixed arity per subclass) runs the
    rewritten backward on the ctx state that forward returned next to its output."""

    def __init__(self, forward: Callable, backward: Callable, state_size: int):
        super().__init__()
        self.forward_fn, self.backward_fn = forward, backward
        self.state_size = state_size  # 0: backward reads no ctx state, none is returned
        # made here, not in the graph: an object created inside a graph is a runtime
        # Python object, whose uses would cut the gradient
        self.ctx = FunctionCtx()

    def construct(self, *args):
        out, state = self.forward_fn(self.ctx, _needs_input_grad(args), *args)
        if self.state_size:
            return out, _tensor_entries(state)
        return out

    def _bprop(self, args: tuple, out, dout) -> tuple:
        state = ()
        if self.state_size:  # construct's (out, tensor state): the state's own gradient is unused
            out, tensors = out
            dout = dout[0]
            # the state's other values (a group, a dim, a shape: constants of the graph) from
            # forward run again; its tensors are the ones the first run returned
            _, again = self.forward_fn(self.ctx, _needs_input_grad(args), *args)
            state = _with_tensors(again, tensors)
        if isinstance(out, tuple):
            grads = self.backward_fn(self.ctx, state, *dout)
        else:
            grads = self.backward_fn(self.ctx, state, dout)
        return _input_grads(args, grads)


class _Bprop1(_Bprop):
    def bprop(self, a0, out, dout):
        return self._bprop((a0,), out, dout)


class _Bprop2(_Bprop):
    def bprop(self, a0, a1, out, dout):
        return self._bprop((a0, a1), out, dout)


class _Bprop3(_Bprop):
    def bprop(self, a0, a1, a2, out, dout):
        return self._bprop((a0, a1, a2), out, dout)


class _Bprop4(_Bprop):
    def bprop(self, a0, a1, a2, a3, out, dout):
        return self._bprop((a0, a1, a2, a3), out, dout)


class _Bprop5(_Bprop):
    def bprop(self, a0, a1, a2, a3, a4, out, dout):
        return self._bprop((a0, a1, a2, a3, a4), out, dout)


class _Bprop6(_Bprop):
    def bprop(self, a0, a1, a2, a3, a4, a5, out, dout):
        return self._bprop((a0, a1, a2, a3, a4, a5), out, dout)


class _Bprop7(_Bprop):
    def bprop(self, a0, a1, a2, a3, a4, a5, a6, out, dout):
        return self._bprop((a0, a1, a2, a3, a4, a5, a6), out, dout)


class _Bprop8(_Bprop):
    def bprop(self, a0, a1, a2, a3, a4, a5, a6, a7, out, dout):
        return self._bprop((a0, a1, a2, a3, a4, a5, a6, a7), out, dout)


_BPROP_BY_ARITY = (None, _Bprop1, _Bprop2, _Bprop3, _Bprop4, _Bprop5, _Bprop6, _Bprop7, _Bprop8)


class _Apply(nn.Cell):
    """``Function.apply``: PyNative calls go to MindSpore's custom-function node; graph
    mode compiles ``construct``, which picks the bprop Cell of the call's arity."""

    def __init__(self, function: type):
        super().__init__()
        self.function = function
        self.native = type(function.__name__, (_Function,), {
            "forward": function.__dict__["forward"], "backward": function.__dict__["backward"]})
        try:
            forward, backward, state_size = _graph_pair(function)
        except (TypeError, SyntaxError) as error:  # e.g. defined in an interactive session
            self.graph_cells, self.graph_error, self.state_size = None, str(error), 0
        else:
            self.graph_cells = nn.CellList([cls(forward, backward, state_size) for cls in _BPROP_BY_ARITY[1:]])
            self.graph_error = ""
            self.state_size = state_size

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise TypeError(f"{self.function.__name__}.apply takes positional arguments only "
                            f"(got {sorted(kwargs)})")
        if not _run_in_jit():
            return self.native.apply(*args)
        return super().__call__(*args)

    def construct(self, *args):
        if self.graph_cells is None:
            raise TypeError(self.graph_error)
        if len(args) > MAX_ARITY:
            raise TypeError("autograd.Function.apply in graph mode takes at most 8 arguments")
        out = self.graph_cells[len(args) - 1](*args)
        if self.state_size:
            return out[0]
        return out


class Function:
    """Base class of custom autograd functions (``forward``/``backward`` staticmethods)."""

    apply: Callable[..., Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__ and "backward" in cls.__dict__:
            cls.apply = _Apply(cls)

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("autograd.Function subclasses must define forward")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("autograd.Function subclasses must define backward")
