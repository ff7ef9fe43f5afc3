"""Run the differential tester (tests/differential) over every torch API and regenerate what
depends on it: auto_convert/torch_api_status.json (which auto_convert reads to report failing
APIs at conversion time), the corpus coverage section of docs/adapters.md and the full table
docs/adapters/api_coverage.md.

    python tools/differential_coverage.py                 # every API (~20 min on 2 cores)
    python tools/differential_coverage.py --apis A B ...  # re-run these, keep the others
    python tools/differential_coverage.py --render        # the tables from the JSON only

APIs run in worker processes, in batches: an API that kills its worker (a MindSpore crash)
is recorded as ``crash`` and the batch goes on without it.
tests/differential/test_differential.py checks the committed JSON against fresh runs and the
tables against the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from adapters_coverage import ascend_column  # noqa: E402
from auto_convert.rules import (ACCELERATOR_CALLS, ACCELERATOR_MODULES, API_STATUS,  # noqa: E402
                                failing_apis, unsupported_reason)
from tests.differential.apis import corpus_uses, ranked  # noqa: E402

DOC = ROOT / "docs" / "adapters.md"
FULL = ROOT / "docs" / "adapters" / "api_coverage.md"
BEGIN, END = "<!-- differential:begin -->", "<!-- differential:end -->"
BATCH = 40
MODES = ("pynative", "jit", "grad")


# ---- running -------------------------------------------------------------------------------
def _worker(apis: List[str]) -> None:
    """Run `apis` in this process, one JSON line each on stdout."""
    os.environ.setdefault("GLOG_v", "3")
    from msmm import runtime

    runtime.start("CPU", convert_models=False)
    import torch

    torch.set_num_threads(1)
    from tests.differential.runner import run_api

    with tempfile.TemporaryDirectory() as tmp:
        for api in apis:
            print(json.dumps({"api": api, **run_api(api, Path(tmp)).to_json()}), flush=True)


def _crashed(api: str, detail: str) -> dict:
    return {"api": api, "cases": 1, **{m: "crash" for m in MODES}, "views": "n/a", "rewritten": False,
            "message": f"the process died running it: {detail}"}


def run(apis: Iterable[str]) -> Dict[str, dict]:
    results: Dict[str, dict] = {}
    pending = list(apis)
    while pending:
        batch, pending = pending[:BATCH], pending[BATCH:]
        proc = subprocess.run([sys.executable, __file__, "--worker", *batch], cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        results.update({d.pop("api"): d for d in done})
        if len(done) < len(batch):  # the next API killed the worker
            dead = batch[len(done)]
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results[dead] = _crashed(dead, f"exit {proc.returncode}, {tail[:120]}")
            results[dead].pop("api")
            pending = batch[len(done) + 1:] + pending
        print(f"{len(results)} APIs run", file=sys.stderr)
    return results


# ---- tables --------------------------------------------------------------------------------
def works(entry: dict) -> bool:
    return bool(entry["cases"]) and all(entry[m] in ("ok", "n/a") for m in MODES)


STATES = ("works", "reported", "converted by a rule", "fails, not reported", "not sampled")


def _rule(api: str) -> str:
    """The auto_convert device rule that handles `api` without running it, if any."""
    parts = api.split(".")
    if len(parts) == 3 and parts[1] in ACCELERATOR_MODULES and parts[2] in ACCELERATOR_CALLS:
        template, why = ACCELERATOR_CALLS[parts[2]]
        return f"rewritten to `{template}`: {why}"
    return ""


def state(api: str, entry: dict | None, failing: Dict[str, str]) -> str:
    """One of STATES: works in every mode; reported at conversion time (failed here, or
    under an unsupported prefix); rewritten by a device rule; failed here but not reported
    (a Tensor method named like a Python container method); not sampled."""
    if entry is not None and works(entry):
        return "works"
    if entry is not None and entry["cases"]:
        return "reported" if api in failing else "fails, not reported"
    if _rule(api):
        return "converted by a rule"
    return "reported" if unsupported_reason(api) else "not sampled"


def _row(api: str, entry: dict | None, uses: int, failing: Dict[str, str]) -> str:
    from adapters.torch._dispatch import TABLE

    if entry is None or not entry["cases"]:
        reason = unsupported_reason(api)
        if _rule(api):
            note = _rule(api)
        elif reason:
            note = f"reported by auto_convert: {reason}"
        elif api.startswith("torch.distributed."):
            note = "not sampled (needs a process group): contract tests on 2 msrun workers, tests/adapters/test_distributed.py"
        else:
            note = "not sampled: no candidate call ran on torch"
        return f"| `{api}` | {uses} | - | - | - | - | - | - | {note} |"
    cpu = "yes" if works(entry) else ("reported" if api in failing else "fails, not reported")
    note = ("rewritten by auto_convert; " if entry["rewritten"] else "") + entry["message"].replace("|", "\\|")
    return (f"| `{api}` | {uses} | {entry['pynative']} | {entry['jit']} | {entry['grad']} | {entry['views']} | "
            f"{cpu} | {ascend_column(api, TABLE)} | {note} |")


_HEAD = ["| API | corpus uses | PyNative | jit | grad | views | CPU | Ascend | note |",
         "|---|---|---|---|---|---|---|---|---|"]


def summary(apis: Dict[str, dict]) -> str:
    uses = corpus_uses()
    failing = failing_apis(apis)
    states = {api: state(api, apis.get(api), failing) for api in uses}
    total_apis, total_uses = len(uses), sum(uses.values())
    lines = ["| corpus APIs | by API | by use |", "|---|---|---|"]
    for name in STATES:
        n = sum(1 for s in states.values() if s == name)
        k = sum(uses[a] for a, s in states.items() if s == name)
        lines.append(f"| {name} | {n}/{total_apis} ({100 * n / total_apis:.1f}%) | "
                     f"{k}/{total_uses} ({100 * k / total_uses:.1f}%) |")
    tested = [e for e in apis.values() if e["cases"]]
    lines += ["", f"All listed torch APIs: {len(apis)}; sampled {len(tested)}, of which "
                  f"{sum(1 for e in tested if works(e))} work in PyNative, jit and gradients."]
    return "\n".join(lines)


def render(apis: Dict[str, dict]) -> tuple[str, str]:
    """(the docs/adapters.md section, the full table page)."""
    uses, failing = corpus_uses(), failing_apis(apis)
    corpus_rows = [_row(api, apis.get(api), n, failing) for api, n in uses.items()]
    section = "\n".join([summary(apis), "", *_HEAD, *corpus_rows])
    full_rows = [_row(api, apis.get(api), uses.get(api, 0), failing) for api in ranked()]
    page = "\n".join([
        "# Differential coverage of the torch API",
        "",
        "Generated by `python tools/differential_coverage.py` (see [adapters.md](../adapters.md#differential-coverage)):",
        "every public `torch.Tensor` method and property, `torch.*` and `torch.nn.functional.*` function and",
        "`torch.nn` layer, ranked by use in the corpus, then in torch's order.",
        "",
        *_HEAD, *full_rows, ""])
    return section, page


def write_docs(apis: Dict[str, dict]) -> None:
    section, page = render(apis)
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")
    FULL.write_text(page)


def load() -> Dict[str, dict]:
    return json.loads(API_STATUS.read_text())["apis"] if API_STATUS.exists() else {}


def save(apis: Dict[str, dict]) -> None:
    ordered = {api: apis[api] for api in ranked() if api in apis}
    API_STATUS.write_text(json.dumps({"generated_by": "tools/differential_coverage.py", "apis": ordered},
                                     indent=0) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--apis", nargs="+", help="re-run only these APIs")
    parser.add_argument("--render", action="store_true", help="only regenerate the tables")
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    apis = load()
    if not args.render:
        apis.update(run(args.apis or ranked()))
        save(apis)
    write_docs(apis)
    print(f"{len(apis)} APIs in {API_STATUS.name}; tables written to {DOC} and {FULL}")


if __name__ == "__main__":
    main()
