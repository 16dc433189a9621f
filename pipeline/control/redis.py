"""The Redis control stream: commands as entries of a Redis stream, replies on ``<stream>:replies``."""

from __future__ import annotations

import json
import logging
import threading
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import Field, TypeAdapter, ValidationError

from operators.extras import require
from pipeline.control.commands import (MAX_PROMPTS, CommandError, CommandHandler, PromptEntry, PromptId, CommandBody,
                                       body_error)

log = logging.getLogger("pipeline.live")


class _StreamCommand(CommandBody):
    stream_id: str = Field(max_length=64)


class AddStream(CommandBody):
    op: Literal["add_stream"]
    source: str = Field(min_length=1, max_length=4096)
    stream_id: Optional[str] = Field(default=None, max_length=64)
    prompts: list[PromptEntry] = Field(default_factory=list, max_length=MAX_PROMPTS)


class RemoveStream(_StreamCommand):
    op: Literal["remove_stream"]


class AddPrompts(_StreamCommand):
    op: Literal["add_prompts"]
    prompts: list[PromptEntry] = Field(min_length=1, max_length=MAX_PROMPTS)
    prompt_ids: Optional[list[PromptId]] = Field(default=None, max_length=MAX_PROMPTS)


class RemovePrompts(_StreamCommand):
    op: Literal["remove_prompts"]
    prompt_ids: list[PromptId] = Field(min_length=1, max_length=MAX_PROMPTS)


class Status(CommandBody):
    op: Literal["status"]


COMMANDS = TypeAdapter(Annotated[Union[AddStream, RemoveStream, AddPrompts, RemovePrompts, Status],
                                 Field(discriminator="op")])


def apply_command(handler: CommandHandler, text: str) -> Any:
    """One control-stream entry's JSON -> the handler's result; CommandError names what is wrong with it."""
    try:
        command = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"the command is not JSON ({exc})") from None
    try:
        command = COMMANDS.validate_python(command)
    except ValidationError as exc:
        raise body_error(exc) from None
    if isinstance(command, Status):
        return {s["stream_id"]: s["status"] for s in handler.streams()}
    if isinstance(command, AddStream):
        return handler.add_stream(command.source, command.stream_id, command.prompts)
    if isinstance(command, RemoveStream):
        report = handler.remove_stream(command.stream_id)
        return {"stream_id": command.stream_id, "status": report["status"]}
    if isinstance(command, AddPrompts):
        return handler.add_prompts(command.stream_id, command.prompts, command.prompt_ids)
    return handler.remove_prompts(command.stream_id, command.prompt_ids)


class RedisControl:
    """Reads control commands from a Redis stream (a daemon thread, ``XREAD``) into a :class:`CommandHandler`.

    Each command is one entry with a field ``command`` holding JSON; the outcome goes to
    ``<stream>:replies`` as ``{"id": <entry id>, "ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``
    (docs/live.md lists the commands). Only entries added after :meth:`start` are read.
    """

    def __init__(self, handler: CommandHandler, url: str) -> None:
        redis = require("redis")

        parts = urlsplit(url)
        self.key = parse_qs(parts.query).get("stream", ["xsam:control"])[-1]
        self.replies = self.key + ":replies"
        self.client = redis.Redis.from_url(urlunsplit(parts._replace(query="")), decode_responses=True,
                                           socket_timeout=5, socket_connect_timeout=2)
        self.handler = handler
        self.handled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-control", daemon=True)
        self._last_id = "$"

    def start(self) -> "RedisControl":
        try:  # the position to read from is fixed now, so commands sent right after start() are not missed
            latest = self.client.xrevrange(self.key, count=1)
            self._last_id = latest[0][0] if latest else "0-0"
        except Exception as exc:  # noqa: BLE001 - Redis down at start: read from its next entries
            log.warning("control stream %s unreachable at start: %s", self.key, exc)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                batches = self.client.xread({self.key: self._last_id}, block=500, count=16)
                delay = 0.2
            except Exception as exc:  # noqa: BLE001 - broker down: retry with backoff, the runner goes on
                log.warning("control stream %s: %s; retrying in %.1f s", self.key, exc, delay)
                self._stop.wait(delay)
                delay = min(5.0, delay * 2)
                continue
            for _, entries in batches:
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    reply = self.handle(entry_id, fields.get("command", ""))
                    try:
                        self.client.xadd(self.replies, {"reply": json.dumps(reply)}, maxlen=1000, approximate=True)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("control stream %s: cannot reply: %s", self.key, exc)

    def handle(self, entry_id: str, text: str) -> dict:
        self.handled += 1
        try:
            result = apply_command(self.handler, text)
        except CommandError as exc:
            log.warning("control command %s refused: %s", entry_id, exc.reason)
            return {"id": entry_id, "ok": False, "error": exc.reason}
        except Exception as exc:  # noqa: BLE001 - a command the runner fails on is answered, never fatal
            log.exception("control command %s failed", entry_id)
            return {"id": entry_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        log.info("control %s: %s", entry_id, result)
        return {"id": entry_id, "ok": True, "result": result}
