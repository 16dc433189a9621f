"""The page's HTTP API: FastAPI on 127.0.0.1, the page's files beside it. Every error is JSON with a reason
(the pipeline's own: the same words the CLI prints), 4xx for bad input, never a bare traceback."""

from __future__ import annotations

import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError

from operators.errors import PipelineError
from operators.keyframes import KeyframeConfig
from pipeline.ui.frames import FrameStore
from pipeline.ui.jobs import JobBusyError, JobRunner
from pipeline.ui.live import LiveApi, LiveApiError
from pipeline.ui.overlay import overlay_png, page_objects
from pipeline.ui.paths import NoSuchPathError, is_source, list_sources, resolve_inside
from pipeline.ui.preview import Previewer
from pipeline.ui.prompts import PagePrompt, check_on_frame, parse_page_prompts

STATIC = Path(__file__).parent / "static"


@dataclass
class Settings:
    root: Path  # sources are read from under it
    out: Path  # jobs write into folders under it
    live_api: str | None = None
    segmenter: str = "default"


class PreviewRequest(BaseModel):
    path: str
    frame: int = Field(ge=0)
    prompts: list[PagePrompt] = Field(max_length=64)


class JobRequest(BaseModel):
    name: str
    path: str
    scope: Literal["video", "folder"] = "video"
    prompts: list[PagePrompt] = Field(max_length=64)
    keyframe_every: int = Field(default=KeyframeConfig.every, ge=1)


class LivePromptsRequest(BaseModel):
    prompts: list[str] = Field(max_length=64)


class LiveStreamRequest(BaseModel):
    source: str = Field(min_length=1, max_length=4096)
    id: str | None = None  # the live service derives one from the URL when none is given


def _error(status: int, kind: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)


def _relay(answer: tuple[bytes, str]) -> Response:
    content, media_type = answer
    return Response(content=content, media_type=media_type, headers={"Cache-Control": "no-store"})


def create_app(settings: Settings) -> FastAPI:
    frames = FrameStore()
    previewer = Previewer(settings.segmenter)
    jobs = JobRunner(settings.root, settings.out, settings.segmenter)
    live = LiveApi(settings.live_api)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        frames.close()
        import ray

        ray.shutdown()  # the local Ray a job started; a no-op when none did

    app = FastAPI(title="xsam-pipeline ui", lifespan=lifespan)

    @app.exception_handler(PipelineError)
    async def pipeline_error(_: Request, exc: PipelineError) -> JSONResponse:
        status = 409 if isinstance(exc, JobBusyError) else 404 if isinstance(exc, NoSuchPathError) else \
            exc.status if isinstance(exc, LiveApiError) else 400
        return _error(status, exc.kind, str(exc), **exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()]
        return _error(400, "BadRequest", "; ".join(reasons))

    @app.exception_handler(ValidationError)
    async def bad_options(_: Request, exc: ValidationError) -> JSONResponse:
        reasons = [f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()]
        return _error(400, "InvalidOptions", "; ".join(reasons))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        """A fault of the server itself: the page still gets a reason."""
        return _error(500, type(exc).__name__, f"the server failed: {exc}")

    def source(path: str) -> Path:
        found = resolve_inside(settings.root, path)
        if not is_source(found):
            raise NoSuchPathError(path, "not a video file or a frame folder")
        return found

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    def config() -> dict:
        return {"root": str(settings.root), "out": str(settings.out), "live_api": settings.live_api,
                "segmenter": settings.segmenter}

    @app.get("/api/sources")
    def sources() -> dict:
        return {"sources": list_sources(settings.root)}

    @app.get("/api/source")
    def source_info(path: str) -> dict:
        info = frames.info(source(path))
        return {"path": path, "name": Path(path).name, "width": info.width, "height": info.height, "fps": info.fps,
                "frame_count": info.frame_count}

    @app.get("/api/frame")
    def frame(path: str, index: int) -> Response:
        return Response(frames.jpeg(source(path), index), media_type="image/jpeg")

    @app.post("/api/preview")
    def preview(request: PreviewRequest) -> dict:
        path = source(request.path)
        image = frames.image(path, request.frame)
        with tempfile.TemporaryDirectory() as scratch:
            prompts = parse_page_prompts(request.prompts, Path(scratch))
        check_on_frame(prompts, str(path), *image.shape[:2])
        here = [p for p in prompts if p.frame_index == request.frame]
        if not here:
            raise PipelineError(str(path), "no prompt on this frame: place one here, or go to a prompt's frame",
                                request.frame)
        instances, seconds = previewer.run(image, here)
        return {"frame": request.frame, "seconds": round(seconds, 3), "prompt_ids": [p.prompt_id for p in here],
                "objects": page_objects(instances), "overlay": overlay_png(instances)}

    @app.post("/api/jobs")
    def start_job(request: JobRequest) -> dict:
        path = source(request.path)
        sources = [path.parent if request.scope == "folder" else path]
        return jobs.start(request.name, sources, request.prompts, request.keyframe_every).status()

    @app.get("/api/jobs")
    def job_names() -> dict:
        return {"jobs": jobs.names()}

    @app.get("/api/jobs/{name}")
    def job_status(name: str) -> dict:
        return jobs.get(name).status()

    @app.get("/api/jobs/{name}/videos/{stream_id}/frame")
    def result_frame(name: str, stream_id: str, index: int) -> Response:
        return Response(frames.jpeg(jobs.video(name, stream_id).source, index), media_type="image/jpeg")

    @app.get("/api/jobs/{name}/videos/{stream_id}/records/{index}")
    def result_record(name: str, stream_id: str, index: int) -> dict:
        video = jobs.video(name, stream_id)
        record = video.log.record(index)
        return {"frame": index, "frames": len(video.log), "kind": record.kind, "reason": record.reason,
                "absent_track_ids": list(record.absent_track_ids), "objects": page_objects(record.instances),
                "overlay": overlay_png(record.instances)}

    @app.get("/api/jobs/{name}/videos/{stream_id}/tracks")
    def result_tracks(name: str, stream_id: str) -> dict:
        return {"tracks": jobs.video(name, stream_id).log.track_figures()}

    @app.get("/api/jobs/{name}/files/{file:path}")
    def download(name: str, file: str) -> FileResponse:
        job = jobs.get(name)
        path = resolve_inside(job.out_dir, file)
        if not path.is_file():
            raise NoSuchPathError(file, "not a file")
        return FileResponse(path, filename=path.name)

    @app.get("/api/live/streams")
    def live_streams() -> Response:
        return _relay(live.request("GET", "streams"))

    @app.post("/api/live/streams")
    def live_add_stream(request: LiveStreamRequest) -> Response:
        return _relay(live.request("POST", "streams", body=request.model_dump(exclude_none=True)))

    @app.get("/api/live/streams/{stream_id}")
    def live_stream(stream_id: str) -> Response:
        return _relay(live.request("GET", "streams", stream_id))

    @app.get("/api/live/streams/{stream_id}/frame.jpg")
    def live_frame(stream_id: str) -> Response:
        return _relay(live.request("GET", "streams", stream_id, "frame.jpg"))

    @app.post("/api/live/streams/{stream_id}/prompts")
    def live_add_prompts(stream_id: str, request: LivePromptsRequest) -> Response:
        return _relay(live.request("POST", "streams", stream_id, "prompts", body=request.model_dump()))

    @app.delete("/api/live/streams/{stream_id}/prompts/{prompt_id}")
    def live_remove_prompt(stream_id: str, prompt_id: str) -> Response:
        return _relay(live.request("DELETE", "streams", stream_id, "prompts", prompt_id))

    return app

