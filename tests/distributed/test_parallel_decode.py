"""VAE decode split across a gloo gang (parallel/vae_decode.py): every rank ends with the video of a whole decode,
equal within fp32 rounding for 2 and 3 ranks, landscape and portrait, slices even and uneven; the decoder's
modules are as before after the split (also after an error); the slice arithmetic covers every column once."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chitu_diffusion.models.random_init import TINY_VAE, build_vae
from chitu_diffusion.parallel.vae_decode import SpatialSplit, parallel_decode, slice_sizes, split_axis, split_decoder

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


def tiny_vae():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_vae(TINY_VAE)


def latents(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(2))


def _rank(rank: int, world: int, store_path: str, out_path: str) -> None:
    """Decode every shape split over each of WORLDS' first ranks (one spawn: starting processes is the slow part)."""
    torch.set_num_threads(1)  # max(WORLDS) processes on a small CI machine
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        vae = tiny_vae()
        videos = {}
        for ranks in WORLDS:
            group = dist.new_group(list(range(ranks)))  # every rank joins the call, members or not
            if rank < ranks:
                with torch.no_grad():
                    videos |= {
                        (ranks, name): parallel_decode(vae, latents(shape), group) for name, shape in SHAPES.items()
                    }
        torch.save(videos, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gang_videos(tmp_path_factory) -> list[dict[tuple[int, str], torch.Tensor]]:
    """Per rank: (ranks in the split, shape name) -> the video that rank ended with."""
    folder = tmp_path_factory.mktemp("decode")
    world = max(WORLDS)
    mp.spawn(_rank, args=(world, str(folder / "store"), str(folder / "video")), nprocs=world, join=True)
    return [torch.load(folder / f"video.{rank}") for rank in range(world)]


@pytest.fixture(scope="module")
def wholes() -> dict[str, torch.Tensor]:
    vae = tiny_vae()
    with torch.no_grad():
        return {name: vae.decode(latents(shape), return_dict=False)[0] for name, shape in SHAPES.items()}


@pytest.mark.parametrize("ranks", WORLDS)
def test_every_rank_ends_with_the_same_whole_video(gang_videos, wholes, ranks):
    for name, whole in wholes.items():
        assert gang_videos[0][ranks, name].shape == whole.shape
        assert all(torch.equal(videos[ranks, name], gang_videos[0][ranks, name]) for videos in gang_videos[1:ranks])


@pytest.mark.parametrize("ranks", WORLDS)
@pytest.mark.parametrize("name", SHAPES)
def test_the_split_decode_equals_a_whole_decode(gang_videos, wholes, ranks, name):
    whole = wholes[name]
    assert whole.abs().max() > 0.1  # a random VAE whose pixels vary, so equality says something
    assert (gang_videos[0][ranks, name] - whole).abs().max() <= MAX_ABS_DIFF


def test_the_decoder_is_as_before_after_the_split_and_after_an_error():
    vae = tiny_vae()
    split = SpatialSplit(group=None, rank=0, sizes=(4, 3), axis=4)
    before = [(module, dict(vars(module))) for module in vae.modules()]

    def unchanged() -> bool:
        return all(
            vars(module).keys() == attributes.keys() and all(vars(module)[k] is v for k, v in attributes.items())
            for module, attributes in before
        )

    with split_decoder(vae, split):
        assert not unchanged()
    assert unchanged()
    with pytest.raises(RuntimeError, match="mid-decode"), split_decoder(vae, split):
        raise RuntimeError("mid-decode")
    assert unchanged()


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
