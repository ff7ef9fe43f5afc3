"""The chosen option of a free-form multiple-choice answer, without an LLM judge.

In order (the first rule that decides wins):

1. the answer is a letter alone: ``B``, ``(B)``, ``B.``, ``B)``, ``[B]``;
2. an explicit statement: ``Answer: B``, ``the answer is (C)``, ``option D``, ``correct
   choice is B``;
3. the answer starts with a letter and a separator: ``B. 42 degrees``, ``(C) red``;
4. exactly one option letter stands alone among the words (punctuation ``.()[],:;!*#{}``
   split words, as in VLMEvalKit); a lone ``A`` in a longer sentence may be the article and
   does not count;
5. option text: the answer equals one option's text (case and surrounding punctuation
   ignored), else exactly one option's text occurs in it as whole words (an option whose text
   is part of another matching option's text does not count: "dark red" beats "red").

``None`` when nothing decides (no option, or several): scored as wrong.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

_ALONE = re.compile(r"^\s*[\(\[]?\s*([A-Z])\s*[\)\]]?\s*[.:]?\s*$")
_STATED = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:|=)?\s*(?:option\s*|choice\s*)?[:\s]*[\(\[]?([A-Z])[\)\]]?(?![A-Za-z])",
    re.IGNORECASE)
_LEADING = re.compile(r"^\s*[\(\[]?([A-Z])(?:[\)\]]|[.:)])\s+\S")
_SPLIT = re.compile(r"[.()\[\],:;!*#{}\s]+")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def extract_choice(answer: str, options: Dict[str, str]) -> Tuple[Optional[str], str]:
    """(letter or None, the rule that decided: ``letter``, ``stated``, ``leading``, ``word``,
    ``text``, ``none``)."""
    answer = str(answer)
    match = _ALONE.match(answer)
    if match and match[1] in options:
        return match[1], "letter"
    stated = [m[1].upper() for m in _STATED.finditer(answer)]
    stated = [s for s in stated if s in options]
    if stated and len(set(stated)) == 1:
        return stated[0], "stated"
    match = _LEADING.match(answer)
    if match and match[1] in options:
        return match[1], "leading"
    words = [w for w in _SPLIT.split(answer) if w]
    letters = {w for w in words if w in options}
    if len(letters) == 1:
        letter = letters.pop()
        if not (letter == "A" and len(words) > 3):
            return letter, "word"
    normed = _norm(answer)
    texts = {k: _norm(v) for k, v in options.items()}
    exact = [k for k, t in texts.items() if t and t == normed]
    if len(exact) == 1:
        return exact[0], "text"
    inside = [k for k, t in texts.items() if t and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", normed)]
    inside = [k for k in inside if not any(o != k and texts[k] != texts[o] and texts[k] in texts[o] for o in inside)]
    if len(inside) == 1:
        return inside[0], "text"
    return None, "none"
