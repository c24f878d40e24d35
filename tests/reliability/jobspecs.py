"""Hypothesis strategies for GenerationJob manifests as a careless or hostile user writes them.

``job_specs()`` draws a spec whose every field is either a value the apiserver takes in a pod or one of
the kinds of bad value issue 14's probe found accepted and then hanging: label keys and values, env names
(``A=B``), quantities (``cpu: abc``), limits below requests, Secret / ServiceAccount / PriorityClass names,
tolerations, volumes (``hostPath: /``), prompts with control characters, oversized prompt lists. The worker
runs a script that exits at once (``FAST_WORKER``), so what is exercised is the contract and the operator.

The property the suites check with them: every drawn manifest is either refused at create (422, naming a
field) or reaches a terminal phase with a message, within a bounded time, without an operator traceback.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from chitu_api.names import GROUP, KIND, VERSION

FAST_WORKER = ["python", "-c", "pass"]
MAX_NAME = 40  # keeps pod hostnames (<job>-worker-<rank>) inside a DNS label

# Values the apiserver refuses in a pod (or a Kubernetes object name), one per rule broken.
BAD_LABEL_KEYS = ["a=b", "has space", "-lead", "trail-", "a/b/c", "Example.com/x", "/x", "x" * 64, ""]
BAD_LABEL_VALUES = ["has space", "-lead", "a" * 64, "a/b", "ünï"]
BAD_ENV_NAMES = ["A=B", "1ABC", "", "..X", "a b", "ÄÖ"]
BAD_QUANTITIES = ["abc", "1 Gi", "1gi", "-1", "", "1KB", "0x10", "Gi"]
BAD_OBJECT_NAMES = ["Bad_Name", "UPPER", "-lead", "a..b", "x" * 254, "white space"]
BAD_TOLERATIONS = [
    {"key": "bad key", "operator": "Exists"},
    {"key": "gpu", "operator": "Exists", "value": "x"},
    {"value": "x"},
    {"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 30},
    {"key": "gpu", "value": "not a label value"},
]
HOSTILE_VOLUMES = [{"hostPath": {"path": "/"}}, {"hostPath": {"path": "/var/run/docker.sock"}}]
CONTROL_CHARACTERS = "\x00\x07\x1b\r\n\t\x7f\u2028"

_DNS_LABEL_CHARS = string.ascii_lowercase + string.digits


def dns_labels(max_size: int = 20) -> st.SearchStrategy[str]:
    """Valid DNS-1123 labels: lower-case alphanumerics with inner '-'."""
    inner = st.text(_DNS_LABEL_CHARS + "-", max_size=max_size - 2)
    edge = st.sampled_from(_DNS_LABEL_CHARS)
    return st.builds(lambda a, mid, b: a + mid + b, edge, inner, edge).filter(lambda s: len(s) <= max_size)


def _either(good: st.SearchStrategy, bad: list) -> st.SearchStrategy:
    """Mostly a valid value, one time in five one of the known bad ones: a spec has a dozen such fields, so
    this keeps a good share of drawn specs valid (hypothesis shrinks towards the valid ones)."""
    if not bad:
        return good
    return st.integers(0, 4).flatmap(lambda pick: st.sampled_from(bad) if pick == 0 else good)


def label_maps() -> st.SearchStrategy[dict[str, str]]:
    keys = _either(
        st.one_of(dns_labels(), st.builds(lambda p, n: f"{p}.io/{n}", dns_labels(10), dns_labels())), BAD_LABEL_KEYS
    )
    return st.dictionaries(keys, _either(dns_labels(), BAD_LABEL_VALUES), max_size=3)


def env_lists() -> st.SearchStrategy[list[dict]]:
    names = _either(st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True), BAD_ENV_NAMES)
    plain = st.builds(lambda n, v: {"name": n, "value": v}, names, st.text(max_size=20))
    secret = st.builds(
        lambda n, s: {"name": n, "valueFrom": {"secretKeyRef": {"name": s, "key": "token"}}},
        names,
        _either(st.just("missing-secret"), BAD_OBJECT_NAMES),
    )
    return st.lists(st.one_of(plain, secret), max_size=3)


def quantities() -> st.SearchStrategy:
    good = st.one_of(st.integers(0, 8), st.sampled_from(["100m", "500m", "1", "2", "1Gi", "512Mi", "1e3"]))
    return _either(good, BAD_QUANTITIES)


def resources() -> st.SearchStrategy[dict]:
    amounts = st.dictionaries(st.sampled_from(["cpu", "memory", "ephemeral-storage"]), quantities(), max_size=2)
    return st.fixed_dictionaries({}, optional={"requests": amounts, "limits": amounts})


def tolerations() -> st.SearchStrategy[list[dict]]:
    good = st.builds(
        lambda key, effect: {"key": key, "operator": "Exists", "effect": effect},
        dns_labels(),
        st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    )
    return st.lists(_either(good, BAD_TOLERATIONS), max_size=2)


def prompts() -> st.SearchStrategy[list[str]]:
    """Prompts in any script, now and then with a control character somewhere."""
    text = st.text(st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1, max_size=60)
    controlled = st.builds(lambda head, char, tail: head + char + tail, text, st.sampled_from(CONTROL_CHARACTERS), text)
    return st.lists(st.integers(0, 9).flatmap(lambda pick: controlled if pick == 0 else text), min_size=1, max_size=4)


def job_specs() -> st.SearchStrategy[dict]:
    """A GenerationJob spec (CPU-only gang, fast worker) with pod-level values drawn as above."""
    worker = st.fixed_dictionaries(
        {"image": st.just("unused"), "command": st.just(FAST_WORKER)},
        optional={
            "env": env_lists(),
            "resources": resources(),
            "podLabels": label_maps(),
            "podAnnotations": st.dictionaries(_either(dns_labels(), BAD_LABEL_KEYS), st.text(max_size=20), max_size=2),
            "serviceAccountName": _either(dns_labels(), BAD_OBJECT_NAMES),
        },
    )
    scheduling = st.fixed_dictionaries(
        {},
        optional={
            "tolerations": tolerations(),
            "nodeSelector": label_maps(),
            "priorityClassName": _either(st.just("missing-priority"), BAD_OBJECT_NAMES),
        },
    )
    model = st.fixed_dictionaries(
        {"uri": st.just("/models/unused")},
        optional={"volume": _either(st.just({"emptyDir": {}}), HOSTILE_VOLUMES)},
    )
    return st.fixed_dictionaries(
        {
            "model": model,
            "prompts": prompts(),
            "worker": worker,
            "output": st.just({"uri": "s3://videos/prop"}),
            "parallelism": st.sampled_from([{"gpusPerPod": 0}, {"gpusPerPod": 0, "cfg": 2}]),
            "generation": st.just({"steps": 2, "frames": 1, "height": 16, "width": 16}),
            "scheduling": scheduling,
            "runPolicy": st.just({"backoffLimit": 0}),
        }
    )


def job_manifest(name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}
