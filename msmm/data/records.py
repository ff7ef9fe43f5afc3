"""Dataset records: the seeds' annotation formats read into one normalised :class:`Record`.

Two record schemas, each in a ``.jsonl`` file (one record a line) or a ``.json`` file (a
list of records):

* ``conversations`` schema: InternVL-Finetune jsonl, LLaVA-Pretrain
  (``blip_laion_cc_sub_558k.json``), LLaVA-Instruct-150K and XTuner's LLaVA-style json::

      {"id": ..., "image": "a.jpg" | ["a.jpg", ...], "video": "v.mp4",
       "conversations": [{"from": "system"|"human"|"gpt", "value": "<image>\\n..."}]}

* ``messages`` schema, the "mllm" ShareGPT format (Qwen2-VL seed, LLaMA-Factory, ms-swift)::

      {"messages": [{"role": "system"|"user"|"assistant", "content": "<image>..."}],
       "images": ["a.jpg", ...], "videos": ["v.mp4", ...]}

  whose key names can be remapped with the ``attr`` section of ``data.json``.

A record that cannot be used is returned as a :class:`BadInput` naming ``file:line``.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

from msmm.config.data_config import Attributes as RecordAttributes
from msmm.data.bad_input import BadInput, BadInputError, BadInputLog

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
ROLES = ("system", "user", "assistant")
_CONVERSATION_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class Record:
    messages: list[Message]
    images: list[str] = field(default_factory=list)  # resolved paths
    videos: list[str] = field(default_factory=list)
    where: str = "?"  # "file:line", for error messages

    @property
    def text_length(self) -> int:
        """Whitespace-split word count of all turns: a cheap length for length grouping."""
        return sum(len(m.content.split()) for m in self.messages)




def iter_json_objects(path: str) -> Iterator[tuple[int, Union[object, BadInput]]]:
    """Yield ``(line, object)`` for each record of a ``.jsonl`` or ``.json`` (list) file.

    A line of a jsonl file that is not a json value (malformed, not UTF-8, nested too deeply
    for the parser, a number too long to convert) is yielded as a :class:`BadInput`; a json file
    that is not a well-formed list cannot be split into records and raises :class:`BadInputError`.
    """
    if path.endswith(".jsonl"):
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield line_no, BadInput(f"{path}:{line_no}", "malformed_json",
                                            f"invalid UTF-8 byte 0x{raw[e.start]:02x} at column {e.start + 1}")
                    continue
                if not line.strip():
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as e:
                    yield line_no, BadInput(f"{path}:{line_no}", "malformed_json", f"{e.msg} at column {e.colno}")
                except RecursionError:
                    yield line_no, BadInput(f"{path}:{line_no}", "malformed_json", "nested too deeply to parse")
                except ValueError as e:  # e.g. an integer of more digits than Python converts
                    yield line_no, BadInput(f"{path}:{line_no}", "malformed_json", str(e))
        return
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise BadInputError(f"{path}:{line}: invalid UTF-8 byte 0x{data[e.start]:02x} at column {column}; "
                            "a json list file cannot be split into records (a .jsonl file skips the bad line)") from None
    decoder = json.JSONDecoder()
    pos, line_no = _skip_space(text, 0), 1
    if pos >= len(text) or text[pos] != "[":
        raise BadInputError(f"{path}:1: expected a json list of records (or use a .jsonl file)")
    line_no += text.count("\n", 0, pos)
    pos += 1
    while True:
        start = _skip_space(text, pos)
        line_no += text.count("\n", pos, start)
        if start < len(text) and text[start] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}:{e.lineno}: malformed json: {e.msg} at column {e.colno}") from None
        except RecursionError:
            raise BadInputError(f"{path}:{line_no}: malformed json: a record nested too deeply to parse") from None
        except ValueError as e:
            raise BadInputError(f"{path}:{line_no}: malformed json: {e}") from None
        yield line_no, obj
        line_no += text.count("\n", start, end)
        pos = _skip_space(text, end)
        line_no += text.count("\n", end, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise BadInputError(f"{path}:{line_no}: malformed json: expected ',' or ']' after a record")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def parse_record(
    obj: object, where: str, media_root: Optional[str] = "", attr: RecordAttributes = RecordAttributes(),
    root_name: str = "data_folder",
) -> Union[Record, BadInput]:
    """Turn one json object into a :class:`Record`, or a :class:`BadInput` saying why not.

    Media paths are resolved against ``media_root`` (``""``: the current directory) and must
    stay inside it once symlinks and ``..`` are resolved (``os.path.realpath``); one that does
    not is a ``bad_path`` and is never opened. ``media_root=None`` leaves paths as written
    (for conversions that only copy them)."""
    if not isinstance(obj, dict):
        return BadInput(where, "bad_record", f"expected a json object, got {type(obj).__name__}")
    try:
        if "conversations" in obj:
            messages = _conversations(obj["conversations"])
            images, videos = _paths(obj, "image"), _paths(obj, "video")
        elif attr.messages in obj:
            messages = _messages(obj[attr.messages], attr)
            images, videos = _paths(obj, attr.images), _paths(obj, attr.videos)
        else:
            return BadInput(where, "bad_record", f"no 'conversations' or '{attr.messages}' key")
    except ValueError as e:
        return BadInput(where, "bad_record", str(e))
    if not any(m.role == "assistant" for m in messages):
        return BadInput(where, "bad_record", "no assistant turn to learn from")
    for placeholder, paths, kind in ((IMAGE_PLACEHOLDER, images, "image"), (VIDEO_PLACEHOLDER, videos, "video")):
        n = sum(m.content.count(placeholder) for m in messages)
        if n != len(paths):
            return BadInput(where, "placeholder_mismatch", f"{n} {placeholder} placeholder(s) but {len(paths)} {kind}(s)")
    if media_root is None:
        return Record(messages, images, videos, where)
    try:
        images = [_resolve(p, media_root, root_name) for p in images]
        videos = [_resolve(p, media_root, root_name) for p in videos]
    except ValueError as e:
        return BadInput(where, "bad_path", str(e))
    return Record(messages, images, videos, where)


def _resolve(path: str, media_root: str, root_name: str = "data_folder") -> str:
    """``path`` joined to ``media_root``; ValueError if it leads outside ``media_root``."""
    joined = path if os.path.isabs(path) else os.path.join(media_root, path)
    root = _real_root(media_root, os.getcwd())
    real = os.path.realpath(joined)
    if os.path.commonpath([real, root]) != root:
        raise ValueError(f"{path!r} is outside {root_name} {media_root or '.'!r} (it resolves to {real}); "
                         "media paths must stay inside it")
    return joined


@functools.lru_cache(maxsize=64)
def _real_root(media_root: str, cwd: str) -> str:
    return os.path.realpath(os.path.join(cwd, media_root))


def _conversations(turns: object) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise ValueError("'conversations' must be a non-empty list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}] must be an object with a string 'value'")
        role = _CONVERSATION_ROLES.get(turn.get("from"))
        if role is None:
            raise ValueError(f"conversations[{i}].from={turn.get('from')!r}; expected human, gpt or system")
        out.append(Message(role, turn["value"]))
    return out


def _messages(turns: object, attr: RecordAttributes) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"'{attr.messages}' must be a non-empty list")
    roles = {attr.user_tag: "user", attr.assistant_tag: "assistant", attr.system_tag: "system"}
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get(attr.content_tag), str):
            raise ValueError(f"{attr.messages}[{i}] must be an object with a string '{attr.content_tag}'")
        role = roles.get(turn.get(attr.role_tag))
        if role is None:
            raise ValueError(f"{attr.messages}[{i}].{attr.role_tag}={turn.get(attr.role_tag)!r}; expected one of {sorted(roles)}")
        out.append(Message(role, turn[attr.content_tag]))
    return out


def _paths(obj: dict, key: Optional[str]) -> list[str]:
    """The media paths of ``obj[key]`` (none without the key, or with ``key`` None)."""
    value = obj.get(key) if key is not None else None
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"'{key}' must be a string or a list of strings")


def load_records(
    path: str, media_root: str = "", log: BadInputLog | None = None, attr: RecordAttributes = RecordAttributes(),
    root_name: str = "data_folder",
) -> list[Record]:
    """Read every usable record of ``path``; unusable ones go to ``log`` (skip or raise)."""
    log = log if log is not None else BadInputLog()
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: annotation file not found")
    records = []
    for line_no, obj in iter_json_objects(path):
        item = obj if isinstance(obj, BadInput) else parse_record(obj, f"{path}:{line_no}", media_root, attr, root_name)
        if isinstance(item, BadInput):
            log.report(item)
        else:
            records.append(item)
    return records
