"""The live service's HTTP API (``xsam-pipeline live --api-port``), relayed to the page from the same origin.

Only the live API's own endpoints are relayed, with their stream and prompt ids quoted into the path; its
answers (JSON, or the latest annotated frame as JPEG) are passed on with their status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from operators.errors import PipelineError

TIMEOUT_S = 5.0
#: The largest answer relayed (a 4K JPEG is a few MB).
MAX_BYTES = 32 * 1024 * 1024


class LiveApiError(PipelineError):
    """The live API is not configured, cannot be reached, or refused the request (its reason is kept)."""

    def __init__(self, source: str, reason: str, status: int = 502) -> None:
        super().__init__(source, reason)
        self.status = status


class LiveApi:
    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None

    def request(self, method: str, *path: str, body: dict | None = None) -> tuple[bytes, str]:
        """The answer's bytes and content type; :class:`LiveApiError` with the live API's reason otherwise."""
        if self.base_url is None:
            raise LiveApiError("--live-api", "no live service: start the page with --live-api URL", 404)
        url = self.base_url + "/" + "/".join(urllib.parse.quote(part, safe="") for part in path)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                return answer.read(MAX_BYTES), answer.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            raise LiveApiError(url, _reason(exc), exc.code if 400 <= exc.code < 500 else 502) from None
        except (urllib.error.URLError, OSError) as exc:
            raise LiveApiError(url, f"the live service does not answer ({getattr(exc, 'reason', exc)})") from None


def _reason(error: urllib.error.HTTPError) -> str:
    """The live API's own reason from its JSON error body (FastAPI's ``detail``), else the HTTP status."""
    try:
        body = json.loads(error.read(MAX_BYTES))
    except ValueError:
        return f"HTTP {error.code} {error.reason}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("reason") or json.dumps(detail)
    return str(detail)
