"""``chitu-operator``: run the GenerationJob operator (kopf) against a cluster.

    chitu-operator [--kubeconfig PATH] [--namespace NS ... | --all-namespaces] [--liveness URL]
                   [--log-format plain|json] [--verbose]

Standalone (no kopf peering): run exactly one replica (the chart's Deployment uses the Recreate
strategy). A second replica would not corrupt anything (every action is idempotent and derived from
the cluster) but would double the work and the events.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import kopf
import yaml
from kubernetes import client, config

from chitu_api.operatorconfig import OperatorConfig, load_operator_config, parse_operator_config

from . import (
    handlers,  # noqa: F401  (registers the handlers with kopf)
    leader,
)
from .expectations import Expectations
from .gang import KubeClients
from .leader import LeaseConfig
from .metrics import OperatorMetrics

KOPF_REQUEST_CONNECTIONS = 16  # kopf's concurrent requests besides its watches (patches, events)
CONNECTIONS = 32  # kopf's handler threads (min(32, CPUs + 4)) and gang's 16 creators at most
CONFIG_ENV = "CHITU_OPERATOR_CONFIG"  # the chart hands the configuration over as YAML text (configmap-operator.yaml)

# "plain" is kopf's full text format (time, logger, level) with the object's namespace/name as prefix;
# "json" puts the object reference under the key "object".
LOG_FORMATS = {"plain": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chitu-operator", description="Run the GenerationJob operator.")
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig to use (default: in-cluster service account, then $KUBECONFIG)"
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", metavar="NS", action="append", help="serve GenerationJobs of this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (the default)")
    parser.add_argument("--liveness", metavar="URL", help="kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="operator configuration file (chitu_api.operatorconfig); "
        f"default: the YAML text in ${CONFIG_ENV}, else the built-in defaults",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port (0: off)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: serve jobs only while holding the leader Lease",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader Lease (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument("--lease-name", default="chitu-operator", help="name of the leader Lease")
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="plain")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


class _DropRoutineSuccess(logging.Filter):
    """kopf logs "Timer 'reconcile' succeeded." on every tick of every job and "Handler 'observe_job'
    succeeded." on every event of every job: keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(("Timer ", "Handler 'observe_job'")) and message.endswith(" succeeded."))


def connect(kubeconfig: str | None) -> client.ApiClient:
    """The API client for the operator's own calls, from the same credentials kopf logs in with; its connection
    pool holds a connection for each thread that calls (kopf's handler threads and gang's creators), so none is
    opened and dropped per call."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS
    return client.ApiClient(configuration)


def operator_config(path: str | None) -> OperatorConfig:
    """--config FILE, else $CHITU_OPERATOR_CONFIG (YAML text), else the built-in defaults."""
    if path or not os.environ.get(CONFIG_ENV):
        return load_operator_config(path)
    return parse_operator_config(yaml.safe_load(os.environ[CONFIG_ENV]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=LOG_FORMATS[args.log_format],
        log_prefix=args.log_format == "plain",
        log_refkey="object" if args.log_format == "json" else None,
    )
    logging.getLogger("kopf.objects").addFilter(_DropRoutineSuccess())
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # what kopf.login_with_kubeconfig reads
    api = connect(args.kubeconfig)
    metrics = OperatorMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    if args.leader_elect:
        lease = LeaseConfig(namespace=args.lease_namespace, name=args.lease_name)
        coordination = client.CoordinationV1Api(api)
        leader.acquire(coordination, lease, on_wait=logging.getLogger(__name__).debug)
        # Lost leadership: stop at once (client-go's way); the Deployment restarts us as a follower.
        leader.keep_renewing(coordination, lease, on_lost=lambda: os._exit(1))
    metrics.leader.set(1)
    memo = kopf.Memo(
        kube=KubeClients.from_api_client(api),
        kubeconfig=args.kubeconfig,
        metrics=metrics,
        config=operator_config(args.config),
        gpu_clock={},
        expectations=Expectations(),
        # kopf's connections: its watches hold one each (jobs and pods per namespace, namespaces, CRDs), the
        # rest serve status patches and events.
        api_connections=KOPF_REQUEST_CONNECTIONS + 2 * len(args.namespace or [None]) + 2,
    )
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
