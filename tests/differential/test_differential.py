"""The differential tester against the committed outcomes (auto_convert/torch_api_status.json).

Each API runs through auto_convert on MindSpore CPU in PyNative, jit and gradients
(tests/differential/runner.py) and must end exactly as committed: an API that works stays
working (no kernel error or TypeError at run time for an API in the supported list), one
that fails fails the same way (so auto_convert's conversion-time report is right). The
most used APIs of the corpus (tests/differential/corpus.json, ranked by use; the top 100
carry 93% of its uses) run in every `make test` (about 2 minutes on 2 quiet cores), plus a sample
of the long tail (MSMM_DIFFERENTIAL_SEED picks another); the rest is marked slow
(`--run-slow`). Regenerate the JSON and tables with `python tools/differential_coverage.py`.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

from auto_convert.rules import API_STATUS
from tests.differential.apis import ranked
from tests.differential.runner import run_api

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import differential_coverage  # noqa: E402  (tools/differential_coverage.py)
import torch_corpus  # noqa: E402  (tools/torch_corpus.py)

TOP_N, TAIL_SAMPLE = 100, 20
COMMITTED = json.loads(API_STATUS.read_text())["apis"]
TOP = list(ranked()[:TOP_N])
_rest = list(ranked()[TOP_N:])
TAIL = sorted(random.Random(int(os.environ.get("MSMM_DIFFERENTIAL_SEED", "0"))).sample(_rest, TAIL_SAMPLE))
SLOW = [api for api in _rest if api not in TAIL]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("differential")


def _check(api: str, workdir: Path) -> None:
    assert api in COMMITTED, f"{api} has no committed outcome: run tools/differential_coverage.py"
    want = COMMITTED[api]
    if want["pynative"] == "crash":
        pytest.skip("kills its process (a MindSpore crash): tools/differential_coverage.py runs it in a worker")
    got = run_api(api, workdir).to_json()
    keys = ("cases", "pynative", "jit", "grad", "views", "rewritten")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}, got["message"] or want["message"]


@pytest.mark.parametrize("api", TOP + TAIL)
def test_api_as_committed(api, workdir):
    _check(api, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("api", SLOW)
def test_long_tail_api_as_committed(api, workdir):
    _check(api, workdir)


def test_corpus_files_are_the_counted_ones():
    """corpus.json was counted from the modeling files installed now (same bytes)."""
    assert torch_corpus.digests() == json.loads(torch_corpus.CORPUS.read_text())["digests"]


@pytest.mark.slow
def test_corpus_is_up_to_date():
    """corpus.json counts what the installed transformers' modeling files use."""
    committed = json.loads(torch_corpus.CORPUS.read_text())
    assert torch_corpus.build(committed["read_for_facts"]) == committed


def test_coverage_tables_are_up_to_date():
    """docs/adapters.md's section and docs/adapters/api_coverage.md render the committed JSON."""
    section, page = differential_coverage.render(COMMITTED)
    doc = differential_coverage.DOC.read_text()
    assert f"{differential_coverage.BEGIN}\n{section}\n{differential_coverage.END}" in doc
    assert differential_coverage.FULL.read_text() == page


def test_failing_apis_are_reported_at_conversion(tmp_path):
    """A program using an API that fails on MindSpore is reported with file:line, exit 1."""
    from auto_convert.__main__ import main
    from auto_convert.rules import FAILING_APIS

    failing = sorted(api for api in FAILING_APIS if api.startswith("Tensor.") and not api.endswith("_"))[0]
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.py").write_text(f"import torch\n\n\ndef f(x):\n    return x.{failing.split('.', 1)[1]}()\n")
    assert main([str(src), str(tmp_path / "dst"), "--quiet"]) == 1
    report = json.loads((tmp_path / "dst" / "auto_convert_report.json").read_text())
    assert [(u["line"], u["reason"]) for u in report["files"][0]["unconverted"]] == [(5, FAILING_APIS[failing])]
