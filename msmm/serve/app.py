"""The HTTP side (aiohttp): ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or
server-sent events in OpenAI's chunk format, ending ``data: [DONE]``), ``GET /health``,
``GET /metrics`` (Prometheus text). Every error is an OpenAI error body; a client that goes
away (the handler is cancelled, or a write fails) frees its engine row."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from aiohttp import web

from ..infer.text import IncrementalText
from .engine import BatchEngine, Event, Job, QueueFull
from .errors import APIError
from .prompt import ChatPromptBuilder
from .request import ChatRequest, Limits, parse_request


@dataclass
class Server:
    """What the handlers share."""

    engine: BatchEngine
    build: ChatPromptBuilder
    tokenizer: Any
    model_name: str
    limits: Limits
    created: int = 0


def error_response(err: APIError) -> web.Response:
    return web.json_response(err.body(), status=err.status)


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own 4xx/5xx (unknown path, wrong method, body too large) as OpenAI error bodies."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return error_response(APIError(err.status, err.reason))


async def list_models(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    return web.json_response({"object": "list", "data": [
        {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "msmm"}]})


async def health(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    if not server.engine.alive():
        return error_response(APIError(503, "the engine is not running"))
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    engine, stats = server.engine, server.engine.stats
    lines = ["# TYPE msmm_requests_total counter"]
    lines += [f'msmm_requests_total{{finish="{k}"}} {v}' for k, v in sorted(stats.finished.items())]
    lines += ["# TYPE msmm_requests_rejected_total counter", f"msmm_requests_rejected_total {request.app['rejected']}"]
    for name, kind, value in (
            ("prompt_tokens_total", "counter", stats.prompt_tokens),
            ("generation_tokens_total", "counter", stats.generation_tokens),
            ("decode_steps_total", "counter", stats.decode_steps),
            ("queue_length", "gauge", len(engine.waiting)),
            ("running_requests", "gauge", engine.busy_rows()),
            ("batch_slots", "gauge", engine.slots),
            ("batch_occupancy", "gauge", engine.busy_rows() / engine.slots),
            ("batch_occupancy_mean", "gauge", stats.busy_row_steps / max(1, stats.decode_steps) / engine.slots)):
        lines += [f"# TYPE msmm_{name} {kind}", f"msmm_{name} {value}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


async def _events(server: Server, job: Job, queue: "asyncio.Queue[Event]", stop: List[str]
                  ) -> AsyncIterator[Tuple[str, Optional[str], int]]:
    """(new text, finish reason or None, tokens generated) as the engine produces them; a stop
    string ends the request (its row is freed)."""
    text = IncrementalText(server.tokenizer, stop)
    while True:
        event = await queue.get()
        if event.error is not None:
            raise APIError(500, f"generation failed: {event.error}")
        if event.finish is not None:
            yield text.flush(), event.finish, event.generated
            return
        delta = text.add(event.token)
        if text.stopped:
            server.engine.cancel(job, "stop")
            yield delta, "stop", job.generated
            return
        if delta:
            yield delta, None, job.generated


def _usage(prompt: int, completion: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    server: Server = request.app["server"]
    loop = asyncio.get_running_loop()
    try:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as err:
            raise APIError(400, f"the request body is not valid JSON ({err})") from None
        chat: ChatRequest = await loop.run_in_executor(None, parse_request, body, [server.model_name], server.build,
                                                       server.limits)
    except APIError as err:
        return error_response(err)
    queue: "asyncio.Queue[Event]" = asyncio.Queue()
    job = Job(chat.prompt.input_ids, chat.prompt.vision, chat.generation,
              lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
    if not server.engine.alive():
        return error_response(APIError(503, "the engine is not running; the server is shutting down or failed",
                                       code="unavailable"))
    try:
        server.engine.submit(job)
    except QueueFull as err:
        request.app["rejected"] += 1
        return error_response(APIError(429, f"the server is busy: {err}; retry later", code="queue_full"))
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": server.model_name}
    prompt_tokens = int(chat.prompt.input_ids.shape[1])
    events = _events(server, job, queue, chat.stop)
    try:
        if chat.stream:
            return await _stream(request, meta, events, prompt_tokens, chat.include_usage)
        parts, finish, generated = [], None, 0
        async for delta, finish, generated in events:
            parts.append(delta)
        return web.json_response(dict(meta, object="chat.completion", choices=[
            {"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "logprobs": None,
             "finish_reason": finish}], usage=_usage(prompt_tokens, generated)))
    except APIError as err:
        return error_response(err)
    finally:  # done, or the client went away (the handler is cancelled / a write failed): free the row
        server.engine.cancel(job)


async def _stream(request: web.Request, meta: Dict[str, Any], events, prompt_tokens: int,
                  include_usage: bool) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(payload: Any) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await response.write(f"data: {data}\n\n".encode())

    def chunk(delta: Dict[str, Any], finish: Optional[str]) -> Dict[str, Any]:
        return dict(meta, object="chat.completion.chunk",
                    choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    await send(chunk({"role": "assistant", "content": ""}, None))
    generated = 0
    try:
        async for delta, finish, generated in events:
            if delta:
                await send(chunk({"content": delta}, None))
            if finish is not None:
                await send(chunk({}, finish))
    except APIError as err:  # the stream has started: the error goes as an event
        await send(err.body())
    if include_usage:
        await send(dict(meta, object="chat.completion.chunk", choices=[], usage=_usage(prompt_tokens, generated)))
    await send("[DONE]")
    await response.write_eof()
    return response


def build_app(server: Server, max_body_bytes: int) -> web.Application:
    app = web.Application(middlewares=[openai_errors], client_max_size=max_body_bytes)
    app["server"] = server
    app["rejected"] = 0
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
