"""The torch APIs the differential tester covers, listed from torch itself, and their rank
by use in the corpus (tests/differential/corpus.json, written by tools/torch_corpus.py).

Names: `Tensor.<method or property>`, `torch.<function>`, `torch.nn.functional.<function>`,
`torch.nn.<Module class>`, plus any other torch name the corpus uses (`torch.float32`,
`torch.nn.init.normal_`).
"""
from __future__ import annotations

import inspect
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

import torch

CORPUS = Path(__file__).with_name("corpus.json")


def _public(obj) -> List[str]:
    return [n for n in dir(obj) if not n.startswith("_")]


def _function(obj) -> bool:
    return callable(obj) and not inspect.isclass(obj) and not inspect.ismodule(obj) \
        and str(getattr(obj, "__module__", "") or "torch").startswith("torch")


@lru_cache(maxsize=None)
def listed() -> tuple:
    """Every API of the four lists torch defines, in a fixed order."""
    F = torch.nn.functional
    names = [f"Tensor.{n}" for n in _public(torch.Tensor)]
    names += [f"torch.{n}" for n in _public(torch) if _function(getattr(torch, n))]
    names += [f"torch.nn.functional.{n}" for n in _public(F) if _function(getattr(F, n))]
    names += [f"torch.nn.{n}" for n in _public(torch.nn) if inspect.isclass(getattr(torch.nn, n))
              and issubclass(getattr(torch.nn, n), torch.nn.Module)]
    return tuple(names)


@lru_cache(maxsize=None)
def corpus_uses() -> Dict[str, int]:
    return json.loads(CORPUS.read_text())["uses"]


@lru_cache(maxsize=None)
def ranked() -> tuple:
    """The corpus's APIs, most used first, then every other listed API in list order."""
    uses = corpus_uses()
    return tuple(uses) + tuple(n for n in listed() if n not in uses)


def resolve(api: str):
    """The torch object an API name refers to (`Tensor.x` -> `torch.Tensor.x`)."""
    parts = api.split(".")
    obj = torch.Tensor if parts[0] == "Tensor" else torch
    for part in parts[1:]:
        obj = getattr(obj, part)
    return obj
