"""Endpoint scheduling: filter → score → pick plugins (llm-d style), configured like Kthena."""

from ferry_router.scheduler.config import SchedulerConfig, build_scheduler, load_config
from ferry_router.scheduler.framework import Scheduler, SchedulingContext, SchedulingError

__all__ = [
    "Scheduler",
    "SchedulerConfig",
    "SchedulingContext",
    "SchedulingError",
    "build_scheduler",
    "load_config",
]
