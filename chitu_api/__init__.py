"""The GenerationJob contract: the one torch-free, kopf-free package every layer reads.

- `generationjob`: the spec models (descriptions, defaults, bounds, CEL rules beside the fields), parse_spec and
  InvalidSpec; errors name the field.
- `jobstatus`: the status models (phase, conditions, progress, outputs, ...).
- `podenv`: the worker pod's environment: the operator's env list, the reserved names and the worker's parser.
- `names`: API group/version/plural, labels, annotations, pod and Service names.
- `exitcodes`: what a worker's exit code means to the operator.
- `objectkeys`: where a job's outputs live in S3.
- `corev1`: the Kubernetes shapes the spec embeds; `schema`: the CEL/OpenAPI data helpers the models use;
  `crd`: the CRD built from the models.
- `kubernetes_rules`: Kubernetes' own validation rules for what a worker pod carries.

The CRD in `crds/` and the chart's copy are generated from these models (`make crds`); a test fails when they
are stale. Nothing here imports torch, diffusers or kopf, so validating a request is cheap everywhere.
"""
