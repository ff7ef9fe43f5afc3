"""``msmm-serve``: an OpenAI-compatible HTTP server (aiohttp) over a continuous-batching
engine with a fixed number of static-shape KV-cache slots. See docs/serving.md."""
