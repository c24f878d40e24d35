"""The pod's environment, parsed once (a rank's own variables are chitu_diffusion.parallel.launch's to read).

The variables are the contract's (chitu_api.podenv.PodEnv: the operator writes its env list from the same model).
Outside a cluster (`--job-file`) most are absent and the spec supplies the topology instead
(plan.build_topology). What the worker adds is how a bad variable fails: InvalidInput, exit 2, since a restart
with the same pod spec cannot help.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from chitu_api import podenv
from chitu_worker.failures import InvalidInput


class PodEnv(podenv.PodEnv):
    """The contract's pod environment; an unusable variable is the worker's InvalidInput naming it."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> PodEnv:
        try:
            return super().from_environ(environ)
        except podenv.InvalidPodEnv as err:
            raise InvalidInput(err.variable, err.detail) from None
