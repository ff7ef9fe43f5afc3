"""Generated token ids -> text as it comes, for streaming (``msmm-infer``, ``msmm-chat``,
``msmm-serve``)."""
from __future__ import annotations

from typing import List, Sequence


class IncrementalText:
    """Decodes the answer so far after each token and hands out only the new text that is
    final: text ending in an incomplete UTF-8 sequence waits for the next token, and with
    ``stop`` strings, text that could still become a stop string is held back. When a stop
    string appears, the answer ends before it (``stopped`` is True)."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.tokens: List[int] = []
        self.text = ""  # the decoded answer so far (cut at a stop string)
        self.sent = 0  # characters of ``text`` handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """The new final text after ``token``."""
        self.tokens.append(int(token))
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop)))
            if at >= 0:
                self.text, self.stopped = self.text[:at], True
        if self.stopped:
            return self.flush()
        if self.text.endswith("\ufffd"):
            return ""
        final = len(self.text) - self._held()
        out, self.sent = self.text[self.sent:final], max(self.sent, final)
        return out

    def _held(self) -> int:
        """Characters at the end of ``text`` that begin some stop string."""
        return max((k for stop in self.stop for k in range(1, len(stop)) if self.text.endswith(stop[:k])), default=0)

    def flush(self) -> str:
        """The rest of the text (at the end of the answer)."""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out
