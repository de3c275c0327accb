"""``ferry-router``: settings from the environment (see :mod:`ferry_router.settings`)."""

from __future__ import annotations

import os
import sys

from ferry_schemas.runtime import ServiceSettings, setup_tracing
from ferry_schemas.runtime.lifecycle import run_main
from ferry_schemas.runtime.logs import configure_logging

from ferry_router.observability import Tracing
from ferry_router.service import run
from ferry_router.settings import RouterSettings
from ferry_router.workers import supervise


def main() -> None:
    common = ServiceSettings(service="router")
    configure_logging(common.log_level, "ferry-router")
    try:
        settings = RouterSettings()
    except ValueError as exc:
        sys.exit(f"ferry-router: {exc}")
    if settings.workers > 1 and "FERRY_ROUTER_WORKER_INDEX" not in os.environ:
        sys.exit(supervise(settings))
    setup_tracing("ferry-router")
    Tracing.enabled = Tracing.configured()
    run_main(run(settings, common.nats_url))


if __name__ == "__main__":
    main()
