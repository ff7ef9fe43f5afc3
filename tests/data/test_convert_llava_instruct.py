"""The LLaVA-Instruct -> mllm conversion command; its output loads as the Qwen2-VL dataset."""
import json
import subprocess
import sys

from msmm.data.records import Message, load_records


def test_convert_command(tmp_path):
    items = [
        {"id": "1", "image": "000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus?"}, {"from": "gpt", "value": "White and red."},
            {"from": "human", "value": "Where is it?"}, {"from": "gpt", "value": "On a street."}]},
        {"id": "2", "image": "x.jpg", "conversations": [{"from": "human", "value": "no placeholder"}, {"from": "gpt", "value": "y"}]},
    ]
    src, dst = tmp_path / "llava_instruct_150k.json", tmp_path / "mllm_format_llava_instruct_data.json"
    src.write_text(json.dumps(items, indent=1))
    run = subprocess.run([sys.executable, "-m", "msmm.data.convert_llava_instruct", "--input", str(src), "--output", str(dst)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "wrote 1 record(s)" in run.stdout and "skipped 1" in run.stdout
    assert f"{src}:" in run.stderr and "placeholder_mismatch" in run.stderr
    (converted,) = json.loads(dst.read_text())
    assert converted["images"] == ["COCO2017/train2017/000000033471.jpg"]
    assert [m["role"] for m in converted["messages"]] == ["user", "assistant", "user", "assistant"]
    (record,) = load_records(str(dst), media_root="./data")
    assert record.images == ["./data/COCO2017/train2017/000000033471.jpg"]
    assert record.messages[1] == Message("assistant", "White and red.")
    strict = subprocess.run([sys.executable, "-m", "msmm.data.convert_llava_instruct", "--input", str(src), "--output",
                             str(dst), "--strict"], capture_output=True, text=True)
    assert strict.returncode == 1 and f"{src}:" in strict.stderr and "placeholder_mismatch" in strict.stderr
