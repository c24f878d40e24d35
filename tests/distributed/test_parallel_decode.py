"""VAE decode split across a gloo gang (parallel/vae_decode.py): every rank ends with the video of a whole decode,
equal within fp32 rounding for 2 and 3 ranks, landscape and portrait, slices even and uneven, both as diffusers'
one-call decode and as the engine's chunks per latent frame (pipeline.decode_latent_chunks); the decoder's modules
are as before after the split (also after an error, and after the chunks stop midway); the slice arithmetic covers
every column once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from diffusers import AutoencoderKLWan

from chitu_diffusion.models.random_init import build_random_pipeline
from chitu_diffusion.parallel.vae_decode import SpatialSplit, slice_sizes, split_axis, split_decoder
from chitu_diffusion.pipeline import decode_latent_chunks

# (B, z_dim, F', H', W') latents. 3 latent frames run the causal cache's every case (first chunk, one and two cached
# frames). The first is where the old approximation (strips with 8 latent columns of context) was off: 25 columns
# in 13 + 12, whose strips [0, 21) and [5, 25) each miss context the other side has.
SHAPES = {
    "landscape, uneven": (1, 16, 3, 6, 25),
    "landscape, even": (1, 16, 2, 4, 12),
    "portrait, uneven": (1, 16, 2, 7, 4),
    "portrait, even": (1, 16, 2, 12, 6),
}
WORLDS = (2, 3)
# fp32 decodes of pixels in [-1, 1]: the split's convs run on narrower inputs, so only rounding may differ.
MAX_ABS_DIFF = 1e-5
# The chunks are uint8: a rounding difference flips a value by one where 127.5 * (x + 1) lies that close to a half.
# Measured over SHAPES and WORLDS (fp32 differences <= 1.7e-6): at most 2 of 259,200 values (landscape, uneven) and
# 1 of 46,080 (2.2e-5, landscape, even) flip, by one; the portrait videos are equal.
MAX_FLIPPED = 1e-3


def pipeline():
    """The tiny random WanPipeline, the same on every rank (seeded)."""
    return build_random_pipeline()


def latents(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(2))


def split_vae_decode(vae: AutoencoderKLWan, z: torch.Tensor, split: SpatialSplit) -> torch.Tensor:
    """diffusers' one-call `vae.decode` of this rank's slice within `split_decoder`, gathered: split_decoder's
    contract, checked in fp32."""
    with split_decoder(vae, split):
        return split.gather(vae.decode(split.take(z), return_dict=False)[0])  # (1, 3, F, H, W)


def attributes(vae: AutoencoderKLWan) -> list[tuple[torch.nn.Module, dict]]:
    """The decoder's modules and their instance attributes: what split_decoder swaps (the VAE's own feature cache
    is new after every decode)."""
    return [(module, dict(vars(module))) for module in vae.decoder.modules()]


def unchanged(before: list[tuple[torch.nn.Module, dict]]) -> bool:
    """Every module has the same instance attributes, the same objects, as in `before`."""
    return all(
        vars(module).keys() == kept.keys() and all(vars(module)[k] is v for k, v in kept.items())
        for module, kept in before
    )


def _rank(rank: int, world: int, store_path: str, out_path: str) -> None:
    """Decode every shape split over each of WORLDS' first ranks, in one call and in chunks, and stop a chunked
    split decode after its first chunk (one spawn: starting processes is the slow part)."""
    torch.set_num_threads(1)  # max(WORLDS) processes on a small CI machine
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        pipe = pipeline()
        videos, chunks = {}, {}
        for ranks in WORLDS:
            group = dist.new_group(list(range(ranks)))  # every rank joins the call, members or not
            if rank >= ranks:
                continue
            for name, shape in SHAPES.items():
                split = SpatialSplit.of(latents(shape), group)
                with torch.no_grad():
                    videos[ranks, name] = split_vae_decode(pipe.vae, latents(shape), split)
                chunks[ranks, name] = list(decode_latent_chunks(pipe, latents(shape), split))
        before, z = attributes(pipe.vae), latents(SHAPES["landscape, uneven"])
        stopped = decode_latent_chunks(pipe, z, SpatialSplit.of(z, dist.group.WORLD))
        next(stopped)
        swapped = not unchanged(before)
        stopped.close()  # as when rank 0's mp4 writer fails: the generator's `with split_decoder` exits
        restored = swapped and unchanged(before)
        torch.save({"videos": videos, "chunks": chunks, "restored": restored}, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gang(tmp_path_factory) -> list[dict]:
    """Per rank: videos and chunks, (ranks in the split, shape name) -> what that rank ended with; "restored":
    whether the decoder was swapped during a chunked split decode and as before once it stopped after one chunk."""
    folder = tmp_path_factory.mktemp("decode")
    world = max(WORLDS)
    mp.spawn(_rank, args=(world, str(folder / "store"), str(folder / "out")), nprocs=world, join=True)
    return [torch.load(folder / f"out.{rank}", weights_only=False) for rank in range(world)]


@pytest.fixture(scope="module")
def wholes() -> dict[str, torch.Tensor]:
    vae = pipeline().vae
    with torch.no_grad():
        return {name: vae.decode(latents(shape), return_dict=False)[0] for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def one_rank_chunks() -> dict[str, list[np.ndarray]]:
    pipe = pipeline()
    return {name: list(decode_latent_chunks(pipe, latents(shape))) for name, shape in SHAPES.items()}


@pytest.mark.parametrize("ranks", WORLDS)
def test_every_rank_ends_with_the_same_whole_video(gang, wholes, ranks):
    first, others = gang[0], gang[1:ranks]
    for name, whole in wholes.items():
        assert first["videos"][ranks, name].shape == whole.shape
        assert all(torch.equal(rank["videos"][ranks, name], first["videos"][ranks, name]) for rank in others)
        chunks = np.concatenate(first["chunks"][ranks, name])
        assert all(np.array_equal(np.concatenate(rank["chunks"][ranks, name]), chunks) for rank in others)


@pytest.mark.parametrize("ranks", WORLDS)
@pytest.mark.parametrize("name", SHAPES)
def test_the_split_decode_equals_a_whole_decode(gang, wholes, ranks, name):
    whole = wholes[name]
    assert whole.abs().max() > 0.1  # a random VAE whose pixels vary, so equality says something
    assert (gang[0]["videos"][ranks, name] - whole).abs().max() <= MAX_ABS_DIFF


@pytest.mark.parametrize("ranks", WORLDS)
@pytest.mark.parametrize("name", SHAPES)
def test_the_split_chunks_are_the_one_rank_chunks(gang, one_rank_chunks, ranks, name):
    """What the gang's mp4 writer gets per latent frame: the whole frames (a chunk not gathered would be a slice),
    as many and as wide as one rank decodes, the same values up to the rounding flips above."""
    split, whole = gang[0]["chunks"][ranks, name], one_rank_chunks[name]
    assert [chunk.shape for chunk in split] == [chunk.shape for chunk in whole]
    split, whole = np.concatenate(split).astype(np.int16), np.concatenate(whole).astype(np.int16)
    assert np.ptp(whole) > 100  # pixels vary, so equality says something
    assert np.abs(split - whole).max() <= 1 and np.mean(split != whole) <= MAX_FLIPPED


def test_the_decoder_is_restored_when_the_split_chunks_stop_midway(gang):
    assert all(rank["restored"] for rank in gang)


def test_the_decoder_is_as_before_after_the_split_and_after_an_error():
    vae = pipeline().vae
    split = SpatialSplit(group=None, rank=0, sizes=(4, 3), axis=4)
    before = attributes(vae)
    with split_decoder(vae, split):
        assert not unchanged(before)
    assert unchanged(before)
    with pytest.raises(RuntimeError, match="mid-decode"), split_decoder(vae, split):
        raise RuntimeError("mid-decode")
    assert unchanged(before)


def test_slices_cover_each_column_once_the_first_ones_wider():
    assert slice_sizes(104, 2) == [52, 52]
    assert slice_sizes(13, 3) == [5, 4, 4]
    assert slice_sizes(7, 7) == [1] * 7
    split = SpatialSplit(group=None, rank=1, sizes=(5, 4, 4), axis=3)
    assert torch.equal(split.take(torch.arange(13).view(1, 1, 1, 13, 1)).flatten(), torch.arange(5, 9))
    assert torch.equal(split.keep(torch.arange(52).view(1, 1, 1, 52, 1)).flatten(), torch.arange(20, 36))


def test_the_longer_axis_is_split_and_impossible_splits_are_refused():
    assert split_axis(torch.empty(1, 16, 2, 60, 104)) == 4
    assert split_axis(torch.empty(1, 16, 2, 104, 60)) == 3
    with pytest.raises(ValueError, match="cannot split"):
        slice_sizes(3, 4)
