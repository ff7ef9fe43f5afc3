"""Records readers for the four seed formats, with bad input skipped (counted, logged) or fatal."""
import json

import pytest

from msmm.data.bad_input import BadInputError, BadInputLog
from msmm.data.records import Message, RecordAttributes, load_records


def _jsonl(path, lines):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return str(path)


def test_internvl_jsonl(tmp_path):
    path = _jsonl(tmp_path / "ai2d.jsonl", [
        {"id": 0, "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]},
        {"id": 1, "image": ["a.png", "b.png"], "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image><image>\nSame?"}, {"from": "gpt", "value": "No."}]},
        {"id": 2, "video": "v.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "Rain."}]},
        {"id": 3, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ])
    records = load_records(path, media_root="/data")
    assert [len(r.images) for r in records] == [1, 2, 0, 0]
    assert records[0].images == ["/data/images/a.png"]
    assert records[2].videos == ["/data/v.mp4"]
    assert records[1].messages[0] == Message("system", "Be brief.")
    assert [m.role for m in records[0].messages] == ["user", "assistant"]
    assert records[3].where == f"{path}:4"


def test_llava_pretrain_and_xtuner_json_lines(tmp_path):
    items = [
        {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture"}]},
        {"id": "x", "image": "00001/x.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A dog."},
            {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "Brown."}]},
    ]
    path = tmp_path / "blip_laion_cc_sub_558k.json"
    path.write_text(json.dumps(items, indent=2))
    records = load_records(str(path), media_root="imgs")
    assert len(records) == 2 and records[1].images == ["imgs/00001/x.jpg"]
    text = path.read_text().splitlines()
    first_line_of_second = next(i for i, l in enumerate(text, 1) if '"id": "x"' in l) - 1
    assert records[1].where == f"{path}:{first_line_of_second}"
    assert records[0].where == f"{path}:2"


def test_mllm_sharegpt_with_attr(tmp_path):
    items = [{"msgs": [{"r": "human", "c": "<image>Hi"}, {"r": "bot", "c": "Yo"}], "pics": ["a.jpg"]}]
    path = tmp_path / "mllm.json"
    path.write_text(json.dumps(items))
    attr = RecordAttributes(messages="msgs", images="pics", role_tag="r", content_tag="c", user_tag="human", assistant_tag="bot")
    (record,) = load_records(str(path), media_root="d", attr=attr)
    assert record.messages == [Message("user", "<image>Hi"), Message("assistant", "Yo")]
    assert record.images == ["d/a.jpg"]


def test_attr_videos_null_means_no_video_column(tmp_path):
    """MindSpeed-MM's image-only data.json writes ``"attr": {"videos": null}``: a record's
    ``videos`` key is then not a video list."""
    items = [{"messages": [{"role": "user", "content": "<image>Hi"}, {"role": "assistant", "content": "Yo"}],
              "images": ["a.jpg"], "videos": "not read"}]
    path = tmp_path / "mllm.json"
    path.write_text(json.dumps(items))
    (record,) = load_records(str(path), media_root="d", attr=RecordAttributes(videos=None))
    assert (record.images, record.videos) == (["d/a.jpg"], [])


BAD_LINES = [
    ('{"conversations": [{"from": "human", "value": "hi"}, ', "malformed_json", "Expecting"),
    ({"conversations": [{"from": "human", "value": "<image> x"}, {"from": "gpt", "value": "y"}]}, "placeholder_mismatch", "1 <image> placeholder(s) but 0 image(s)"),
    ({"image": ["a", "b"], "conversations": [{"from": "human", "value": "<image> x"}, {"from": "gpt", "value": "y"}]}, "placeholder_mismatch", "but 2 image(s)"),
    ({"video": "v.mp4", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}, "placeholder_mismatch", "0 <video>"),
    ({"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}, "bad_record", "conversations[0].from='robot'"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "bad_record", "no assistant turn"),
    ({"image": 3, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}, "bad_record", "'image' must be a string"),
    ({"text": "x"}, "bad_record", "no 'conversations' or 'messages' key"),
    ([1, 2], "bad_record", "expected a json object"),
]


@pytest.mark.parametrize("line, kind, reason", BAD_LINES)
def test_bad_line_is_skipped_counted_and_logged(tmp_path, caplog, line, kind, reason):
    good = {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
    path = _jsonl(tmp_path / "d.jsonl", [good, line, good])
    log = BadInputLog()
    records = load_records(path, log=log)
    assert len(records) == 2 and [r.where for r in records] == [f"{path}:1", f"{path}:3"]
    assert log.epoch_summary(0) == {kind: 1}
    assert f"{path}:2: {kind}" in caplog.text and reason in caplog.text
    assert "epoch 0: skipped 1 sample(s)" in caplog.text
    with pytest.raises(BadInputError, match=rf"{path}:2: {kind}"):
        load_records(path, log=BadInputLog(strict=True))


def test_unreadable_json_list_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"conversations": []},\n {"id": 1,,}\n]')
    with pytest.raises(BadInputError, match=rf"{path}:3: malformed json"):
        load_records(str(path))
    path.write_text('{"id": 1}')
    with pytest.raises(BadInputError, match="expected a json list"):
        load_records(str(path))
    with pytest.raises(BadInputError, match="annotation file not found"):
        load_records(str(tmp_path / "missing.jsonl"))


def test_media_paths_outside_the_media_folder_are_refused_unopened(tmp_path, caplog, monkeypatch):
    """``..``, an absolute path elsewhere and a symlink leading out are bad records (never opened);
    an absolute path inside, and a media folder that is itself a symlink, are fine."""
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "sub" / "in.png").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (media / "link.png").symlink_to(tmp_path / "outside.png")
    (tmp_path / "alias").symlink_to(media)

    def rec(image):
        return {"image": image, "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "y"}]}

    lines = [rec("sub/in.png"), rec("../outside.png"), rec("/etc/passwd"), rec(str(media / "sub" / "in.png")),
             rec("link.png"), rec("sub/../sub/in.png"), rec("sub/../../outside.png")]
    path = _jsonl(tmp_path / "d.jsonl", lines)
    opened = []
    monkeypatch.setattr("builtins.open", lambda f, *a, _open=open, **k: (opened.append(str(f)), _open(f, *a, **k))[1])
    for root in (str(media), str(tmp_path / "alias")):
        log = BadInputLog()
        records = load_records(path, media_root=root, log=log)
        assert [r.where for r in records] == [f"{path}:{i}" for i in (1, 4, 6)]
        assert log.epoch_summary(0) == {"bad_path": 4}
    assert opened == [path, path]  # only the annotation file
    assert f"{path}:3: bad_path: '/etc/passwd' is outside data_folder" in caplog.text
    assert "resolves to /etc/passwd" in caplog.text
    with pytest.raises(BadInputError, match=rf"{path}:2: bad_path: '../outside.png' is outside data_folder"):
        load_records(path, media_root=str(media), log=BadInputLog(strict=True))


def test_media_root_unset_means_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = {"image": "../x.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "y"}]}
    path = _jsonl(tmp_path / "d.jsonl", [rec])
    log = BadInputLog()
    assert load_records(path, log=log) == [] and log.total == {"bad_path": 1}


@pytest.mark.parametrize("raw, reason", [
    (b'{"conversations": "caf\xe9"}', "invalid UTF-8 byte 0xe9 at column 23"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"id": ' + b"1" * 5000 + b"}", "digits"),
])
def test_undecodable_jsonl_line_is_skipped_with_its_line(tmp_path, caplog, raw, reason):
    good = json.dumps({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}).encode()
    path = tmp_path / "d.jsonl"
    path.write_bytes(good + b"\n" + raw + b"\n" + good + b"\n")
    log = BadInputLog()
    records = load_records(str(path), log=log)
    assert [r.where for r in records] == [f"{path}:1", f"{path}:3"]
    assert log.total == {"malformed_json": 1}
    assert f"{path}:2: malformed_json: " in caplog.text and reason in caplog.text
    with pytest.raises(BadInputError, match=rf"{path}:2: malformed_json: .*{reason}"):
        load_records(str(path), log=BadInputLog(strict=True))


def test_undecodable_json_list_stops_with_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n {"id": 1},\n {"id": "caf\xe9"}\n]')
    with pytest.raises(BadInputError, match=rf"{path}:3: invalid UTF-8 byte 0xe9 at column 13"):
        load_records(str(path))
    path.write_bytes(b'[\n {"id": 1},\n ' + b"[" * 100000 + b"]" * 100000 + b"\n]")
    with pytest.raises(BadInputError, match=rf"{path}:3: malformed json: a record nested too deeply"):
        load_records(str(path))
