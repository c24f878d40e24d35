"""Validation at the edges: engine config overrides and the request types, each error naming its key or field."""

import pytest
from pydantic import ValidationError

from chitu_diffusion.config import ConfigError, EngineConfig
from chitu_diffusion.task import DiffusionUserParams, FlexCacheParams

KEYS = [
    "infer.diffusion.cp_size",
    "infer.diffusion.up_limit",
    "infer.diffusion.dtype",
    "infer.diffusion.device",
    "infer.diffusion.compile",
    "infer.diffusion.attention_backend",
    "infer.diffusion.compile_cache_dir",
    "infer.diffusion.precision",
    "infer.diffusion.precision_check",
    "infer.diffusion.parallel_decode",
]


def test_defaults_and_keys():
    config = EngineConfig()
    assert (config.diffusion.cp_size, config.diffusion.up_limit, config.diffusion.dtype) == (1, 8, "auto")
    assert (config.diffusion.device, config.diffusion.compile) == ("auto", None)
    assert (config.diffusion.precision, config.diffusion.precision_check, config.diffusion.parallel_decode) == (
        "bf16",
        False,
        False,
    )
    assert config.diffusion.attention_backend == "auto"
    assert EngineConfig.valid_keys() == KEYS


def test_seed_overrides_are_parsed_by_field_type():
    config = EngineConfig.from_overrides(["infer.diffusion.cp_size=2", "infer.diffusion.up_limit=81"])
    assert (config.diffusion.cp_size, config.diffusion.up_limit) == (2, 81)
    config = EngineConfig.from_overrides(
        ["infer.diffusion.compile=true", "infer.diffusion.dtype=bfloat16", "infer.diffusion.attention_backend=flash"]
    )
    assert config.diffusion.compile is True and config.diffusion.dtype == "bfloat16"
    assert config.diffusion.attention_backend == "flash"
    assert EngineConfig.from_overrides({"infer.diffusion.compile": False}).diffusion.compile is False


def test_attention_backend_lists_the_kernels():
    with pytest.raises(ConfigError, match=r"infer\.diffusion\.attention_backend.*'auto', 'sdpa', 'fa3'"):
        EngineConfig.from_overrides(["infer.diffusion.attention_backend=native"])


def test_last_override_wins_and_the_original_is_untouched():
    base = EngineConfig()
    config = base.with_overrides(["infer.diffusion.cp_size=2", "infer.diffusion.cp_size=4"])
    assert config.diffusion.cp_size == 4 and base.diffusion.cp_size == 1


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        EngineConfig.from_overrides(["infer.diffusion.cp=2"])
    assert "unknown engine config key 'infer.diffusion.cp'" in err.value.errors[0]
    assert all(key in err.value.errors[-1] for key in KEYS)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("infer.diffusion.cp_size=two", "infer.diffusion.cp_size: Input should be a valid integer"),
        ("infer.diffusion.cp_size=0", "infer.diffusion.cp_size: Input should be greater than or equal to 1"),
        ("infer.diffusion.up_limit=0", "infer.diffusion.up_limit"),
        ("infer.diffusion.dtype=fp8", "infer.diffusion.dtype: Input should be 'auto', 'float32'"),
        ("infer.diffusion.device=tpu", "infer.diffusion.device"),
        ("infer.diffusion.compile=maybe", "infer.diffusion.compile: Input should be a valid boolean"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        EngineConfig.from_overrides([override])
    assert fragment in str(err.value)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="must look like key=value"):
        EngineConfig.from_overrides(["infer.diffusion.cp_size"])


def test_device_and_dtype_resolution():
    auto = EngineConfig().diffusion
    assert auto.resolved_device(cuda_available=True) == "cuda" and auto.resolved_device(cuda_available=False) == "cpu"
    assert auto.resolved_dtype("cuda") == "bfloat16" and auto.resolved_dtype("cpu") == "float32"
    cuda = EngineConfig.from_overrides(["infer.diffusion.device=cuda", "infer.diffusion.dtype=float16"]).diffusion
    assert cuda.resolved_dtype("cuda") == "float16"
    with pytest.raises(ConfigError, match=r"infer\.diffusion\.device=cuda but no CUDA device"):
        cuda.resolved_device(cuda_available=False)


# --- the request types (chitu_diffusion.task): the seed's examples, then every rejection names its field ---


def test_seed_api_examples_validate():
    params = DiffusionUserParams(
        prompt="A cat walking on grass",
        num_inference_steps=50,
        flexcache_params=FlexCacheParams(strategy="teacache", cache_ratio=0.4, warmup=5, cooldown=5),
    )
    assert params.cache == FlexCacheParams(strategy="teacache", cache_ratio=0.4, warmup=5, cooldown=5)
    for shorthand, name in [("teacache", "teacache"), ("PAB", "pab")]:
        assert DiffusionUserParams(prompt="A cat walking on grass", flexcache=shorthand).cache.strategy == name


@pytest.mark.parametrize(
    "fields, field_name",
    [
        (dict(prompt="   "), "prompt"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(num_frames=8), "num_frames"),
        (dict(height=100), "height"),
        (dict(width=90), "width"),
        (dict(flexcache="magic"), "flexcache"),
        (dict(flexcache_params=dict(strategy="magic")), "strategy"),
        (dict(flexcache_params=dict(cache_ratio=1.5)), "cache_ratio"),
        (dict(flexcache_params=dict(cache_ratio=-0.1)), "cache_ratio"),
        (dict(num_inference_steps=4, flexcache_params=dict(strategy="teacache", warmup=2, cooldown=2)), "warmup"),
        (dict(flexcache="teacache", flexcache_params=dict(strategy="pab")), "flexcache_params.strategy"),
        (dict(unknown=1), "unknown"),
    ],
)
def test_request_rejections_name_the_field(fields, field_name):
    with pytest.raises(ValidationError) as err:
        DiffusionUserParams.model_validate({"prompt": "A cat", **fields})
    assert field_name in str(err.value)


def test_compile_defaults_to_on_for_cuda_only_and_obeys_an_explicit_setting():
    unset = EngineConfig().diffusion
    assert (unset.resolved_compile("cuda"), unset.resolved_compile("cpu")) == (True, False)
    off = EngineConfig.from_overrides(["infer.diffusion.compile=false"]).diffusion
    on = EngineConfig.from_overrides(["infer.diffusion.compile=true"]).diffusion
    assert (off.resolved_compile("cuda"), on.resolved_compile("cpu")) == (False, True)


def test_precision_names_its_choices():
    assert EngineConfig.from_overrides(["infer.diffusion.precision=fp8"]).diffusion.precision == "fp8"
    with pytest.raises(ConfigError, match=r"infer\.diffusion\.precision.*'bf16' or 'fp8'"):
        EngineConfig.from_overrides(["infer.diffusion.precision=int8"])
