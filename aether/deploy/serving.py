"""What the BentoML service needs besides the model: its settings, the upload-size guard and
JSON error responses. Bad input must never crash the server or become a 500: every refusal is
a 4xx with `{"error": code, "detail": what was wrong}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# HTTP status per doctor issue code; anything else the doctor refuses is a plain 400.
STATUS = {"decompression_bomb": 413, "too_large": 413}


def load_settings(path: Path) -> Dict[str, Any]:
    """`aether_serve.json` beside the service, with environment overrides for operators:
    AETHER_SERVE_BATCHING=0|1, AETHER_MAX_BATCH_SIZE, AETHER_MAX_LATENCY_MS, AETHER_MAX_UPLOAD_MB,
    AETHER_MAX_DECODED_MPX (megapixels being decoded at once per worker; default: the pixel limit)."""
    settings = json.loads(path.read_text())
    batching = settings["batching"]
    env = os.environ
    if env.get("AETHER_SERVE_BATCHING"):
        batching["enabled"] = env["AETHER_SERVE_BATCHING"].lower() not in ("0", "false", "no", "off")
    if env.get("AETHER_MAX_BATCH_SIZE"):
        batching["max_batch_size"] = int(env["AETHER_MAX_BATCH_SIZE"])
    if env.get("AETHER_MAX_LATENCY_MS"):
        batching["max_latency_ms"] = int(env["AETHER_MAX_LATENCY_MS"])
    if env.get("AETHER_MAX_UPLOAD_MB"):
        settings["max_upload_bytes"] = int(float(env["AETHER_MAX_UPLOAD_MB"]) * 1024 * 1024)
    if env.get("AETHER_MAX_DECODED_MPX"):
        settings["limits"]["max_decoded_pixels"] = int(float(env["AETHER_MAX_DECODED_MPX"]) * 1_000_000)
    return settings


def return_freed_memory() -> None:
    """Serve large allocations with mmap, so a decoded image's memory goes back to the system
    when it is freed. glibc raises its mmap threshold after the first large free (up to 32 MB),
    after which Pillow's 16 MB image blocks come from per-thread arenas that keep them: a worker
    that once decoded eight big uploads at once stayed at 6 GB."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MB (fixed: also turns the dynamic raise off)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def error_response(code: str, detail: str, status: int = 0) -> Any:
    from starlette.responses import JSONResponse

    status = status or STATUS.get(code, 400)
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class RequestGuard:
    """ASGI middleware in front of the API.

    - A request body over `max_bytes` is answered 413 without being parsed or stored: declared
      lengths are refused up front, chunked bodies are counted. The body is read to its end (and
      dropped) first, so the client sees the 413 rather than a reset in the middle of its upload.
    - A multipart upload to a route in `fields` must use that route's field names: BentoML
      1.4.40 answers an unknown field that holds binary data, or a multipart body without a
      boundary, with a 500 (it tries to read the part as JSON text), so the part names are
      checked here and a wrong one gets a 400 naming the expected field. `fields` maps a route
      to {field name: how many parts may use it (0: any number)}; a second image sent to
      /predict would otherwise be silently dropped.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int,
                 fields: Dict[str, Dict[str, int]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.fields = fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._reject(send, 400, "bad_request", f"invalid Content-Length {declared!r}")
                return
            if size > self.max_bytes:
                await self._drain(receive)
                await self._reject(send, 413, "too_large", self._too_large(size))
                return
        expected = self.fields.get(scope.get("path", ""))
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        if declared is not None and (expected is None or not ctype.startswith("multipart/")):
            await self.app(scope, receive, send)  # nothing to look at in the body: stream it through
            return
        # buffer (at most max_bytes), check, then hand the app a replay of the body
        body: List[bytes] = []
        total, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            more = message.get("more_body", False)
            if total > self.max_bytes:
                if more:
                    await self._drain(receive)
                await self._reject(send, 413, "too_large", self._too_large(total, at_least=more))
                return
            body.append(chunk)
        data = b"".join(body)
        if expected is not None and ctype.startswith("multipart/"):
            problem = self._form_problem(data, ctype, expected)
            if problem:
                await self._reject(send, 400, "bad_request", problem)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _form_problem(data: bytes, ctype: str, expected: Dict[str, int]) -> str:
        first = next(iter(expected))
        example = f"(e.g. curl -F {first}=@photo.jpg)"
        if "boundary=" not in ctype:
            return f"multipart/form-data without a boundary; send the image as a form field {example}"
        names = form_field_names(data, ctype)
        wrong = sorted(set(names) - set(expected))
        if wrong:
            return (f"unexpected form field(s) {', '.join(map(repr, wrong))}; this endpoint takes "
                    f"{' or '.join(map(repr, expected))} {example}")
        for name, most in expected.items():
            if most and names.count(name) > most:
                return (f"{names.count(name)} parts named {name!r}; this endpoint takes {most} "
                        "(several images go to /predict_batch as 'images')")
        return ""

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (f"upload of {'more than ' if at_least else ''}{size} bytes exceeds the limit of {self.max_bytes} "
                "bytes (set AETHER_MAX_UPLOAD_MB, or `aether export ... max_upload_mb=`)")

    @staticmethod
    async def _drain(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    @staticmethod
    async def _reject(send: Send, status: int, code: str, detail: str) -> None:
        body = json.dumps({"error": code, "detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def form_field_names(body: bytes, content_type: str) -> List[str]:
    """The `name` of every part of a multipart/form-data body (RFC 7578): each part starts after
    a `--boundary` line with headers up to a blank line."""
    import re

    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return []
    names = []
    for part in body.split(b"--" + match.group(1).encode("latin-1"))[1:]:
        head = part.split(b"\r\n\r\n", 1)[0]
        found = re.search(rb'(?im)^content-disposition:[^\r\n]*?\bname="([^"]*)"', head)
        if found:
            names.append(found.group(1).decode("utf-8", "replace"))
    return names
