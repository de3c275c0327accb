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


# --- client errors (4xx) ------------------------------------------------------------------------


def unauthorized(detail: str) -> RouterError:
    error = RouterError(401, f"Unauthorized: {detail}", code="invalid_api_key", reason="authentication")
    error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return error


def invalid_json(detail: str) -> RouterError:
    return RouterError(
        400, f"request body is not valid JSON: {detail}", code="invalid_json", reason="request_parsing"
    )


def not_an_object() -> RouterError:
    return RouterError(
        400, "request body must be a JSON object", code="invalid_json", reason="request_parsing"
    )


def missing_model() -> RouterError:
    return RouterError(
        400,
        "you must provide a model parameter (a non-empty string)",
        param="model",
        code="missing_model",
        reason="request_parsing",
    )


def invalid_param(param: str, message: str) -> RouterError:
    """A field of the request that the router cannot serve as given."""
    return RouterError(400, message, param=param, code="invalid_request", reason="request_parsing")


def missing_prompt(detail: str) -> RouterError:
    return RouterError(400, detail, param="messages", code="invalid_prompt", reason="prompt_parsing")


def unknown_model(model: str) -> RouterError:
    return RouterError(
        404,
        f"route not found: the model {model!r} does not exist or no route matches this request",
        param="model",
        code="model_not_found",
        reason="route_not_found",
    )


def body_too_large(limit: int) -> RouterError:
    return RouterError(
        413,
        f"request body exceeds the limit of {limit} bytes",
        code="request_too_large",
        reason="request_parsing",
    )


def unsupported_path(method: str, path: str) -> RouterError:
    return RouterError(
        404, f"unsupported endpoint: {method} {path}", code="unknown_url", reason="request_parsing"
    )


def method_not_allowed(method: str, path: str) -> RouterError:
    return RouterError(
        405, f"method {method} is not allowed on {path}", code="method_not_allowed", reason="request_parsing"
    )


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


def server_missing(key: str) -> RouterError:
    return RouterError(
        503,
        f"model server {key} is not known to the router",
        type="server_error",
        code="model_server_not_found",
        reason="pod_discovery",
    )


def no_endpoints(key: str) -> RouterError:
    return RouterError(
        503,
        f"no ready endpoints for model server {key}",
        type="server_error",
        code="no_endpoints",
        reason="pod_discovery",
    )


def unschedulable(key: str, detail: str) -> RouterError:
    return RouterError(
        503,
        f"no endpoint of model server {key} can take the request: {detail}",
        type="server_error",
        code="no_capacity",
        reason="scheduling",
    )


def upstream_failed(detail: str) -> RouterError:
    return RouterError(
        502, f"upstream request failed: {detail}", type="server_error", code="bad_gateway", reason="proxy"
    )


def upstream_timeout(detail: str) -> RouterError:
    return RouterError(
        504, f"upstream timed out: {detail}", type="server_error", code="upstream_timeout", reason="proxy"
    )


def not_supported(detail: str) -> RouterError:
    return RouterError(501, detail, type="server_error", code="not_implemented", reason="route_not_found")


def provider_missing(key: str) -> RouterError:
    return RouterError(
        404,
        f"external model provider {key} not found",
        type="invalid_request_error",
        code="provider_not_found",
        reason="provider_discovery",
    )


def provider_not_ready(key: str) -> RouterError:
    return RouterError(
        503,
        f"external provider {key} is not ready",
        type="server_error",
        code="provider_not_ready",
        reason="provider_config",
    )


def provider_path(provider_type: str, path: str) -> RouterError:
    return RouterError(
        400,
        f"path {path} is not supported by {provider_type} providers",
        type="invalid_request_error",
        code="unsupported_path",
        reason="provider_request_build",
    )
