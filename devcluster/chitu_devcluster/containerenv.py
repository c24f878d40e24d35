"""A pod's environment as the kubelet would build it, plus the dev cluster's DNS stand-in.

Pure functions over the pod as a plain dict (the API's JSON): the node agent passes lookups for
Secrets and ConfigMaps, so this module needs no cluster to be understood or tested.

Order, as in the kubelet: ``envFrom`` sources first (with their prefix), then ``env`` entries in
order, each value ``$(VAR)``-expanded against what is defined so far and the service variables.
Command and args are expanded against the final environment. Then every value naming a cluster
hostname (``*.svc`` or ``*.svc.cluster.local``) has that hostname replaced by 127.0.0.1, because
all pods of the dev cluster are local processes sharing the loopback interface.

A pod's IP (status.podIP, the downward API's ``status.podIP``) is this machine's own non-loopback address
(``pod_ip``): the apiserver refuses loopback and link-local addresses in Endpoints and EndpointSlices, so with
127.0.0.1 every endpoint write of the controller-manager for a job's Service fails with 422, retried for ever.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping

LOOPBACK = "127.0.0.1"
# Any routable address: connecting a UDP socket sends nothing, it only makes the kernel pick the source address.
_ROUTE_PROBE = ("203.0.113.1", 9)

# name -> key/value data (decoded), or None when the object does not exist
Lookup = Callable[[str], "dict[str, str] | None"]

_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")
_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
_CLUSTER_HOST = re.compile(rf"(?<![-A-Za-z0-9.])(?:{_LABEL}\.)+svc(?:\.cluster\.local)?(?![-A-Za-z0-9.])")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class EnvError(Exception):
    """The container's env cannot be built yet (a missing Secret key, say): CreateContainerConfigError."""


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` -> ``$``, unknown references are left as they are."""

    def replace(match: re.Match) -> str:
        if match.group(1) == "$":
            return "$"
        return mapping.get(match.group(2), match.group(0))

    return _REFERENCE.sub(replace, text)


def rewrite_cluster_dns(value: str) -> str:
    """Replace every ``*.svc[.cluster.local]`` hostname in ``value`` with 127.0.0.1 (the DNS stand-in)."""
    return _CLUSTER_HOST.sub(LOOPBACK, value)


@functools.cache
def pod_ip() -> str:
    """The address pods report: the one this machine's default route leaves from, when the apiserver accepts it in
    Endpoints (not loopback, link-local or unspecified); 127.0.0.1 on a machine without such an address. Pods are
    local processes, so it reaches them as 127.0.0.1 does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_ROUTE_PROBE)
            address = ipaddress.ip_address(probe.getsockname()[0])
        except OSError:  # no route at all
            return LOOPBACK
    if address.is_loopback or address.is_link_local or address.is_unspecified:
        return LOOPBACK
    return str(address)


def field_value(pod: dict, path: str) -> str:
    """The value of a downward-API ``fieldRef`` (the pod's IP is ``pod_ip()``, the host's is the loopback address,
    where the node agent serves)."""
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip(),
        "status.podIPs": pod_ip(),
        "status.hostIP": LOOPBACK,
        "status.hostIPs": LOOPBACK,
    }
    if path in simple:
        return simple[path]
    match = _FIELD_KEY.match(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise EnvError(f"unsupported fieldRef.fieldPath {path!r}")


def _key_ref(kind: str, ref: dict, lookup: Lookup) -> str | None:
    """The value a secretKeyRef/configMapKeyRef names; None when it is optional and absent."""
    data = lookup(ref["name"])
    if data is not None and ref["key"] in data:
        return data[ref["key"]]
    if ref.get("optional"):
        return None
    what = f"{kind} {ref['name']!r}" if data is None else f"key {ref['key']!r} in {kind} {ref['name']!r}"
    raise EnvError(f"{what} not found")


def container_env(
    pod: dict, container: dict, secrets: Lookup, config_maps: Lookup, service_env: Mapping[str, str]
) -> dict[str, str]:
    """The container's own variables (envFrom, then env), expanded and DNS-rewritten."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref, lookup = (
            ("Secret", source["secretRef"], secrets)
            if "secretRef" in source
            else ("ConfigMap", source["configMapRef"], config_maps)
        )
        data = lookup(ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f"{kind} {ref['name']!r} not found")
        prefix = source.get("prefix", "")
        env.update({prefix + key: value for key, value in data.items()})
    for var in container.get("env", []):
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), {**service_env, **env})
            continue
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            value = _key_ref("Secret", source["secretKeyRef"], secrets)
        elif "configMapKeyRef" in source:
            value = _key_ref("ConfigMap", source["configMapKeyRef"], config_maps)
        else:
            raise EnvError(f"env {var['name']}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[var["name"]] = value
    return {name: rewrite_cluster_dns(value) for name, value in env.items()}


def container_argv(container: dict, env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` expanded against the final environment (the image's entrypoint is ignored)."""
    if not container.get("command"):
        raise EnvError(f"container {container['name']!r} has no command: the dev node ignores images")
    return [expand(part, env) for part in container["command"] + container.get("args", [])]
