"""The Python rewrite rules: one before/after pair per rule, scope-awareness, idempotence,
line numbers, and the report's content."""
import textwrap
from pathlib import Path

import pytest

from auto_convert import convert_python, rules
from auto_convert.hook import preconvert

HEADER = "import torch\n"

# (torch-style line, expected line, rule id); each line is converted with HEADER above it.
CASES = [
    ("import torch.nn as nn", "import adapters.torch.nn as nn", "import"),
    ("import torch.nn", "import adapters.torch.nn, adapters.torch as torch", "import"),
    ("import torch as th", "import adapters.torch as th", "import"),
    ("from torch import nn", "from adapters.torch import nn", "import"),
    ("import torch.nn.functional as F", "import adapters.torch.nn.functional as F", "import"),
    ("from torch.utils.checkpoint import checkpoint",
     "from adapters.torch.utils.checkpoint import checkpoint", "import"),
    ("import torch.distributed as dist", "import adapters.torch.distributed as dist", "import"),
    ("y = x.transpose(1, 2)", "y = torch.transpose(x, 1, 2)", "method.transpose"),
    ("y = x.transpose(-2, -1)", "y = torch.transpose(x, -2, -1)", "method.transpose"),
    ("n = x.size()", "n = x.shape", "method.size"),
    ("n = x.size(-1) + 1", "n = x.shape[-1] + 1", "method.size"),
    ("y = x.type_as(a + b)", "y = x.to((a + b).dtype)", "method.type_as"),
    ("y = (a + b).contiguous() * 2", "y = (a + b) * 2", "method.contiguous"),
    ("y = x.new_zeros((2, 3))", "y = torch.zeros((2, 3), dtype=x.dtype)", "method.new_zeros"),
    ("y = x.std(-1)", "y = torch.std(x, -1)", "method.std"),
    ("y = x.expand(b, -1, -1)", "y = torch.broadcast_to(x, (b, -1, -1))", "method.expand"),
    ("y = x.expand(shape)", "y = torch.broadcast_to(x, shape)", "method.expand"),
    ("p = torch.arange(l).unsqueeze(0).expand(b, l)",  # receiver starting with a torch. call
     "p = torch.broadcast_to(torch.arange(l).unsqueeze(0), (b, l))", "method.expand"),
    ("a, b = x.chunk(2, dim=-1)", "a, b = x.chunk(2, -1)", "method.chunk"),
    ("x = g(); x.masked_fill_(m, 0.0)", "x = g(); x = torch.masked_fill(x, m, 0.0)",
     "method.masked_fill_"),
    ("x = g(); x.add_(y, alpha=2)", "x = g(); x = torch.add(x, y, alpha=2)", "method.add_"),
    ("x = g(); x.zero_()  # reset", "x = g(); x = torch.zeros_like(x)  # reset", "method.zero_"),
    ("y = torch.nn.functional.silu(g(x)) * u(x)", "y = torch.nn.functional.silu_mul(g(x), u(x))",
     "fused.silu_mul"),
    ("y = torch.nn.functional.silu(a) * (b + 1) * 2", "y = torch.nn.functional.silu_mul(a, (b + 1)) * 2",
     "fused.silu_mul"),
    ("y = x * torch.sigmoid(1.702 * x)", "y = torch.nn.functional.quick_gelu(x)", "fused.quick_gelu"),
    ("y = x.cuda()", "y = x", "device.cuda"),
    ("y = x.npu(0)", "y = x", "device.npu"),
    ("y = x.cpu().numpy()", "y = x.numpy()", "device.cpu"),
    ('y = x.to("cuda:0")', "y = x", "device.to"),
    ("y = x.to(device, non_blocking=True)", "y = x", "device.to"),
    ("y = x.to(self.device, dtype)", "y = x.to(dtype)", "device.to"),
    ('y = x.to(torch.device("cuda"))', "y = x", "device.to"),
    ("flag = x.is_cuda", "flag = False", "device.is_cuda"),
    ('y = torch.zeros(3, device="cuda")', "y = torch.zeros(3)", "device.keyword"),
    ("y = torch.arange(n, device=x.device, dtype=torch.long)",
     "y = torch.arange(n, dtype=torch.long)", "device.keyword"),
    ("ok = torch.cuda.is_available()", "ok = False", "cuda.is_available"),
    ("torch.cuda.synchronize()", "pass", "cuda.synchronize"),
    ("torch.npu.set_device(rank)", "pass", "npu.set_device"),
    ("i = torch.cuda.current_device()", "i = 0", "cuda.current_device"),
    ("torch.cuda.manual_seed(1234)", "torch.manual_seed(1234)", "cuda.manual_seed"),
    ("import torch_npu", "pass", "vendor.import"),
    ("import math, torch_npu", "import math", "vendor.import"),
    ("from apex.normalization import FusedRMSNorm",
     "from adapters.torch.nn import RMSNorm as FusedRMSNorm", "vendor.import"),
    ("from transformer_engine.pytorch import LayerNorm",
     "from adapters.torch.nn import LayerNorm", "vendor.import"),
]


def _convert(snippet: str):
    code, report = convert_python(HEADER + snippet + "\n", "case.py")
    return code.splitlines()[1], report


@pytest.mark.parametrize("before,after,rule", CASES, ids=[c[0] for c in CASES])
def test_rule(before, after, rule):
    line, report = _convert(before)
    assert line == after
    assert rule in {c.rule for c in report.changes if c.line == 2}
    assert not report.unconverted, report.unconverted


VENDOR = textwrap.dedent('''\
    import torch
    import torch_npu
    import transformer_engine as te
    from apex.normalization import FusedRMSNorm


    def layers(d):
        return FusedRMSNorm(d), te.pytorch.RMSNorm(d, eps=1e-6), te.pytorch.Linear(d, d, bias=False)


    def ops(x, w, q, k, v, mask):
        y = torch_npu.npu_rms_norm(x, w, epsilon=1e-5)[0]
        o = torch_npu.npu_fusion_attention(q, k, v, 8, "BNSD", atten_mask=mask, scale=0.125)[0]
        r = torch_npu.npu_rotary_mul(x, q, k)
        s = torch_npu.npu_fusion_attention(q, k, v, 8, "BSH", scale=0.125)[0]
        return y, o, r, s, te.pytorch.DotProductAttention(8, 16)
''')


def test_vendor_ops_map_to_adapters_or_are_reported():
    code, report = convert_python(VENDOR, "vendor.py")
    lines = code.splitlines()
    assert lines[7] == ("    return FusedRMSNorm(d, eps=1e-5), torch.nn.RMSNorm(d, eps=1e-6), "
                        "torch.nn.Linear(d, d, bias=False)")
    assert lines[11] == ("    y = torch.nn.functional.rms_norm(x, w.shape, w, 1e-5)")
    assert lines[12] == ("    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, "
                         "attn_mask=torch.logical_not(mask), scale=0.125)")
    unconverted = {u.line: u for u in report.unconverted}
    assert set(unconverted) == {14, 15, 16}
    assert "npu_rotary_mul" in unconverted[14].construct
    assert "BNSD" in unconverted[15].reason
    assert "DotProductAttention" in unconverted[16].construct


SCOPED = textwrap.dedent('''\
    import torch


    class Holder:
        def __init__(self, torch_module):
            self.torch = torch_module

        def check(self, x):
            # torch.cuda.is_available() and x.size(0) in a comment stay as they are
            text = "torch.cuda.is_available() x.size(0) x.cuda()"
            return self.torch.cuda.is_available(), text


    def shadowed(torch, x):
        return torch.cuda.is_available(), x.transpose(0, 1)


    def local_name(x):
        torch = make_backend()
        return torch.cuda.is_available()
''')


def test_scope_awareness():
    code, report = convert_python(SCOPED, "scoped.py")
    original, converted = SCOPED.splitlines(), code.splitlines()
    assert converted[0] == "import adapters.torch as torch"
    assert converted[1:] == original[1:15] + converted[15:16] + original[16:]  # only line 16 is
    assert not report.changes[1:]  # ... the transpose, left because `torch` is a parameter there
    assert [(u.line, u.construct) for u in report.unconverted] == [(15, "x.transpose(0, 1)")]
    assert "shadowed" in report.unconverted[0].reason


def test_inplace_rebinds_a_local_name_and_writes_in_place_elsewhere():
    """A statement on a name of this scope rebinds it (functional, differentiable); an
    attribute, a value, an outer name or a method without a functional rule get
    tensor_methods' form, which writes in place (aliases see it)."""
    source = HEADER + textwrap.dedent('''\
        def f(x, m, outer):
            self.cache.masked_fill_(m, 0)
            y = x.masked_fill_(m, 0)
            outer_name.masked_fill_(m, 0)
            x.normal_()
            x.masked_fill_(m, 0)
            x.copy_(y)
    ''')
    code, report = convert_python(source, "inplace.py")
    assert code.splitlines()[2:] == [
        "    torch.tensor_methods.masked_fill_(self.cache, m, 0)",
        "    y = torch.tensor_methods.masked_fill_(x, m, 0)",
        "    torch.tensor_methods.masked_fill_(outer_name, m, 0)",
        "    torch.tensor_methods.normal_(x)",
        "    x = torch.masked_fill(x, m, 0)",
        "    torch.tensor_methods.copy_(x, y)"]
    assert not report.unconverted


def test_multiline_constructs_keep_their_line_count():
    source = HEADER + textwrap.dedent('''\
        def f(x):
            y = torch.zeros(
                3,
                device=x.device,
            )
            z = x.size(
                0)
            return y, z  # line 9
    ''')
    code, report = convert_python(source, "multi.py")
    assert code.count("\n") == source.count("\n")
    assert code.splitlines()[8] == "    return y, z  # line 9"
    namespace = {"torch": __import__("torch")}
    exec(compile(code.replace("import adapters.torch as torch", ""), "multi.py", "exec"),
         namespace)
    y, z = namespace["f"](namespace["torch"].ones(5))
    assert tuple(y.shape) == (3,) and z == 5
    assert [c.line for c in report.changes] == [1, 3, 7]


def test_module_without_torch_is_left_alone():
    source = "import numpy as np\n\ndef f(a):\n    return a.transpose(1, 0), a.cuda()\n"
    code, report = convert_python(source, "np.py")
    assert code == source and not report.changes and not report.unconverted


def test_unsupported_torch_api_is_reported_with_its_line():
    source = HEADER + textwrap.dedent('''\
        from torch.optim import AdamW

        @torch.jit.script
        def f(x):
            return x

        n = torch.cuda.device_count()
    ''')
    code, report = convert_python(source, "unsupported.py")
    assert [u.line for u in report.unconverted] == [2, 4, 8]
    assert report.unconverted[0].reason == f"`torch.optim.AdamW`: {rules.UNSUPPORTED['torch.optim']}"
    assert "from torch.optim import AdamW" in code


def test_syntax_error_is_a_file_error():
    code, report = convert_python("def f(:\n", "broken.py")
    assert code == "def f(:\n" and report.error.startswith("broken.py:1:")


def test_every_rule_in_the_table_has_a_reason():
    assert all(r.why for r in rules.METHOD_RULES)
    assert all(why for _, why in rules.ACCELERATOR_CALLS.values())
    assert all(vc.why for vc in rules.VENDOR_CLASSES.values())


PROGRAMS = sorted((Path(__file__).parent / "torch_programs").glob("*.py"))


@pytest.mark.parametrize("path", PROGRAMS + [VENDOR, SCOPED], ids=lambda p: getattr(p, "name", "inline"))
def test_idempotent_and_line_preserving(path):
    source = path.read_text() if isinstance(path, Path) else path
    once, first = convert_python(source, "once.py")
    twice, second = convert_python(once, "twice.py")
    assert once != source and first.changes
    assert twice == once and not second.changes
    assert once.count("\n") == source.count("\n")


def test_msmm_models_convert_idempotently(tmp_path):
    run = preconvert("msmm.models", tmp_path)
    assert run.files and not any(f.error for f in run.files)
    unchanged = {Path(f.path).read_text() for f in run.files if not f.changes}
    assert len(unchanged) < len(run.files)
    for converted in tmp_path.glob("*.py"):
        code = converted.read_text()
        if code in unchanged:  # no rule applied: converting it again is the first run
            continue
        again, report = convert_python(code, converted.name)
        assert again == code and not report.changes, converted.name


def test_docs_list_every_rule():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "auto_convert.md").read_text()
    names = [f"`.{r.method}`" if not r.statement or r.method[:-1] not in rules.INPLACE_FUNCTIONAL
             else f"`{r.method}`" for r in rules.METHOD_RULES]
    names += list(rules.ACCELERATOR_CALLS) + list(rules.UNSUPPORTED)
    names += [name.rsplit(".", 1)[-1] for name in [*rules.VENDOR_CLASSES, *rules.VENDOR_FUNCTIONS]]
    assert [n for n in names if n not in doc] == []
