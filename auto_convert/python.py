"""Torch-style Python -> adapters-bound Python, with libcst.

Every rewrite keeps the line count of the construct it replaces (a shorter replacement
is padded inside parentheses), so tracebacks and MindSpore's graph-compiler errors point
at the original line. Names are resolved with libcst's scope analysis: a local variable
called `torch`, an attribute `self.torch`, strings and comments are never rewritten.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import libcst as cst
import libcst.matchers as matchers
from libcst.metadata import (
    GlobalScope,
    MetadataWrapper,
    PositionProvider,
    QualifiedNameSource,
    ScopeProvider,
)

from auto_convert import rules
from auto_convert.grad_mode import GradModeRewrite
from auto_convert.report import Change, FileReport, Unconverted

_EMPTY = cst.Module(body=[])
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float,
          cst.SimpleString, cst.Tuple, cst.List, cst.Dict, cst.ConcatenatedString)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _code(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)


def _atom(node: cst.BaseExpression) -> str:
    """Code of `node`, parenthesized when it would not bind as one operand."""
    code = _code(node)
    return code if isinstance(node, _ATOMS) or node.lpar else f"({code})"


def _arg_code(arg: cst.Arg) -> str:
    return _code(arg.with_changes(comma=cst.MaybeSentinel.DEFAULT)).strip()


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    raise TypeError(type(node).__name__)


def _snippet(code: str) -> str:
    line = " ".join(code.split())
    return line if len(line) <= 100 else line[:97] + "..."


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def render(template: str, values: dict[str, str | cst.BaseExpression]) -> str:
    """Fill `{name}` placeholders with code; a node followed by `.`, `[` or `(` is
    parenthesized if it needs to be. `, {args}` disappears when there are no arguments."""
    if values.get("args") == "":
        template = template.replace(", {args}", "").replace("{args}, ", "")

    def fill(m: re.Match) -> str:
        value = values[m.group(1)]
        if isinstance(value, str):
            return value
        return _atom(value) if template[m.end():m.end() + 1] in (".", "[", "(") else _code(value)

    return _PLACEHOLDER.sub(fill, template)


class _Skip(Exception):
    """A rule matched but cannot apply here; the message says why."""


class TorchToAdapters(GradModeRewrite, cst.CSTTransformer):
    METADATA_DEPENDENCIES = (ScopeProvider, PositionProvider)

    def __init__(self, report: FileReport) -> None:
        super().__init__()
        self.report = report
        self.torch_alias: str | None = None
        self.torch_code = False  # the module imports torch: tensor-method rules apply
        self._global: GlobalScope | None = None
        self._handled: set[int] = set()  # ids of original reference chains a rule consumes
        self._imported: set[str] = set()  # every name an import binds, in any scope
        self._none_calls: set[int] = set()  # ids of `None` nodes that replaced a whole call
        self._path: list[cst.CSTNode] = []  # original nodes from the module to the current one
        self._init_grad_mode()

    # the path gives parents (cheaper than ParentNodeProvider, which is a pass of its own)
    def on_visit(self, node: cst.CSTNode) -> bool:
        self._path.append(node)
        return super().on_visit(node)

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        result = super().on_leave(original, updated)
        self._path.pop()
        return result

    def _parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        """Parent of `node`, the node being visited or left."""
        assert self._path[-1] is node
        return self._path[-2] if len(self._path) > 1 else None

    # -- bookkeeping ---------------------------------------------------------------------

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _changed(self, original: cst.CSTNode, new: cst.CSTNode, rule: str, why: str) -> None:
        self.report.changes.append(Change(self._line(original), rule, _snippet(_code(original)),
                                          _snippet(_code(new)), why))

    def _unconverted(self, node: cst.CSTNode, reason: str) -> None:
        self.report.unconverted.append(Unconverted(self._line(node), _snippet(_code(node)),
                                                   reason))

    def _qualname(self, node: cst.CSTNode) -> str | None:
        """Imported dotted name of `node` (`adapters.torch.X` read as `torch.X`), else None."""
        root = node
        while isinstance(root, cst.Attribute):
            root = root.value
        if not isinstance(root, cst.Name) or root.value not in self._imported:
            return None  # cheap filter: resolving names through scopes is the slow part
        scope = self.get_metadata(ScopeProvider, node, None)
        for q in scope.get_qualified_names_for(node) if scope is not None else ():
            if q.source is QualifiedNameSource.IMPORT:
                name = q.name
                return name[len(rules.ADAPTERS) + 1:] if _under(name, "adapters.torch") else name
        return None

    def _is_module_ref(self, node: cst.BaseExpression) -> bool:
        return isinstance(node, (cst.Name, cst.Attribute)) and self._qualname(node) is not None

    def _torch(self, node: cst.CSTNode) -> str:
        """The name bound to adapters.torch at `node`, or _Skip."""
        alias = self.torch_alias
        if alias is None:
            raise _Skip("the module has no module-level `import torch` to bind the rewrite to")
        scope = self.get_metadata(ScopeProvider, node, None)
        if scope is not None and any(a.scope is not self._global for a in scope[alias]):
            raise _Skip(f"`{alias}` is shadowed by a local name here")
        return alias

    def _torch_or_report(self, node: cst.CSTNode) -> str | None:
        """`_torch(node)`, or None after reporting `node` as unconverted."""
        try:
            return self._torch(node)
        except _Skip as skip:
            self._unconverted(node, str(skip))
            return None

    def _expression(self, original: cst.CSTNode, code: str) -> cst.BaseExpression:
        """Parse `code`, padded inside parentheses to keep the line count of `original`."""
        missing = _code(original).count("\n") - code.count("\n")
        if missing < 0:
            raise _Skip("the rewrite would add lines")
        if missing:
            code = f"({code}{chr(10) * missing})"
        return cst.parse_expression(code)

    # -- module --------------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        self._global = self.get_metadata(ScopeProvider, node)
        self._imported = {_bound_name(alias) for alias in matchers.findall(node, matchers.ImportAlias())}
        bound = set()
        for assignment in self._global.assignments:
            imp = assignment.node
            if isinstance(imp, cst.ImportFrom) and imp.module is not None and not imp.relative:
                module = _dotted(imp.module)
                self.torch_code |= _under(module, "torch") or _under(module, "adapters.torch")
            if not isinstance(imp, cst.Import):
                continue
            for alias in imp.names:
                name = _dotted(alias.name)
                self.torch_code |= _under(name, "torch") or _under(name, "adapters.torch")
                if alias.asname is not None:
                    if name in ("torch", "adapters.torch") and \
                            alias.asname.name.value == assignment.name:
                        bound.add(assignment.name)
                elif _under(name, "torch") and rules.unsupported_reason(name) is None \
                        and assignment.name == "torch":
                    bound.add("torch")
        self.torch_alias = "torch" if "torch" in bound else min(bound, default=None)

    # -- imports -------------------------------------------------------------------------

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def leave_Import(self, original: cst.Import, updated: cst.Import):
        names: list[cst.ImportAlias] = []
        changed = vendor = False
        for alias in updated.names:
            name = _dotted(alias.name)
            root = name.split(".")[0]
            if root == "torch":
                reason = rules.unsupported_reason(name)
                if reason is not None:
                    self._unconverted(original, f"`{name}`: {reason}")
                    names.append(alias)
                    continue
                changed = True
                target = cst.parse_expression(f"{rules.ADAPTERS}.{name}")
                if alias.asname is not None:
                    names.append(cst.ImportAlias(name=target, asname=alias.asname))
                else:  # `import torch.nn` binds `torch`, used as `torch.nn.X`
                    if name != "torch":
                        names.append(cst.ImportAlias(name=target))
                    names.append(cst.ImportAlias(
                        name=cst.parse_expression(f"{rules.ADAPTERS}.torch"),
                        asname=cst.AsName(name=cst.Name("torch"))))
            elif root in rules.VENDOR_PACKAGES:
                vendor = changed = True  # uses are rewritten or reported where they occur
            else:
                names.append(alias)
        if not changed:
            return updated
        if not names:
            new: cst.BaseSmallStatement = cst.Pass(semicolon=updated.semicolon)
        else:
            names = [n.with_changes(comma=cst.MaybeSentinel.DEFAULT) for n in names]
            new = updated.with_changes(names=names)
        if _code(new).count("\n") != _code(original).count("\n"):
            self._unconverted(original, "import split over lines with `\\` is not rewritten")
            return updated
        if vendor:
            self._changed(original, new, "vendor.import",
                          "vendor imports are replaced by their adapters equivalents")
        else:
            self._changed(original, new, "import", "torch modules are provided by adapters.torch")
        return new

    def leave_ImportFrom(self, original: cst.ImportFrom, updated: cst.ImportFrom):
        if original.relative or original.module is None:
            return updated
        module = _dotted(updated.module)
        root = module.split(".")[0]
        if root == "torch":
            return self._torch_from_import(original, updated, module)
        if root in rules.VENDOR_PACKAGES:
            return self._vendor_from_import(original, updated, module)
        return updated

    def _torch_from_import(self, original: cst.ImportFrom, updated: cst.ImportFrom,
                           module: str):
        target = cst.parse_expression(f"{rules.ADAPTERS}.{module}")
        if isinstance(updated.names, cst.ImportStar):
            reason = rules.unsupported_reason(module)
            if reason:
                self._unconverted(original, f"`{module}`: {reason}")
                return updated
            new = updated.with_changes(module=target)
            self._changed(original, new, "import", "torch modules are provided by adapters.torch")
            return new
        keep, move = [], []
        for alias in updated.names:
            reason = rules.unsupported_reason(f"{module}.{_dotted(alias.name)}")
            (keep if reason else move).append(alias)
            if reason:
                self._unconverted(original, f"`{module}.{_dotted(alias.name)}`: {reason}")
        if not move:
            return updated
        if not keep:
            new = updated.with_changes(module=target)
        else:
            new = cst.FlattenSentinel([
                cst.ImportFrom(module=target, names=_fresh_commas(move)),
                updated.with_changes(names=_fresh_commas(keep)),
            ])
            if sum(_code(s).count("\n") for s in new.nodes) != _code(original).count("\n"):
                self._unconverted(original, "multi-line import mixing supported and "
                                            "unsupported names is not split")
                return updated
        shown = new if isinstance(new, cst.ImportFrom) else new.nodes[0]
        self._changed(original, shown, "import", "torch modules are provided by adapters.torch")
        return new

    def _vendor_from_import(self, original: cst.ImportFrom, updated: cst.ImportFrom,
                            module: str):
        groups: dict[str, list[cst.ImportAlias]] = {}
        if not isinstance(updated.names, cst.ImportStar):
            for alias in updated.names:
                name = _dotted(alias.name)
                vc = rules.VENDOR_CLASSES.get(f"{module}.{name}")
                if vc is None:
                    continue  # dropped; its uses are reported where they occur
                package, _, cls = f"{rules.ADAPTERS}.torch.{vc.target}".rpartition(".")
                asname = alias.asname or cst.AsName(name=cst.Name(name))
                if cls == (alias.asname.name.value if alias.asname else name):
                    asname = None
                groups.setdefault(package, []).append(cst.ImportAlias(name=cst.Name(cls),
                                                                      asname=asname))
        statements = [cst.ImportFrom(module=cst.parse_expression(package),
                                     names=_fresh_commas(aliases))
                      for package, aliases in groups.items()]
        if not statements:
            statements = [cst.Pass()]
        statements[-1] = statements[-1].with_changes(semicolon=updated.semicolon)
        new = statements[0] if len(statements) == 1 else cst.FlattenSentinel(statements)
        lines = sum(_code(s).count("\n") for s in statements)
        if lines != _code(original).count("\n"):
            self._unconverted(original, "multi-line vendor import is not rewritten")
            return updated
        self._changed(original, statements[0], "vendor.import",
                      "vendor imports are replaced by their adapters equivalents")
        return new

    # -- references that no rule covers --------------------------------------------------

    def _outermost(self, node: cst.CSTNode) -> bool:
        parent = self._parent(node)
        return not (isinstance(parent, cst.Attribute) and parent.value is node)

    def _check_reference(self, node: cst.BaseExpression) -> None:
        if id(node) in self._handled or not self._outermost(node):
            return
        name = self._qualname(node)
        if name is None:
            return
        if name.split(".")[0] in rules.VENDOR_PACKAGES:
            self._unconverted(node, f"`{name}`: {rules.VENDOR_WHY}")
            return
        reason = rules.unsupported_reason(name)
        if reason is not None:
            self._unconverted(node, f"`{name}`: {reason}")
        elif name in rules.FAILING_APIS:
            self._unconverted(node, rules.FAILING_APIS[name])

    def visit_Name(self, node: cst.Name) -> None:
        self._check_reference(node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._check_reference(node)

    # -- calls ---------------------------------------------------------------------------

    def visit_Call(self, node: cst.Call) -> None:
        name = self._qualname(node.func) if isinstance(node.func, (cst.Name, cst.Attribute)) \
            else None
        if name is None:
            return
        parts = name.split(".")
        if (len(parts) == 3 and parts[0] == "torch" and parts[1] in rules.ACCELERATOR_MODULES
                and parts[2] in rules.ACCELERATOR_CALLS) or name in rules.VENDOR_CLASSES \
                or name in rules.VENDOR_FUNCTIONS:
            self._handled.add(id(node.func))

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        try:
            new, rule, why = self._rewrite_call(original, updated)
        except _Skip as skip:
            self._unconverted(original, str(skip))
            return updated
        if new is None:
            return updated
        self._changed(original, new, rule, why)
        return new

    def _rewrite_call(self, original: cst.Call, updated: cst.Call):
        func = original.func
        name = self._qualname(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        if name is not None:
            return self._rewrite_imported_call(original, updated, name)
        if isinstance(func, cst.Attribute) and self.torch_code \
                and not self._is_module_ref(func.value):
            failing = rules.FAILING_APIS.get(f"Tensor.{func.attr.value}")
            if failing is not None:
                self._unconverted(original, failing)
            return self._rewrite_method(original, updated, func.attr.value)
        return None, "", ""

    def _rewrite_imported_call(self, original: cst.Call, updated: cst.Call, name: str):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "torch" and parts[1] in rules.ACCELERATOR_MODULES:
            entry = rules.ACCELERATOR_CALLS.get(parts[2])
            if entry is None:
                return None, "", ""  # reported as an unsupported reference
            template, why = entry
            values = {"args": _args_code(updated.args)}
            if "{root}" in template:  # `torch` in `torch.cuda.X`
                func = updated.func
                values["root"] = _code(func.value.value) if isinstance(func, cst.Attribute) \
                    and isinstance(func.value, cst.Attribute) else self._torch(original)
            code = render(template, values)
            new = self._expression(original, code)
            if isinstance(new, cst.Name) and new.value == "None":
                self._none_calls.add(id(new))
            return new, f"{parts[1]}.{parts[2]}", why
        if name in rules.VENDOR_CLASSES:
            return self._vendor_class(original, updated, rules.VENDOR_CLASSES[name], name)
        if name in rules.VENDOR_FUNCTIONS:
            parent = self._parent(original)
            if not _is_first_item(parent, original):
                raise _Skip(f"`{name}` is only rewritten as `{name.split('.')[-1]}(...)[0]`")
            return None, "", ""  # rewritten in leave_Subscript
        if parts[0] == "torch" and any(a.keyword and a.keyword.value == "device"
                                       for a in updated.args):
            kept = [a for a in updated.args if not (a.keyword and a.keyword.value == "device")]
            code = _code(updated.with_changes(args=_fix_last_comma(kept, updated.args)))
            return self._expression(original, code), "device.keyword", rules.DEVICE_WHY
        return None, "", ""

    def _rewrite_method(self, original: cst.Call, updated: cst.Call, method: str):
        receiver = updated.func.value
        values: dict = {"self": receiver}
        if method in rules.DEVICE_METHODS:
            return self._expression(original, _code(receiver)), f"device.{method}", \
                rules.DEVICE_WHY
        if method == "to":
            return self._rewrite_to(original, updated)
        if method in rules.DIM_KEYWORD_METHODS:
            return self._dim_keyword(original, updated, method)
        candidates = [r for r in rules.METHOD_RULES if r.method == method]
        positional = [a for a in updated.args if a.keyword is None and not a.star]
        rule = next((r for r in candidates if r.arity is None or (
            r.arity == len(updated.args) == len(positional))), None)
        if rule is not None and rule.statement:
            parent = self._parent(original)
            if not (isinstance(parent, cst.Expr) and isinstance(receiver, cst.Name)
                    and self._bound_here(original.func.value)):
                rule = None  # a value, an attribute, an outer name: the functional form
                # (tensor_methods) writes in place
            else:
                return None, "", ""  # rewritten in leave_Expr
        if rule is None:
            if method in rules.TORCH_ARITY_ONLY and candidates:
                return None, "", ""
            if method in rules.TENSOR_METHODS:
                return self._tensor_method(original, updated, method)
            if candidates:
                raise _Skip(f"`.{method}(...)` with these arguments matches no rule")
            if _looks_inplace(method) and method not in rules.KEPT_INPLACE:
                raise _Skip(f"in-place method `{method}` has no functional rule")
            return None, "", ""
        values.update({str(i): a.value for i, a in enumerate(positional)})
        values["args"] = _args_code(updated.args)
        if "{torch}" in rule.template:
            values["torch"] = self._torch(original)
        return self._expression(original, render(rule.template, values)), rule.rule_id, rule.why

    def _bound_here(self, name: cst.Name) -> bool:
        """`name` is assigned in the scope where it is used (rebinding it keeps it local)."""
        scope = self.get_metadata(ScopeProvider, name)
        return any(a.scope is scope for a in scope[name.value])

    def _tensor_method(self, original: cst.Call, updated: cst.Call, method: str):
        values = {"self": updated.func.value, "args": _args_code(updated.args),
                  "torch": self._torch(original), "method": method}
        code = render(rules.TENSOR_METHOD_TEMPLATE, values)
        return self._expression(original, code), f"tensor_method.{method}", \
            rules.TENSOR_METHOD_WHY.format(method)

    def _rewrite_to(self, original: cst.Call, updated: cst.Call):
        kept = [a for a, o in zip(updated.args, original.args) if not self._is_device_arg(o)]
        if len(kept) == len(updated.args):
            return None, "", ""
        if not kept:
            code = _code(updated.func.value)
        else:
            code = _code(updated.with_changes(args=_fix_last_comma(kept, updated.args)))
        return self._expression(original, code), "device.to", rules.DEVICE_WHY

    def _is_device_arg(self, arg: cst.Arg) -> bool:
        if arg.keyword is not None:
            return arg.keyword.value in ("device", "non_blocking")
        value = arg.value
        if isinstance(value, cst.SimpleString):
            text = value.evaluated_value
            return isinstance(text, str) and text.split(":")[0] in rules.DEVICE_STRINGS
        if isinstance(value, cst.Name):
            return value.value in ("device", "dev") or value.value.endswith("_device")
        if isinstance(value, cst.Attribute):
            return value.attr.value == "device" or value.attr.value.endswith("_device")
        if isinstance(value, cst.Call) and isinstance(value.func, (cst.Name, cst.Attribute)):
            name = self._qualname(value.func) or ""
            return name in ("torch.device", "torch.cuda.current_device",
                            "torch.npu.current_device")
        return False

    def _dim_keyword(self, original: cst.Call, updated: cst.Call, method: str):
        position = rules.DIM_KEYWORD_METHODS[method]
        args = list(updated.args)
        dims = [i for i, a in enumerate(args) if a.keyword and a.keyword.value == "dim"]
        positional = [a for a in args if a.keyword is None]
        if not dims or len(positional) != position or len(args) != position + 1:
            return None, "", ""
        args[dims[0]] = args[dims[0]].with_changes(
            keyword=None, equal=cst.MaybeSentinel.DEFAULT)
        code = _code(updated.with_changes(args=args))
        return self._expression(original, code), f"method.{method}", \
            rules._DIM_KW_WHY.format(method)

    def _vendor_class(self, original: cst.Call, updated: cst.Call, vc: rules.VendorClass,
                      name: str):
        positional = [a for a in updated.args if a.keyword is None]
        if any(a.star for a in updated.args) or len(positional) > vc.positional:
            raise _Skip(f"`{name}` called with arguments beyond its adapters equivalent")
        kept = []
        for arg in updated.args:
            keyword = arg.keyword.value if arg.keyword else None
            if keyword in vc.dropped:
                continue
            if keyword is not None and keyword not in vc.keywords:
                raise _Skip(f"`{name}` argument `{keyword}` has no adapters equivalent")
            kept.append(_arg_code(arg))
        given = {a.keyword.value for a in updated.args if a.keyword}
        kept += [f"{k}={v}" for k, v in vc.defaults if k not in given]
        if isinstance(original.func, cst.Name):  # bound to the adapters class by its import
            func = _code(updated.func)
        else:
            func = f"{self._torch(original)}.{vc.target}"
        code = f"{func}({', '.join(kept)})"
        return self._expression(original, code), f"vendor.{name}", vc.why

    # -- statements and subscripts -------------------------------------------------------

    def leave_Expr(self, original: cst.Expr, updated: cst.Expr):
        if id(updated.value) in self._none_calls:
            return cst.Pass(semicolon=updated.semicolon)
        call = original.value
        if not (self.torch_code and isinstance(call, cst.Call)
                and isinstance(call.func, cst.Attribute)
                and isinstance(call.func.value, cst.Name)
                and not self._is_module_ref(call.func.value)):
            return updated
        method = call.func.attr.value
        rule = next((r for r in rules.METHOD_RULES if r.statement and r.method == method
                     and (r.arity is None or r.arity == len(call.args))), None)
        if rule is None or not self._bound_here(call.func.value):
            return updated  # leave_Call gave other receivers the in-place functional form
        new_call = updated.value
        receiver = call.func.value.value
        try:
            positional = [a for a in new_call.args if a.keyword is None]
            values = {"self": receiver, "args": _args_code(new_call.args),
                      **{str(i): a.value for i, a in enumerate(positional)}}
            if "{torch}" in rule.template:
                values["torch"] = self._torch(original)
            target, _, value = render(rule.template, values).partition(" = ")
            value_node = self._expression(call, value)
        except _Skip as skip:
            self._unconverted(original, str(skip))
            return updated
        new = cst.Assign(targets=[cst.AssignTarget(target=cst.Name(target))], value=value_node,
                         semicolon=updated.semicolon)
        self._changed(original, new, rule.rule_id, rule.why)
        return new

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript):
        call = original.value
        if not (isinstance(call, cst.Call) and isinstance(call.func, (cst.Name, cst.Attribute))
                and _is_first_item(original, call)):
            return updated
        name = self._qualname(call.func)
        if name not in rules.VENDOR_FUNCTIONS:
            return updated
        handler_name, why = rules.VENDOR_FUNCTIONS[name]
        try:
            torch = self._torch(original)
            code = _VENDOR_HANDLERS[handler_name](updated.value.args, torch)
            new = self._expression(original, code)
        except _Skip as skip:
            self._unconverted(original, f"`{name}`: {skip}")
            return updated
        self._changed(original, new, f"vendor.{name}", why)
        return new

    def leave_BinaryOperation(self, original: cst.BinaryOperation, updated: cst.BinaryOperation):
        if not isinstance(original.operator, cst.Multiply):
            return updated
        found = self._fused_product(original, updated) or self._quick_gelu(original, updated)
        if found is None:
            return updated  # correct as written, only not fused
        code, target, why = found
        try:
            new = self._expression(original, f"{self._torch(original)}.{target}({code})")
        except _Skip:
            return updated
        self._changed(original, new, f"fused.{target.rsplit('.', 1)[-1]}", why)
        return new

    def _fused_product(self, original: cst.BinaryOperation, updated: cst.BinaryOperation):
        """`F.silu(a) * b` -> (arguments, target, why), else None."""
        call = original.left
        if not (isinstance(call, cst.Call) and isinstance(call.func, (cst.Name, cst.Attribute))
                and self._qualname(call.func) in rules.FUSED_PRODUCTS):
            return None
        args = updated.left.args if isinstance(updated.left, cst.Call) else ()
        if len(args) != 1 or args[0].keyword is not None or args[0].star:
            return None
        target, why = rules.FUSED_PRODUCTS[self._qualname(call.func)]
        return f"{_arg_code(args[0])}, {_code(updated.right)}", target, why

    def _quick_gelu(self, original: cst.BinaryOperation, updated: cst.BinaryOperation):
        """`x * torch.sigmoid(1.702 * x)` (`x` a name or attribute) -> (arguments, target, why)."""
        x, call = original.left, original.right
        if not (isinstance(x, (cst.Name, cst.Attribute)) and isinstance(call, cst.Call)
                and isinstance(call.func, (cst.Name, cst.Attribute))
                and self._qualname(call.func) in rules.SIGMOIDS and len(call.args) == 1):
            return None
        scaled = call.args[0].value
        if not (call.args[0].keyword is None and not call.args[0].star
                and isinstance(scaled, cst.BinaryOperation) and isinstance(scaled.operator, cst.Multiply)
                and isinstance(scaled.left, cst.Float) and scaled.left.value == rules.QUICK_GELU_SCALE
                and _code(scaled.right) == _code(x)):
            return None
        target, why = rules.QUICK_GELU
        return _code(updated.left), target, why

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        if original.attr.value != "is_cuda" or self._is_module_ref(original.value):
            return updated
        parent = self._parent(original)
        if isinstance(parent, cst.Call) and parent.func is original:
            return updated
        new = self._expression(original, "False")
        self._changed(original, new, "device.is_cuda", rules.DEVICE_WHY)
        return new


def _bound_name(alias: cst.ImportAlias) -> str:
    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
        return alias.asname.name.value
    return _dotted(alias.name).split(".")[0]


def _fresh_commas(aliases: Sequence[cst.ImportAlias]) -> list[cst.ImportAlias]:
    return [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in aliases]


def _fix_last_comma(kept: list[cst.Arg], original: Sequence[cst.Arg]) -> list[cst.Arg]:
    """After dropping arguments, the last kept one takes the comma style of the last one."""
    if kept and kept[-1] is not original[-1]:
        kept = kept[:-1] + [kept[-1].with_changes(comma=original[-1].comma)]
    return kept


def _args_code(args: Sequence[cst.Arg]) -> str:
    return ", ".join(_arg_code(a) for a in args)


def _looks_inplace(method: str) -> bool:
    return method.endswith("_") and not method.startswith("_") and not method.endswith("__")


def _is_first_item(parent: cst.CSTNode | None, call: cst.Call) -> bool:
    """`parent` is `call[0]`."""
    if not (isinstance(parent, cst.Subscript) and parent.value is call
            and len(parent.slice) == 1):
        return False
    index = parent.slice[0].slice
    return isinstance(index, cst.Index) and isinstance(index.value, cst.Integer) \
        and index.value.value == "0"


def _bind(args: Sequence[cst.Arg], names: Sequence[str]) -> dict[str, cst.BaseExpression]:
    """Match call arguments to a signature's parameter names."""
    bound: dict[str, cst.BaseExpression] = {}
    for i, arg in enumerate(args):
        if arg.star:
            raise _Skip("star-arguments are not rewritten")
        key = arg.keyword.value if arg.keyword else (names[i] if i < len(names) else None)
        if key not in names:
            raise _Skip(f"argument `{key or i}` is not rewritten")
        bound[key] = arg.value
    return bound


def _rms_norm(args: Sequence[cst.Arg], torch: str) -> str:
    bound = _bind(args, ("self", "gamma", "epsilon"))
    x, gamma = _atom(bound["self"]), _atom(bound["gamma"])
    eps = _code(bound["epsilon"]) if "epsilon" in bound else "1e-6"
    return f"{torch}.nn.functional.rms_norm({x}, {gamma}.shape, {gamma}, {eps})"


_FA_PARAMS = ("query", "key", "value", "head_num", "input_layout", "pse", "padding_mask",
              "atten_mask", "scale", "keep_prob", "pre_tockens", "next_tockens",
              "inner_precise", "prefix", "actual_seq_qlen", "actual_seq_kvlen", "sparse_mode")


def _fusion_attention(args: Sequence[cst.Arg], torch: str) -> str:
    bound = _bind(args, _FA_PARAMS)
    layout = bound.get("input_layout")
    if not (isinstance(layout, cst.SimpleString) and layout.evaluated_value == "BNSD"):
        raise _Skip("only input_layout=\"BNSD\" maps to scaled_dot_product_attention")
    for key in ("pse", "padding_mask", "prefix", "actual_seq_qlen", "actual_seq_kvlen"):
        if key in bound and not (isinstance(bound[key], cst.Name)
                                 and bound[key].value == "None"):
            raise _Skip(f"`{key}` has no scaled_dot_product_attention equivalent")
    for key in ("pre_tockens", "next_tockens", "inner_precise", "sparse_mode"):
        if key in bound and not (key in ("inner_precise", "sparse_mode")
                                 and isinstance(bound[key], cst.Integer)
                                 and bound[key].value == "0"):
            raise _Skip(f"`{key}` has no scaled_dot_product_attention equivalent")
    parts = [_code(bound["query"]), _code(bound["key"]), _code(bound["value"])]
    if "atten_mask" in bound:  # NPU masks mark the positions to drop; SDPA's the ones to keep
        parts.append(f"attn_mask={torch}.logical_not({_code(bound['atten_mask'])})")
    if "keep_prob" in bound and _code(bound["keep_prob"]) not in ("1", "1.0"):
        parts.append(f"dropout_p=1.0 - {_atom(bound['keep_prob'])}")
    if "scale" in bound:
        parts.append(f"scale={_code(bound['scale'])}")
    return f"{torch}.nn.functional.scaled_dot_product_attention({', '.join(parts)})"


_VENDOR_HANDLERS: dict[str, Callable[[Sequence[cst.Arg], str], str]] = {
    "rms_norm": _rms_norm,
    "fusion_attention": _fusion_attention,
}


def convert_python(source: str, path: str = "<string>") -> tuple[str, FileReport]:
    """Convert one Python source; returns the new source and what was (not) done."""
    report = FileReport(path=path, kind="python")
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as err:
        report.error = f"{path}:{err.raw_line}:{err.raw_column}: {err.message}"
        return source, report
    converted = MetadataWrapper(module, unsafe_skip_copy=True).visit(TorchToAdapters(report)).code
    if converted.count("\n") != source.count("\n"):  # a rule broke the line-count contract
        raise AssertionError(f"auto_convert changed the line count of {path}")
    report.changes.sort(key=lambda c: c.line)
    report.unconverted.sort(key=lambda u: u.line)
    return converted, report
