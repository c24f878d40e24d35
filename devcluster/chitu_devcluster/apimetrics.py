"""The apiserver's own request counters, read from its /metrics: how many calls of each kind a run cost, and
how many the apiserver refused (4xx), whoever made them (the operator, the controller-manager, workers).

    before = request_counters(api)
    ...  # the run
    delta = RequestCounters.since(before, request_counters(api))
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from kubernetes import client

_LINE = re.compile(
    r"^(?P<name>apiserver_request_total|apiserver_request_duration_seconds_sum)"
    r"\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+-]+)$"
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class RequestCounters:
    """apiserver_request_total by (verb, resource[/subresource], code), and the seconds the apiserver spent
    serving requests (apiserver_request_duration_seconds_sum) by (verb, resource[/subresource])."""

    requests: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)

    @classmethod
    def since(cls, before: RequestCounters, after: RequestCounters) -> RequestCounters:
        return cls(after.requests - before.requests, after.seconds - before.seconds)

    def client_errors(self) -> dict[str, float]:
        """4xx responses by "VERB resource CODE"."""
        return {
            f"{verb} {resource} {code}": count
            for (verb, resource, code), count in sorted(self.requests.items())
            if code.startswith("4")
        }

    def by_call(self) -> Counter:
        """Requests by (verb, resource), all codes together."""
        calls: Counter = Counter()
        for (verb, resource, _), count in self.requests.items():
            calls[(verb, resource)] += count
        return calls


def request_counters(api: client.ApiClient) -> RequestCounters:
    """The counters as the apiserver reports them now (cumulative since it started)."""
    response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    text = (response[0] if isinstance(response, tuple) else response).data.decode()
    counters = RequestCounters()
    for line in text.splitlines():
        if match := _LINE.match(line):
            labels = dict(_LABEL.findall(match["labels"]))
            resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            if match["name"] == "apiserver_request_total":
                counters.requests[(labels.get("verb", ""), resource, labels.get("code", ""))] += float(match["value"])
            else:
                counters.seconds[(labels.get("verb", ""), resource)] += float(match["value"])
    return counters
