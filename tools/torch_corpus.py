"""The torch API set that real model code uses: counted statically (libcst) in the modeling
files of the seed families in the installed transformers, plus files read for facts once
(OpenGVLab's InternVL remote code, Megatron-core, timm's ViT, nanoGPT: their counts are
kept in corpus.json, their code is not in this repository).

    python tools/torch_corpus.py                          # re-count the installed files
    python tools/torch_corpus.py --fact LABEL=PATH ...    # and re-read these files for facts

An API is a dotted torch name (`torch.cat`, `torch.nn.functional.softmax`, `torch.nn.Linear`,
imports resolved: `F.softmax`, `nn.Linear`), or `Tensor.<name>` for a call of a
`torch.Tensor` method (`x.view(...)`) or a read of a Tensor property (`x.shape`) on anything
that is not an imported module. Receivers are not typed, so `Tensor.<name>` counts every
`.<name>(...)` call of the files; names that torch.Tensor lacks are not counted.
tests/differential/test_corpus.py checks that corpus.json is up to date.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Dict, List

import libcst as cst
from libcst.metadata import MetadataWrapper, QualifiedNameProvider, QualifiedNameSource

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "differential" / "corpus.json"
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "internvl", "llava", "clip", "llama", "qwen2", "siglip")


def corpus_files() -> List[Path]:
    """The torch modeling file of each seed family in the installed transformers."""
    import transformers

    models = Path(transformers.__file__).parent / "models"
    return [models / family / f"modeling_{family}.py" for family in FAMILIES]


def _tensor_names() -> tuple[frozenset, frozenset]:
    """(methods, properties) of torch.Tensor, public names only."""
    import torch

    names = [n for n in dir(torch.Tensor) if not n.startswith("_")]
    methods = frozenset(n for n in names if callable(getattr(torch.Tensor, n, None)))
    return methods, frozenset(names) - methods


class _Uses(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    def __init__(self, methods: frozenset, properties: frozenset) -> None:
        super().__init__()
        self.methods, self.properties = methods, properties
        self.uses: Counter = Counter()
        self._inner: set = set()  # attribute nodes that are part of a longer dotted name

    def _imported(self, node: cst.CSTNode) -> str | None:
        for q in self.get_metadata(QualifiedNameProvider, node, set()):
            if q.source is QualifiedNameSource.IMPORT:
                return q.name
        return None

    def visit_Annotation(self, node: cst.Annotation) -> bool:
        return False  # `x: torch.Tensor` is a type, not a use

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._inner.add(id(node.value))
        if id(node) in self._inner:
            return
        name = self._imported(node) if _dotted(node) else None
        if name is not None:
            if name.split(".")[0] == "torch":
                self.uses[name] += 1
            return
        attr = node.attr.value
        if attr in self.properties or (attr in self.methods and self._called(node)):
            self.uses[f"Tensor.{attr}"] += 1

    def visit_Name(self, node: cst.Name) -> None:
        if id(node) in self._inner:
            return
        name = self._imported(node)
        if name is not None and name.split(".")[0] == "torch" and name != "torch":
            self.uses[name] += 1

    def visit_Call(self, node: cst.Call) -> None:
        self._calls.add(id(node.func))

    def visit_Module(self, node: cst.Module) -> None:
        self._calls: set = set()

    def _called(self, node: cst.Attribute) -> bool:
        return id(node) in self._calls


def _dotted(node: cst.BaseExpression) -> bool:
    """`a.b.c` made of names only (`torch.arange(n).view` is a method of a value)."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name)


def extract(path: Path, methods: frozenset, properties: frozenset) -> Counter:
    """torch API -> number of uses in the file at `path`."""
    visitor = _Uses(methods, properties)
    MetadataWrapper(cst.parse_module(path.read_text())).visit(visitor)
    return visitor.uses


def count(paths: Dict[str, Path]) -> Dict[str, Dict[str, int]]:
    """label -> (API -> uses) for the files `paths` (label -> path)."""
    methods, properties = _tensor_names()
    return {label: dict(sorted(extract(path, methods, properties).items())) for label, path in paths.items()}


def digests() -> Dict[str, str]:
    """sha256 of each installed corpus file: a cheap check that corpus.json is current."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in corpus_files()}


def build(read_for_facts: Dict[str, Dict[str, int]]) -> Dict:
    """The corpus: per API its uses in total (most used first) and by file; the installed
    transformers files are counted now, `read_for_facts` holds the other files' counts."""
    import transformers

    installed = count({path.name: path for path in corpus_files()})
    total: Counter = Counter()
    for uses in (*installed.values(), *read_for_facts.values()):
        total.update(uses)
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"source": f"transformers {transformers.__version__}: " + ", ".join(installed),
            "digests": digests(), "uses": dict(ranked), "by_file": installed,
            "read_for_facts": read_for_facts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fact", action="append", default=[], metavar="LABEL=PATH",
                        help="count this file (e.g. OpenGVLab/InternVL@2410d1d:.../modeling_intern_vit.py=/tmp/f.py); "
                             "without --fact, the counts in corpus.json are kept")
    args = parser.parse_args()
    if args.fact:
        facts = count({label: Path(path) for label, path in (f.rsplit("=", 1) for f in args.fact)})
    else:
        facts = json.loads(CORPUS.read_text()).get("read_for_facts", {}) if CORPUS.exists() else {}
    corpus = build(facts)
    CORPUS.write_text(json.dumps(corpus, indent=1) + "\n")
    print(f"wrote {len(corpus['uses'])} APIs, {sum(corpus['uses'].values())} uses to {CORPUS}")


if __name__ == "__main__":
    main()
