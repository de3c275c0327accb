"""kube-apiserver's own request counter (``apiserver_request_total``), read through ``/metrics``.

Used by the benchmark (requests per booster by verb and resource) and by the steady-state test
(no LIST). Counts are cumulative; subtract two snapshots to get what happened in between.
"""

from __future__ import annotations

import re
from collections import Counter

from tests.conftest import KubeEnv

RequestKey = tuple[str, str]
"""(verb, resource[/subresource])."""

_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_request_counts(text: str) -> Counter[RequestKey]:
    counts: Counter[RequestKey] = Counter()
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource = f"{resource}/{labels['subresource']}"
        counts[(labels.get("verb", ""), resource)] += int(float(match["value"]))
    return counts


def request_counts(kube: KubeEnv) -> Counter[RequestKey]:
    """The API server's request counts so far, by verb and resource."""
    return parse_request_counts(kube.kubectl_run("get", "--raw", "/metrics").stdout)


def delta(after: Counter[RequestKey], before: Counter[RequestKey]) -> Counter[RequestKey]:
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0})
