"""What a GenerationJob object says, read for people and scripts: pure functions over the API's JSON.

The status is a public contract (docs/generationjob.md): phase, conditions, progress, outputs, restarts. Nothing
here talks to a cluster, so the commands' output is unit-tested on plain dicts.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml

from chitu_api.names import ATTEMPT_LABEL

SUCCEEDED, FAILED = "Succeeded", "Failed"
FINISHED = frozenset({SUCCEEDED, FAILED})
OUTPUT_FORMATS = ("json", "yaml")


@dataclass(frozen=True)
class Progress:
    phase: str
    percent: int
    prompts_done: int
    prompts_total: int
    step: int
    steps: int

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


def progress(job: dict) -> Progress:
    status = job.get("status") or {}
    numbers = status.get("progress") or {}
    return Progress(
        phase=status.get("phase") or "Pending",
        percent=int(numbers.get("percent", 0)),
        prompts_done=int(numbers.get("promptsDone", 0)),
        prompts_total=int(numbers.get("promptsTotal", 0)),
        step=int(numbers.get("currentStep", 0)),
        steps=int(numbers.get("totalSteps", 0)),
    )


def failure_reason(job: dict) -> str:
    """`Reason: message` of the Failed condition (the operator's first root cause), else status.message."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == FAILED and condition.get("status") == "True":
            return f"{condition.get('reason', FAILED)}: {condition.get('message', '')}".rstrip(": ")
    return status.get("message") or "no reason recorded"


def outputs(job: dict) -> list[dict]:
    """status.outputs, one entry per finished prompt, by prompt index."""
    entries = (job.get("status") or {}).get("outputs") or []
    return sorted(entries, key=lambda entry: entry.get("index", 0))


def output_lines(job: dict) -> list[str]:
    """One line per stored file: `prompt-<index> <kind> <uri>` (what `submit --wait` prints on stdout)."""
    lines = []
    for entry in outputs(job):
        for kind in ("video", "metrics", "policy"):
            if entry.get(kind):
                lines.append(f"prompt-{entry['index']:04d} {kind:<7} {entry[kind]}")
    return lines


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kubectl's AGE, in the largest unit that fits twice: 119s, 2m, 119m, 2h, 47h, 2d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def list_table(jobs: Iterable[dict], *, all_namespaces: bool, now: datetime.datetime | None = None) -> str:
    header = ["NAME", "PHASE", "PROGRESS", "PROMPTS", "RESTARTS", "AGE"]
    rows = [["NAMESPACE", *header] if all_namespaces else header]
    for job in jobs:
        meta, state = job["metadata"], progress(job)
        row = [
            meta["name"],
            state.phase,
            f"{state.percent}%",
            f"{state.prompts_done}/{state.prompts_total}",
            str((job.get("status") or {}).get("restarts", 0)),
            age(meta.get("creationTimestamp"), now),
        ]
        rows.append([meta.get("namespace", ""), *row] if all_namespaces else row)
    if len(rows) == 1:
        return "No GenerationJobs found."
    return table(rows)


def describe(job: dict, pods: Sequence[dict] = (), now: datetime.datetime | None = None) -> str:
    """`chitu status NAME`: phase and reason, progress, conditions, per-prompt outputs, restarts, pods."""
    meta, status, state = job["metadata"], job.get("status") or {}, progress(job)
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', '')}",
        f"Phase:       {state.phase}" + (f" ({failure_reason(job)})" if state.phase == FAILED else ""),
        f"Progress:    {state.percent}%  prompts {state.prompts_done}/{state.prompts_total}, "
        f"step {state.step}/{state.steps}",
        f"Restarts:    {status.get('restarts', 0)}",
        f"World size:  {status.get('worldSize', '?')}",
        f"Started:     {status.get('startTime', '-')}",
        f"Completed:   {status.get('completionTime', '-')}",
    ]
    if status.get("message"):
        lines.append(f"Message:     {status['message']}")
    conditions = status.get("conditions") or []
    if conditions:
        lines += ["", "Conditions:"]
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        rows += [
            [
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason", ""),
                age(c.get("lastTransitionTime"), now),
                c.get("message", ""),
            ]
            for c in conditions
        ]
        lines += ["  " + line for line in table(rows).splitlines()]
    entries = outputs(job)
    lines += ["", "Outputs:" if entries else "Outputs:    none yet"]
    for entry in entries:
        lines.append(f"  prompt {entry['index']}: {entry.get('prompt', '')!r}")
        lines += [f"    {kind:<8}{entry[kind]}" for kind in ("video", "metrics", "policy") if entry.get(kind)]
    if pods:
        lines += ["", "Pods:"]
        rows = [["NAME", "PHASE", "RESTART-ATTEMPT", "NODE"]]
        rows += [
            [
                pod["metadata"]["name"],
                (pod.get("status") or {}).get("phase", ""),
                pod["metadata"].get("labels", {}).get(ATTEMPT_LABEL, ""),
                (pod.get("spec") or {}).get("nodeName", ""),
            ]
            for pod in pods
        ]
        lines += ["  " + line for line in table(rows).splitlines()]
    return "\n".join(lines)


def dump(document: object, output_format: str) -> str:
    """`-o json` / `-o yaml` of an object or a list (kubectl's shapes: a List wraps several items)."""
    if output_format == "json":
        return json.dumps(document, indent=2, sort_keys=False)
    return yaml.safe_dump(document, sort_keys=False).rstrip("\n")


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items}
