"""The GenerationJob operator (kopf): runs each job as a gang of worker pods.

Modules: ``names`` (shared names), ``spec`` (typed spec), ``pods`` (pod observations), ``status``
(phases, conditions), ``lifecycle`` (the pure ``decide``), ``manifests`` (pure builders), ``rbac``
(rules), ``gang`` (cluster I/O), ``handlers`` (kopf), ``main`` (the ``chitu-operator`` CLI).
"""
