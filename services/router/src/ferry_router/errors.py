"""OpenAI-style error bodies and the one exception type the request path raises.

Every failure the router produces is a :class:`RouterError`: an HTTP status, a message meant for a
human, the OpenAI ``type``/``param``/``code`` fields and the finish reason recorded in metrics and
the access log (spec §4.1 names). Client mistakes are 4xx; upstream trouble is 502/503/504.
"""

from __future__ import annotations

import math
from typing import Any

import orjson


class RouterError(Exception):
    """A request that cannot be served; rendered as ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        reason: str = "request_failed",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.reason = reason
        self.headers: dict[str, str] = {}

    def body(self, *, anthropic: bool = False) -> bytes:
        """The OpenAI error body, or Anthropic's shape for a ``/v1/messages`` request."""
        if anthropic:
            return anthropic_error_body(self.status, self.message)
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
    return orjson.dumps({"error": error})


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    kind = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def client_error(
    status: int, message: str, code: str, reason: str, *, param: str | None = None
) -> RouterError:
    """A 4xx the client can fix (``invalid_request_error``)."""
    return RouterError(status, message, param=param, code=code, reason=reason)


def server_error(
    status: int, message: str, code: str, reason: str, *, retry_after: float | None = None
) -> RouterError:
    """A 5xx (``server_error``); ``retry_after`` seconds become a ``Retry-After`` header."""
    error = RouterError(status, message, type="server_error", code=code, reason=reason)
    if retry_after is not None:
        error.headers["Retry-After"] = str(max(math.ceil(retry_after), 1))
    return error


# --- client errors (4xx) ------------------------------------------------------------------------


def unauthorized(detail: str) -> RouterError:
    error = client_error(401, f"Unauthorized: {detail}", "invalid_api_key", "authentication")
    error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return error


def invalid_json(detail: str) -> RouterError:
    return client_error(400, f"request body is not valid JSON: {detail}", "invalid_json", "request_parsing")


def not_an_object() -> RouterError:
    return client_error(400, "request body must be a JSON object", "invalid_json", "request_parsing")


def missing_model() -> RouterError:
    message = "you must provide a model parameter (a non-empty string)"
    return client_error(400, message, "missing_model", "request_parsing", param="model")


def invalid_param(param: str, message: str) -> RouterError:
    """A field of the request that the router cannot serve as given."""
    return client_error(400, message, "invalid_request", "request_parsing", param=param)


def missing_prompt(detail: str) -> RouterError:
    return client_error(400, detail, "invalid_prompt", "prompt_parsing", param="messages")


def unknown_model(model: str) -> RouterError:
    message = f"route not found: the model {model!r} does not exist or no route matches this request"
    return client_error(404, message, "model_not_found", "route_not_found", param="model")


def body_too_large(limit: int) -> RouterError:
    message = f"request body exceeds the limit of {limit} bytes"
    return client_error(413, message, "request_too_large", "request_parsing")


def unsupported_path(method: str, path: str) -> RouterError:
    return client_error(404, f"unsupported endpoint: {method} {path}", "unknown_url", "request_parsing")


def method_not_allowed(method: str, path: str) -> RouterError:
    message = f"method {method} is not allowed on {path}"
    return client_error(405, message, "method_not_allowed", "request_parsing")


def no_model_endpoint(tried: str) -> RouterError:
    """Every endpoint answered 404 for a LoRA request: none has the adapter."""
    message = f"no endpoint serves the requested model (tried {tried})"
    return client_error(404, message, "model_not_found", "proxy")


def provider_missing(key: str) -> RouterError:
    return client_error(
        404, f"external model provider {key} not found", "provider_not_found", "provider_discovery"
    )


def provider_path(provider_type: str, path: str) -> RouterError:
    message = f"path {path} is not supported by {provider_type} providers"
    return client_error(400, message, "unsupported_path", "provider_request_build")


class RateLimited(RouterError):
    """429 from a token bucket; ``limit_type`` is the metric label (``input_tokens``/``output_tokens``)."""

    def __init__(self, kind: str, model: str, retry_after: float | None = None) -> None:
        super().__init__(
            429,
            f"{kind} token rate limit exceeded for model {model!r}; retry later",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            reason="rate_limit",
        )
        self.limit_type = f"{kind}_tokens"
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(math.ceil(retry_after), 1))


def rate_limited(kind: str, model: str, retry_after: float | None = None) -> RateLimited:
    return RateLimited(kind, model, retry_after)


# --- server side (5xx) --------------------------------------------------------------------------


def internal() -> RouterError:
    return server_error(500, "internal router error", "internal_error", "internal")


def server_missing(key: str) -> RouterError:
    message = f"model server {key} is not known to the router"
    return server_error(503, message, "model_server_not_found", "pod_discovery")


def no_endpoints(key: str, detail: str = "", retry_after: float | None = None) -> RouterError:
    message = f"no ready endpoints for model server {key}" + (f": {detail}" if detail else "")
    return server_error(503, message, "no_endpoints", "pod_discovery", retry_after=retry_after)


def unschedulable(key: str, detail: str) -> RouterError:
    message = f"no endpoint of model server {key} can take the request: {detail}"
    return server_error(503, message, "no_capacity", "scheduling")


def upstream_failed(detail: str) -> RouterError:
    return server_error(502, f"upstream request failed: {detail}", "bad_gateway", "proxy")


def upstream_timeout(detail: str) -> RouterError:
    return server_error(504, f"upstream timed out: {detail}", "upstream_timeout", "proxy")


def provider_not_ready(key: str) -> RouterError:
    return server_error(503, f"external provider {key} is not ready", "provider_not_ready", "provider_config")


def queue_timeout() -> RouterError:
    return server_error(504, "Request processing timed out in queue", "queue_timeout", "scheduling")


def queue_client_gone() -> RouterError:
    return server_error(
        503, "Client disconnected while waiting in queue", "client_disconnected", "scheduling"
    )
