"""Option extraction from free-form multiple-choice answers."""
from __future__ import annotations

import pytest

from msmm.eval.extract import extract_choice

OPTIONS = {"A": "red", "B": "dark red", "C": "blue", "D": "42 degrees"}


@pytest.mark.parametrize("answer, letter, rule", [
    ("B", "B", "letter"), ("(C)", "C", "letter"), ("D.", "D", "letter"), (" [A] ", "A", "letter"), ("C)", "C", "letter"),
    ("The answer is B.", "B", "stated"), ("Answer: (D)", "D", "stated"), ("answer: c", "C", "stated"),
    ("I think the correct option is C because the sky is blue.", "C", "stated"),
    ("B. dark red", "B", "leading"), ("(D) 42 degrees, since the angles sum to 180", "D", "leading"),
    ("It must be D", "D", "word"), ("C is right", "C", "word"),
    ("blue", "C", "text"), ("Blue.", "C", "text"), ("It is dark red", "B", "text"),
    ("the ball is red", "A", "text"), ("42 degrees", "D", "text"),
    ("A", "A", "letter"),
    ("A bird is shown", None, "none"),  # "A" as the article, no option text
    ("E", None, "none"),  # not an option
    ("red or blue", None, "none"),  # two options named
    ("B or C", None, "none"),
    ("redder", None, "none"),  # whole words only
    ("", None, "none"),
    ("The answer is B, not C", "B", "stated"),
])
def test_extract_choice(answer, letter, rule):
    assert extract_choice(answer, OPTIONS) == (letter, rule)


def test_a_as_article_falls_back_to_option_text():
    assert extract_choice("A dark red ball sits there", OPTIONS) == ("B", "text")


def test_only_the_question_s_options_count():
    two = {"A": "yes", "B": "no"}
    assert extract_choice("C", two) == (None, "none")
    assert extract_choice("No.", two) == ("B", "text")
    assert extract_choice("Yes, it is", two) == ("A", "text")
