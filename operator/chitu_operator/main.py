"""``chitu-operator``: run the GenerationJob operator (kopf) against a cluster.

    chitu-operator [--kubeconfig PATH] [--namespace NS | --all-namespaces] [--liveness URL]
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

from . import handlers  # noqa: F401  (registers the handlers with kopf)
from .gang import KubeClients

CONFIG_ENV = "CHITU_OPERATOR_CONFIG"  # the chart hands the configuration over as YAML text (configmap-operator.yaml)

# "plain" is kopf's full text format (time, logger, level) with the object's namespace/name as prefix;
# "json" puts the object reference under the key "object".
LOG_FORMATS = {"plain": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chitu-operator", description="Run the GenerationJob operator.")
    parser.add_argument("--kubeconfig", metavar="PATH",
                        help="kubeconfig to use (default: in-cluster service account, then $KUBECONFIG)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", metavar="NS", help="serve GenerationJobs of this namespace only")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (the default)")
    parser.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="plain")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


class _DropTimerSuccess(logging.Filter):
    """kopf logs "Timer 'reconcile' succeeded." on every tick of every job: keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Timer ") and record.getMessage().endswith(" succeeded."))


def connect(kubeconfig: str | None) -> client.ApiClient:
    """The API client for the operator's own calls, from the same credentials kopf logs in with."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def operator_config(path: str | None) -> OperatorConfig:
    """--config FILE, else $CHITU_OPERATOR_CONFIG (YAML text), else the built-in defaults."""
    if path or not os.environ.get(CONFIG_ENV):
        return load_operator_config(path)
    return parse_operator_config(yaml.safe_load(os.environ[CONFIG_ENV]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=LOG_FORMATS[args.log_format], log_prefix=args.log_format == "plain",
                   log_refkey="object" if args.log_format == "json" else None)
    logging.getLogger("kopf.objects").addFilter(_DropTimerSuccess())
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # what kopf.login_with_kubeconfig reads
    memo = kopf.Memo(kube=KubeClients.from_api_client(connect(args.kubeconfig)), kubeconfig=args.kubeconfig,
                     config=operator_config(None))
    kopf.run(standalone=True, clusterwide=not args.namespace, namespaces=[args.namespace] if args.namespace else (),
             liveness_endpoint=args.liveness, memo=memo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
