"""The metrics against cases computed by hand."""
from __future__ import annotations

import pytest

from msmm.eval.metrics import aggregate, anls, exact_match, levenshtein, relaxed_accuracy, relaxed_correct


@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3),  # k->s, e->i, +g
    ("flaw", "lawn", 2),  # -f, +n
    ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0),
    ("intention", "execution", 5),
    ("ab", "ba", 2),  # no transpositions: two substitutions
])
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


def test_anls_hand_cases():
    assert anls("sitting", ["kitten"]) == pytest.approx(1 - 3 / 7)  # NL 3/7 < 0.5
    assert anls("lawn", ["flaw"]) == 0.0  # NL = 2/4 = 0.5: not below the threshold
    assert anls("lawns", ["flaw"]) == 0.0  # 3/5
    assert anls("flawn", ["flaw"]) == pytest.approx(1 - 1 / 5)
    assert anls("  Hello   WORLD ", ["hello world"]) == 1.0  # case and whitespace
    assert anls("sitting", ["abcd", "kitten", "sittin"]) == pytest.approx(1 - 1 / 7)  # best answer
    assert anls("", ["abc"]) == 0.0
    assert anls("", [""]) == 1.0
    assert anls("1.5 cm", ["1.5cm"]) == pytest.approx(1 - 1 / 6)


def test_relaxed_accuracy_hand_cases():
    assert relaxed_correct("105", "100") and relaxed_correct("95", "100")
    assert not relaxed_correct("105.1", "100") and not relaxed_correct("94", "100")
    # the tolerance is relative to the gold number: 4.9% of 100, though 5.15% of 95.1
    assert relaxed_correct("95.1", "100")
    assert relaxed_correct("12%", "0.12") and not relaxed_correct("12", "12%")
    assert relaxed_correct("-2.04", "-2")  # 2%
    assert relaxed_correct("0", "0") and not relaxed_correct("0.01", "0")
    assert relaxed_correct("Yes", "yes") and not relaxed_correct("Yes.", "yes")
    assert not relaxed_correct("1,000", "1000")  # not a number: compared as text
    assert relaxed_accuracy("51", ["Lebanon", "50"]) == 1.0
    assert relaxed_accuracy("53", ["Lebanon", "50"]) == 0.0


def test_exact_match():
    assert exact_match(" Red ", ["red"]) == 1.0
    assert exact_match("dark red", ["red"]) == 0.0


def test_aggregate_overall_and_groups():
    scores = [1.0, 0.0, 1.0, 0.5]
    groups = [{"split": "dev", "category": "Art"}, {"split": "dev", "category": "Math"},
              {"split": "validation", "category": "Math"}, {"split": "validation", "category": None}]
    out = aggregate(scores, groups)
    assert out["overall"] == {"score": 2.5 / 4, "n": 4}
    assert out["split"] == {"dev": {"score": 0.5, "n": 2}, "validation": {"score": 0.75, "n": 2}}
    assert out["category"] == {"Art": {"score": 1.0, "n": 1}, "Math": {"score": 0.5, "n": 2}}
    assert "l2-category" not in out
