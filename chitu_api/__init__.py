"""The GenerationJob contract: the one torch-free, kopf-free package every layer reads.

- `generationjob`: the spec (and status) models, parsed once at each edge; errors name the field.
- `names`: API group/version/plural, labels, annotations, pod and Service names.
- `exitcodes`: what a worker's exit code means to the operator.
- `objectkeys`: where a job's outputs live in S3.

The CRD in `crds/` and the chart's copy are generated from these models (`make crds`); a test fails when they
are stale. Nothing here imports torch, diffusers or kopf, so validating a request is cheap everywhere.
"""
