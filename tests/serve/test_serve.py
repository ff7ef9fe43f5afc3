"""``msmm-serve`` on a tiny random Qwen2-VL (``make_tiny_assets --hf-model``), as a live server
on 127.0.0.1 driven by the official ``openai`` client: greedy answers equal ``msmm-infer``'s,
also for requests of different lengths that join a running batch at different times;
streamed chunks concatenate to the non-streamed answer; each bad request gets its 4xx and
the next good one succeeds; a client that disconnects frees its slot; a full queue answers 429.
The prompts: short text, long text, an image, a video. msmm-eval loads the same checkpoint."""
from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "examples", "tiny"))
sys.path.insert(0, os.path.join(REPO, "tests", "models"))
sys.path.insert(0, os.path.join(REPO, "tests", "data"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
sys.path.insert(0, os.path.join(REPO, "tests", "eval"))
import make_tiny_assets as tiny  # noqa: E402
from serve_process import live_server  # noqa: E402
from test_video import write_video  # noqa: E402


SLOTS, QUEUE, CONTEXT, NEW = 3, 2, 256, 12
SYSTEM = "You are a tiny test model."
PROMPTS = ["What colour is the square?",
           "Describe the image. " * 12 + "What colour is the square in the picture?",
           {"prompt": "What colour is the square in the picture?", "images": ["images/1.png"]},
           {"prompt": "What happens?", "videos": ["clip.mp4"]}]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("serve"))
    ids = tiny.write_tokenizer(os.path.join(out, "tokenizer"), "qwen2vl")
    tiny.write_data(out, 4, np.random.default_rng(0), "qwen2vl")
    model_json = tiny.qwen2vl_model_json(ids)
    tiny.write_hf_model(os.path.join(out, "hf"), "qwen2vl", model_json, os.path.join(out, "tokenizer"))
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(tiny.qwen2vl_data_json(out, os.path.join(out, "train.json")), f)
    write_video(os.path.join(out, "clip.mp4"), num_frames=12, size=(64, 48))
    return out


@pytest.fixture(scope="module")
def server(assets):
    args = ["--model", os.path.join(assets, "hf"), "--served-model-name", "tiny", "--max-batch", str(SLOTS),
            "--max-queue", str(QUEUE), "--max-model-len", str(CONTEXT), "--max-images", "200", "--max-image-mb", "0.05",
            "--allowed-local-media-path", assets]
    with live_server(args, os.path.join(assets, "server.log")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


def messages(spec, root: str) -> list:
    """The chat messages of an msmm-infer prompt spec (system turn first)."""
    if isinstance(spec, str):
        content = spec
    else:
        content = [{"type": f"{kind}_url", f"{kind}_url": {"url": "file://" + os.path.join(root, p)}}
                   for kind in ("image", "video") for p in spec.get(kind + "s", [])]
        content.append({"type": "text", "text": spec["prompt"]})
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def msmm_infer_answers(assets: str, capsys) -> list:
    import ms_backend

    from msmm.infer.cli import infer

    prompts = [p if isinstance(p, str) else {k: v if k == "prompt" else [os.path.join(assets, i) for i in v]
                                              for k, v in p.items()} for p in PROMPTS]
    config = {"model": {"family": "qwen2_vl", "from_pretrained": os.path.join(assets, "hf")},
              "tokenizer": {"from_pretrained": os.path.join(assets, "hf")}, "data": os.path.join(assets, "data.json"),
              "system": SYSTEM, "prompts": prompts, "generation_config": {"max_new_tokens": NEW}}
    path = os.path.join(assets, "inference.json")
    with open(path, "w") as f:
        json.dump(config, f)
    capsys.readouterr()
    with ms_backend.converted_in_sys_modules():
        assert infer([path]) == 0
    out = capsys.readouterr().out
    answers = [block.split("\n", 1)[1] for block in out.split(">>> ")[1:]]
    return [a[:-1] for a in answers]  # each answer ends with a line break


def test_msmm_eval_loads_the_tiny_hf_checkpoint(assets):
    """make_tiny_assets --hf-model's checkpoint in msmm-eval: its config (the family from the
    pipeline name), the model on MindSpore and the prompts of a tiny AI2D TSV (generation is
    msmm.infer's, tested above)."""
    import ms_backend
    from tiny_bench import ai2d_rows, eval_json, write_dataset

    from msmm.eval.config import load_eval_config
    from msmm.eval.datasets import decode_images, read_tsv
    from msmm.eval.run import Answerer, load_model, load_tokenizer

    out = os.path.join(assets, "eval")
    tsv = write_dataset(out, "ai2d_test", rows=ai2d_rows(np.random.default_rng(0), 2))
    cfg = load_eval_config(eval_json(os.path.join(out, "evaluate.json"), os.path.join(assets, "hf"), tsv, "ai2d_test",
                                     out, model_id="Qwen2VlPipeline", evaluation_model="qwen2_vl_tiny"))
    with ms_backend.converted_in_sys_modules():
        model = load_model(cfg)
    answer = Answerer(cfg, model, load_tokenizer(cfg))
    questions = read_tsv(tsv, cfg.spec).questions
    ids, vision = answer.prepare(questions[0])
    assert cfg.family == "qwen2_vl" and len(questions) == 4 and decode_images(questions[0])
    assert np.isin(ids, [model.config.image_token_id]).sum() == vision["image_grid_thw"].prod() // 4


def metric(server: str, name: str) -> float:
    text = urllib.request.urlopen(server + "/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_greedy_answers_equal_msmm_infer_when_joining_a_running_batch(assets, server, client, capsys):
    expected = msmm_infer_answers(assets, capsys)
    # alone, one after the other
    alone = [client.chat.completions.create(model="tiny", messages=messages(p, assets), max_tokens=NEW, temperature=0)
             for p in PROMPTS]
    assert [a.choices[0].message.content for a in alone] == expected
    assert alone[0].usage.completion_tokens == NEW and alone[0].choices[0].finish_reason == "length"
    # a long-running stream (the image prompt); the others join it after its 1st, 3rd and 5th chunk
    steps, tokens = metric(server, "msmm_decode_steps_total"), metric(server, "msmm_generation_tokens_total")
    results = {}

    def ask(k):
        results[k] = client.chat.completions.create(model="tiny", messages=messages(PROMPTS[k], assets),
                                                    max_tokens=NEW, temperature=0).choices[0].message.content

    joins = {1: 0, 3: 1, 5: 3}  # chunk -> prompt
    threads = []
    stream = client.chat.completions.create(model="tiny", messages=messages(PROMPTS[2], assets), max_tokens=NEW,
                                            temperature=0, stream=True)
    streamed = []
    for n, chunk in enumerate(stream):
        streamed.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        if n in joins:
            threads.append(threading.Thread(target=ask, args=(joins[n],)))
            threads[-1].start()
    for t in threads:
        t.join()
    assert "".join(streamed) == expected[2]
    assert {k: results[k] for k in joins.values()} == {k: expected[k] for k in joins.values()}
    # they shared decode steps: fewer steps than tokens
    assert metric(server, "msmm_decode_steps_total") - steps < metric(server, "msmm_generation_tokens_total") - tokens


def test_streamed_equals_non_streamed_sampling_and_stop(assets, client):
    msgs = messages(PROMPTS[2], assets)
    sampling = dict(temperature=0.8, top_p=0.9, seed=7, max_tokens=16,
                    extra_body={"top_k": 20, "repetition_penalty": 1.1})
    for kwargs in (dict(temperature=0, max_tokens=16), sampling):
        whole = client.chat.completions.create(model="tiny", messages=msgs, **kwargs)
        chunks = list(client.chat.completions.create(model="tiny", messages=msgs, stream=True,
                                                     stream_options={"include_usage": True}, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    greedy = client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=16)
    answer = greedy.choices[0].message.content
    stop = answer[5:7]
    cut = client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == answer[:answer.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def _png(size: int, noise: bool = False) -> str:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8) if noise \
        else np.full((size, size, 3), 128, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_message(*urls: str) -> list:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}} for u in urls]
             + [{"type": "text", "text": "What colour is the square?"}]}]


def _post(server: str, data: bytes) -> tuple:
    request = urllib.request.Request(server + "/v1/chat/completions", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, client):
    text = [{"role": "user", "content": "What colour is the square?"}]
    raw = {"malformed JSON": b'{"model": "tiny", "messages": [', "missing messages": b'{"model": "tiny"}'}
    for name, body in raw.items():
        status, error = _post(server, body)
        assert status == 400 and error["error"]["type"] == "invalid_request_error", name
    bad = {
        "unknown model": (dict(model="gpt-9", messages=text), openai.NotFoundError),
        "negative max_tokens": (dict(model="tiny", messages=text, max_tokens=-1), openai.BadRequestError),
        "oversized max_tokens": (dict(model="tiny", messages=text, max_tokens=10 ** 6), openai.BadRequestError),
        "logprobs (not supported)": (dict(model="tiny", messages=text, logprobs=True), openai.BadRequestError),
        "undecodable image": (dict(model="tiny", messages=_image_message(
            "data:image/png;base64," + base64.b64encode(b"not an image").decode())), openai.BadRequestError),
        "oversized image": (dict(model="tiny", messages=_image_message(_png(160, noise=True))), openai.BadRequestError),
        "file outside the allowed roots": (dict(model="tiny", messages=_image_message("file:///etc/hostname")),
                                           openai.BadRequestError),
        "too many images for the context": (dict(model="tiny", messages=_image_message(*[_png(8)] * 60)),
                                            openai.BadRequestError),
    }
    for name, (kwargs, error) in bad.items():
        with pytest.raises(error) as caught:
            client.chat.completions.create(**kwargs)
        assert caught.value.body["message"], name
        good = client.chat.completions.create(model="tiny", messages=text, max_tokens=2, temperature=0)
        assert good.choices[0].finish_reason == "length", name
    assert "context" in str(caught.value)


def test_disconnect_frees_the_slot_and_a_full_queue_answers_429(server, client):
    long = [{"role": "user", "content": "Describe the image."}]
    streams = [client.chat.completions.create(model="tiny", messages=long, max_tokens=150, temperature=0, stream=True)
               for _ in range(SLOTS)]
    deadline = time.time() + 30
    while metric(server, "msmm_running_requests") < SLOTS and time.time() < deadline:
        time.sleep(0.05)
    assert metric(server, "msmm_running_requests") == SLOTS
    queued = []
    threads = [threading.Thread(target=lambda: queued.append(client.chat.completions.create(
        model="tiny", messages=long, max_tokens=3, temperature=0))) for _ in range(QUEUE)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while metric(server, "msmm_queue_length") < QUEUE and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="tiny", messages=long, max_tokens=3)
    cancelled = metric(server, 'msmm_requests_total{finish="cancelled"}')
    for stream in streams:  # the clients go away mid-stream
        stream.close()
    for t in threads:
        t.join(60)
    assert len(queued) == QUEUE and all(q.choices[0].finish_reason == "length" for q in queued)
    deadline = time.time() + 30
    while metric(server, "msmm_running_requests") and time.time() < deadline:
        time.sleep(0.05)
    assert metric(server, "msmm_running_requests") == 0
    assert metric(server, 'msmm_requests_total{finish="cancelled"}') - cancelled == SLOTS
