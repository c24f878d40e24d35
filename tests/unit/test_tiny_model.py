"""Random Wan2.1 models: the tiny folder round-trips through the loader, the full-size configs are the released ones."""

import json
import shutil

import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline

from chitu_diffusion.models.folder import ModelFolderError, check_model_folder
from chitu_diffusion.models.loading import load_wan_pipeline
from chitu_diffusion.models.random_init import (
    UMT5_XXL,
    build_random_pipeline,
    build_text_encoder,
    build_wan21_1_3b_transformer,
    build_wan21_vae,
    make_tiny_model,
)


def test_tiny_folder_has_the_released_layout(tiny_model_dir):
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    for component in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler"):
        assert (tiny_model_dir / component).is_dir()
    assert index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]


def test_tiny_model_loads_back_with_the_engine_facts(tiny_model_dir):
    pipe = load_wan_pipeline(tiny_model_dir, torch.float32, "cpu")
    assert isinstance(pipe, WanPipeline) and isinstance(pipe.scheduler, UniPCMultistepScheduler)
    transformer = pipe.transformer.config
    assert transformer.num_layers >= 4  # FlexCache needs several layers
    assert transformer.num_attention_heads % 4 == 0  # Ulysses splits heads 2 or 4 ways
    assert transformer.in_channels == pipe.vae.config.z_dim == 16
    assert transformer.text_dim == pipe.text_encoder.config.d_model
    assert (pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial) == (4, 8)
    scheduler = pipe.scheduler.config
    assert (scheduler.prediction_type, scheduler.use_flow_sigmas) == ("flow_prediction", True)
    assert scheduler.flow_shift == 3.0
    assert max(pipe.tokenizer("A cat walking on grass").input_ids) < pipe.text_encoder.config.vocab_size


def test_loading_in_bfloat16_keeps_diffusers_fp32_modules(tiny_model_dir):
    pipe = load_wan_pipeline(tiny_model_dir, torch.bfloat16, "cpu")
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.transformer.scale_shift_table.dtype == torch.float32


def test_same_seed_same_weights():
    first, second, other = (build_random_pipeline(seed=s).transformer.state_dict() for s in (0, 0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(ModelFolderError, match=str(tmp_path / "nowhere")):
        check_model_folder(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match=r"model_index\.json is missing"):
        check_model_folder(tmp_path)


def test_missing_component_names_the_path(tmp_path):
    folder = make_tiny_model(tmp_path / "tiny", seed=3)
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelFolderError, match=f"component folder {folder / 'vae'} is missing"):
        load_wan_pipeline(folder, torch.float32, "cpu")


def test_released_architectures_on_the_meta_device():
    """The full-size builders without allocating: parameter counts of the released models, fp32 modules kept."""
    transformer = build_wan21_1_3b_transformer(torch.bfloat16, "meta")
    assert sum(p.numel() for p in transformer.parameters()) == 1_418_996_800
    assert (transformer.config.num_layers, transformer.config.num_attention_heads) == (30, 12)
    assert transformer.blocks[0].ffn.net[0].proj.weight.dtype == torch.bfloat16
    assert transformer.scale_shift_table.dtype == torch.float32
    vae = build_wan21_vae(torch.bfloat16, "meta")
    assert (vae.config.base_dim, vae.config.z_dim) == (96, 16)
    encoder = build_text_encoder(UMT5_XXL, torch.bfloat16, "meta")
    assert round(sum(p.numel() for p in encoder.parameters()) / 1e9, 2) == 5.68


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'wan9'"):
        build_random_pipeline("wan9")
