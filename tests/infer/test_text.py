"""``IncrementalText``: streamed pieces concatenate to the decoded answer; incomplete UTF-8
waits for the next token; text that may become a stop string is held back; a stop string
ends the answer before it."""
from __future__ import annotations

from msmm.infer.text import IncrementalText


class ByteTokenizer:
    """One token per byte; decode replaces incomplete UTF-8 with U+FFFD, as HF byte-level BPE."""

    def decode(self, tokens, skip_special_tokens=True):
        return bytes(tokens).decode("utf-8", errors="replace")


def stream(text: str, stop=()):
    inc = IncrementalText(ByteTokenizer(), stop)
    pieces = []
    for byte in text.encode():
        pieces.append(inc.add(byte))
        if inc.stopped:
            break
    pieces.append(inc.flush())
    return pieces, inc


def test_pieces_concatenate_to_the_answer_and_wait_for_whole_characters():
    pieces, inc = stream("héllo → wörld")
    assert "".join(pieces) == inc.text == "héllo → wörld"
    assert not any("\ufffd" in p for p in pieces)
    assert not inc.stopped


def test_stop_string_ends_the_answer_before_it_and_is_held_back_until_known():
    pieces, inc = stream("hello world", stop=["lo w"])
    assert inc.stopped and inc.text == "hel" and "".join(pieces) == "hel"
    pieces, inc = stream("hello there", stop=["lo w"])  # "lo" held back, then released
    assert not inc.stopped and "".join(pieces) == "hello there"
    assert pieces[4] == "" and pieces[5] == ""  # "l", "lo" could begin the stop string
    pieces, inc = stream("stop at once", stop=["xyz", "stop"])
    assert inc.stopped and "".join(pieces) == ""
