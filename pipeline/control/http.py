"""The live service's HTTP API (FastAPI, served by uvicorn on a daemon thread of the live driver).

Every route goes through the one :class:`~pipeline.control.commands.CommandHandler` the Redis control stream
uses, so both accept and refuse the same commands. A refused request is a 4xx with ``{"detail": REASON}``.
"""

from __future__ import annotations

import socket
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pipeline.control.commands import CommandError, CommandHandler, NewPrompts, NewStream

#: The largest request body taken (a painted 8K mask as a PNG is well under it).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: How long DELETE /streams/{id} waits for the stream to flush its sinks before it answers with its report.
REMOVE_TIMEOUT_S = 30.0


def create_app(handler: CommandHandler) -> FastAPI:
    app = FastAPI(title="xsam-pipeline live", description="Add and remove live streams and their prompts; watch "
                                                          "them (docs/live.md, HTTP API).")

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        """A body is read whole before it is validated: refuse one that says it is too large, or says nothing."""
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "a request body needs a Content-Length"}, status_code=411)
            if int(length) > MAX_BODY_BYTES:
                return JSONResponse({"detail": f"the body is {int(length)} bytes; at most {MAX_BODY_BYTES}"},
                                    status_code=413)
        return await call_next(request)

    @app.exception_handler(CommandError)
    def refused(_request: Request, exc: CommandError) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    @app.get("/streams")
    def streams() -> dict:
        return {"streams": handler.streams()}

    @app.post("/streams", status_code=201)
    def add_stream(body: NewStream) -> dict:
        return handler.add_stream(body.source, body.id, body.prompts)

    @app.get("/streams/{stream_id}")
    def stream(stream_id: str) -> dict:
        return handler.report(stream_id)

    @app.delete("/streams/{stream_id}")
    def remove_stream(stream_id: str) -> dict:
        return handler.remove_stream(stream_id, REMOVE_TIMEOUT_S)

    @app.post("/streams/{stream_id}/prompts", status_code=201)
    def add_prompts(stream_id: str, body: NewPrompts) -> dict:
        return handler.add_prompts(stream_id, body.prompts, body.prompt_ids)

    @app.delete("/streams/{stream_id}/prompts/{prompt_id}")
    def remove_prompt(stream_id: str, prompt_id: int) -> dict:
        return handler.remove_prompts(stream_id, [prompt_id])

    @app.get("/streams/{stream_id}/frame.jpg")
    def frame(stream_id: str) -> Response:
        return Response(handler.frame_jpeg(stream_id), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    return app


class ApiServer:
    """Serves :func:`create_app` on ``address:port`` from a daemon thread until :meth:`stop`.

    The socket is bound here, so a port in use is an OSError for the caller, not a log line of uvicorn's.
    """

    def __init__(self, handler: CommandHandler, port: int, address: str = "127.0.0.1") -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((address, port))
        except OSError:
            self.socket.close()
            raise
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(create_app(handler), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="live-api", daemon=True)

    def start(self) -> "ApiServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self.socket.close()
