"""The grad-mode rewrite of `auto_convert.python`: inside `with torch.no_grad():` (and the
other ways of switching gradients off, `rules.GRAD_OFF` / `rules.GRAD_SET`), every value
assigned or returned is wrapped in `torch.autograd.grad_mode.no_grad_value(...)`, which stops
its gradient. PyNative needs no rewrite (the managers switch recording off); graph mode
compiles the managers as no-ops and would differentiate through the block.

A nested `with torch.enable_grad():` (or `set_grad_enabled(True)`) switches it back on; a
nested function runs whenever it is called, so its body follows its own decorators only.
"""
from __future__ import annotations

import libcst as cst

from auto_convert import rules

_CODE = cst.Module(body=[])
_CONSTANTS = (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)


class GradModeRewrite:
    """Mixin of the converter (`TorchToAdapters`): tracks the grad mode of each statement."""

    def _init_grad_mode(self) -> None:
        self._grad_modes: list[tuple[int, bool]] = []  # (id of the with/def node, enabled)

    def _grad_switch(self, call: cst.BaseExpression) -> bool | None:
        """False for a call switching gradients off, True for one switching them on."""
        if not isinstance(call, cst.Call) or not isinstance(call.func, (cst.Name, cst.Attribute)):
            return None
        name = self._qualname(call.func)
        if name in rules.GRAD_OFF:
            return _literal(call.args[0].value) is False if call.args else False
        if name in rules.GRAD_ON:
            return True
        if name in rules.GRAD_SET and call.args:
            return _literal(call.args[0].value)
        return None

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:
            enabled = self._grad_switch(item.item)
            if enabled is not None:
                self._grad_modes.append((id(node), enabled))

    def leave_With(self, original: cst.With, updated: cst.With) -> cst.With:
        while self._grad_modes and self._grad_modes[-1][0] == id(original):
            self._grad_modes.pop()
        return updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        modes = [self._grad_switch(d.decorator) for d in node.decorators]
        enabled = next((m for m in reversed(modes) if m is not None), True)
        self._grad_modes.append((id(node), enabled))

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        self._grad_modes.pop()
        return updated

    def _grad_off(self) -> bool:
        return bool(self._grad_modes) and not self._grad_modes[-1][1]

    def _no_grad_value(self, original: cst.CSTNode, value: cst.BaseExpression | None):
        """`value` wrapped in no_grad_value, or None where no wrapping applies."""
        if value is None or not self._grad_off() or _is_no_grad_value(value):
            return None
        if isinstance(value, _CONSTANTS) or isinstance(value, cst.Name) and value.value == "None":
            return None
        torch = self._torch_or_report(original)
        if torch is None:
            return None
        code = _CODE.code_for_node(value)
        if isinstance(value, cst.Tuple) and not value.lpar:
            code = f"({code})"
        return cst.parse_expression(f"{torch}.{rules.NO_GRAD_FUNCTION}({code})")

    def _wrap_value(self, original, updated):
        new_value = self._no_grad_value(original, updated.value)
        if new_value is None:
            return updated
        new = updated.with_changes(value=new_value)
        self._changed(original, new, "grad_mode.no_grad", rules.NO_GRAD_WHY)
        return new

    def leave_Assign(self, original: cst.Assign, updated: cst.Assign):
        return self._wrap_value(original, updated)

    def leave_AnnAssign(self, original: cst.AnnAssign, updated: cst.AnnAssign):
        return self._wrap_value(original, updated)

    def leave_AugAssign(self, original: cst.AugAssign, updated: cst.AugAssign):
        return self._wrap_value(original, updated)

    def leave_Return(self, original: cst.Return, updated: cst.Return):
        return self._wrap_value(original, updated)


def _literal(node: cst.BaseExpression) -> bool | None:
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


def _is_no_grad_value(value: cst.BaseExpression) -> bool:
    return isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) \
        and value.func.attr.value == rules.NO_GRAD_FUNCTION.rsplit(".", 1)[-1]
