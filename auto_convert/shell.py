"""torchrun launch scripts -> msrun launch scripts.

A launcher is `torchrun`, `python -m torch.distributed.run` or `python -m
torch.distributed.launch`. Its options are rewritten where they are written: on the
launcher's own (continued) line and in the variables it expands (`DISTRIBUTED_ARGS="..."`
strings and `DISTRIBUTED_ARGS=(...)` arrays, as in MindSpeed-MM's scripts). Lines are
edited in place, never added or removed.
"""
from __future__ import annotations

import dataclasses
import re

from auto_convert.report import Change, FileReport, Unconverted

LAUNCHER = re.compile(
    r"\btorchrun\b|\bpython[0-9.]*\s+-m\s+torch\.distributed\.(?:run|launch)\b")
OTHER_LAUNCHERS = re.compile(r"(?:^|[\s;&|])(deepspeed|accelerate\s+launch)\s")
VAR_REF = re.compile(r'^"?\$\{?(\w+)(?:\[[@*]\])?\}?"?$')
MSRUN_WHY = "MindSpore jobs are launched with msrun"
DEFAULT_LOG_DIR = "msrun_log"

# torchrun option (either spelling) -> msrun option
RENAMED = {
    "nproc_per_node": "local_worker_num", "nproc-per-node": "local_worker_num",
    "node_rank": "node_rank", "node-rank": "node_rank",
    "master_addr": "master_addr", "master-addr": "master_addr",
    "master_port": "master_port", "master-port": "master_port",
    "log_dir": "log_dir", "log-dir": "log_dir",
}
NNODES = ("nnodes",)
DROPPED_FLAGS = {
    "standalone": "msrun runs a single node unless told otherwise",
    "use_env": "msrun always passes the rank through the environment",
    "use-env": "msrun always passes the rank through the environment",
}
FLAGS = {"standalone", "use_env", "use-env", "no_python", "no-python", "module", "m",
         "run_path", "run-path"}


@dataclasses.dataclass
class _Token:
    line: int  # 0-based
    start: int
    end: int
    text: str


@dataclasses.dataclass
class _Option:
    name: str
    name_token: _Token
    value: _Token | None
    separator: str  # "=" when written --name=value, else " "


def _tokens(lines: list[str], first: int, start: int, stop: tuple[int, int] | None,
            continued: bool) -> list[_Token]:
    """Whitespace-separated tokens from (first, start), across `\\` continuations or to `stop`."""
    tokens = []
    line = first
    while line < len(lines):
        text = lines[line]
        end = stop[1] if stop and line == stop[0] else len(text)
        for m in re.finditer(r"\S+", text[start:end]):
            if m.group() != "\\":
                tokens.append(_Token(line, start + m.start(), start + m.end(), m.group()))
        if stop:
            if line == stop[0]:
                break
        elif not (continued and text.rstrip().endswith("\\")):
            break
        line, start = line + 1, 0
    return tokens


def _parse_options(tokens: list[_Token], launcher: bool) -> tuple[list[_Option], list[str]]:
    """Options in `tokens`; for a launcher line, up to the script. Also the variables used."""
    options, variables = [], []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        ref = VAR_REF.match(tok.text)
        if ref:
            variables.append(ref.group(1))
        elif tok.text.startswith("-"):
            name, eq, value = tok.text.lstrip("-").partition("=")
            if eq:
                value_tok = _Token(tok.line, tok.end - len(value), tok.end, value)
                options.append(_Option(name, tok, value_tok, "="))
            elif name in FLAGS or i + 1 == len(tokens):
                options.append(_Option(name, tok, None, " "))
            else:
                options.append(_Option(name, tok, tokens[i + 1], " "))
                i += 1
        elif launcher:
            break  # the training script: everything after it is its own arguments
        i += 1
    return options, variables


def _definition(lines: list[str], name: str, before: int) -> tuple[int, int, tuple] | None:
    """Span of the last `NAME="..."` / `NAME=(...)` before line `before`: (line, col, stop)."""
    pattern = re.compile(rf"^\s*(?:export\s+|local\s+|declare\s+(?:-\w\s+)?)?{name}=([\"'(])")
    for line in range(before - 1, -1, -1):
        m = pattern.match(lines[line])
        if not m:
            continue
        close = ")" if m.group(1) == "(" else m.group(1)
        for end_line in range(line, len(lines)):
            start = m.end() if end_line == line else 0
            pos = lines[end_line].find(close, start)
            if pos >= 0:
                return line, m.end(), (end_line, pos)
        return None
    return None


def _term(value: str) -> str | None:
    """A shell value as an arithmetic term: `8` -> `8`, `$NPUS` / `${NPUS}` -> `NPUS`."""
    if value.isdigit():
        return value
    m = re.fullmatch(r"\$\{?(\w+)\}?", value.strip('"'))
    return m.group(1) if m else None


def world_size(nnodes: str, nproc: str) -> str | None:
    """msrun's --worker_num from torchrun's --nnodes and --nproc_per_node values."""
    n, p = _term(nnodes), _term(nproc)
    if n is None or p is None:
        return None
    if n.isdigit() and p.isdigit():
        return str(int(n) * int(p))
    if n == "1":
        return nproc
    return f"$(({n}*{p}))"


class _Editor:
    def __init__(self, lines: list[str], report: FileReport) -> None:
        self.lines = lines
        self.report = report
        self.edits: dict[int, list[tuple[int, int, str]]] = {}

    def replace(self, tok: _Token, start: int, end: int, text: str, rule: str, why: str) -> None:
        self.edits.setdefault(tok.line, []).append((start, end, text))
        self.report.changes.append(Change(tok.line + 1, rule, self.lines[tok.line][start:end],
                                          text, why))

    def apply(self) -> list[str]:
        lines = list(self.lines)
        for line, edits in self.edits.items():
            text = lines[line]
            for start, end, new in sorted(set(edits), reverse=True):
                text = text[:start] + new + text[end:]
            lines[line] = text
        return lines


def _convert_launcher(lines: list[str], line: int, match: re.Match, editor: _Editor,
                      seen: set[tuple[int, int]]) -> None:
    report = editor.report
    tokens = _tokens(lines, line, match.end(), None, continued=True)
    options, variables = _parse_options(tokens, launcher=True)
    launcher_tok = _Token(line, match.start(), match.end(), match.group())
    editor.replace(launcher_tok, match.start(), match.end(), "msrun", "shell.launcher",
                   MSRUN_WHY)
    for name in variables:
        span = _definition(lines, name, line)
        if span is None or span[:2] in seen:
            continue
        seen.add(span[:2])
        opts, _ = _parse_options(_tokens(lines, span[0], span[1], span[2], False), False)
        options += opts
    by_name = {o.name: o for o in options}
    nproc = by_name.get("nproc_per_node") or by_name.get("nproc-per-node")
    for opt in options:
        tok = opt.name_token
        dashes = len(tok.text) - len(tok.text.lstrip("-"))
        name_end = tok.start + dashes + len(opt.name)
        if opt.name in RENAMED:
            new = RENAMED[opt.name]
            if new != opt.name:
                editor.replace(tok, tok.start + dashes, name_end, new, "shell.option", MSRUN_WHY)
        elif opt.name in NNODES:
            total = world_size(opt.value.text if opt.value else "", nproc.value.text) \
                if nproc and nproc.value else None
            if total is None:
                report.unconverted.append(Unconverted(
                    tok.line + 1, tok.text, "--nnodes needs literal or $VARIABLE values of "
                    "--nnodes and --nproc_per_node to compute msrun's --worker_num"))
                continue
            editor.replace(tok, tok.start + dashes, name_end, "worker_num", "shell.option",
                           "msrun counts all workers: --worker_num = nnodes * nproc_per_node")
            editor.replace(opt.value, opt.value.start, opt.value.end, total, "shell.option",
                           "msrun counts all workers: --worker_num = nnodes * nproc_per_node")
        elif opt.name in DROPPED_FLAGS:
            start = tok.start
            while start > 0 and lines[tok.line][start - 1] == " ":
                start -= 1
            editor.replace(tok, start, tok.end, "", "shell.option", DROPPED_FLAGS[opt.name])
        else:
            report.unconverted.append(Unconverted(
                tok.line + 1, tok.text, f"torchrun option --{opt.name} has no msrun equivalent"))
    _add_msrun_options(by_name, nproc, launcher_tok, editor)


def _add_msrun_options(by_name: dict[str, _Option], nproc: _Option | None,
                       launcher: _Token, editor: _Editor) -> None:
    """msrun needs the world size, a log dir and --join, which torchrun implies."""
    sep = nproc.separator if nproc else "="
    local = nproc.value.text if nproc and nproc.value else "1"  # torchrun's default
    added = []
    if nproc is None:
        added.append(f"--local_worker_num{sep}1")
    if "nnodes" not in by_name:
        added.append(f"--worker_num{sep}{local}")
    if "log_dir" not in by_name and "log-dir" not in by_name:
        added.append(f"--log_dir{sep}{DEFAULT_LOG_DIR}")
    added.append(f"--join{sep}True")
    anchor = nproc.value if nproc and nproc.value else launcher  # inserted after it
    editor.edits.setdefault(anchor.line, []).append((anchor.end, anchor.end,
                                                     " " + " ".join(added)))
    editor.report.changes.append(Change(
        anchor.line + 1, "shell.option", anchor.text, f"{anchor.text} {' '.join(added)}",
        "msrun options torchrun implies: world size, log dir, wait for the workers"))


def convert_shell(text: str, path: str = "<string>") -> tuple[str, FileReport]:
    """Convert one shell script; returns the new text and what was (not) done."""
    report = FileReport(path=path, kind="shell")
    lines = text.split("\n")
    editor = _Editor(lines, report)
    seen: set[tuple[int, int]] = set()
    for number, line in enumerate(lines):
        code = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        if not code.strip():
            continue
        match = LAUNCHER.search(code)
        if match:
            _convert_launcher(lines, number, match, editor, seen)
        other = OTHER_LAUNCHERS.search(code)
        if other:
            report.unconverted.append(Unconverted(number + 1, other.group(1),
                                                  "only torchrun launchers are converted"))
    report.changes.sort(key=lambda c: c.line)
    report.unconverted.sort(key=lambda u: u.line)
    return "\n".join(editor.apply()), report
