"""VAE decode split across a gloo gang (parallel/vae_decode.py): the stitched video equals a whole decode when
the halo covers the frame, stays close with a small halo, and the strip arithmetic covers every column once."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chitu_diffusion.models.random_init import TINY_VAE, build_vae
from chitu_diffusion.parallel.vae_decode import Strip, parallel_decode, strips

LATENTS = (1, 16, 3, 8, 13)  # (B, z_dim, F', H', W'): 13 columns split 7 + 6 over two ranks
HALOS = (13, 3)


def tiny_decode():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = build_vae(TINY_VAE)
    return lambda z: vae.decode(z, return_dict=False)[0]  # (1, 3, F, 8H', 8W')


def latents() -> torch.Tensor:
    return torch.randn(LATENTS, generator=torch.Generator().manual_seed(2))


def _rank(rank: int, world: int, store_path: str, out_path: str) -> None:
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        with torch.no_grad():
            videos = {halo: parallel_decode(tiny_decode(), latents(), dist.group.WORLD, halo) for halo in HALOS}
        torch.save(videos, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gang_videos(tmp_path_factory) -> list[dict[int, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("decode")
    mp.spawn(_rank, args=(2, str(folder / "store"), str(folder / "video")), nprocs=2, join=True)
    return [torch.load(folder / f"video.{rank}") for rank in range(2)]


@pytest.fixture(scope="module")
def whole() -> torch.Tensor:
    with torch.no_grad():
        return tiny_decode()(latents())


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_every_rank_ends_with_the_same_whole_video(gang_videos, whole):
    for halo in HALOS:
        assert gang_videos[0][halo].shape == whole.shape
        assert torch.equal(gang_videos[0][halo], gang_videos[1][halo])


def test_a_halo_covering_the_frame_is_exact(gang_videos, whole):
    torch.testing.assert_close(gang_videos[0][13], whole, rtol=1e-5, atol=1e-5)


def test_a_small_halo_is_close_but_not_exact(gang_videos, whole):
    # A random tiny VAE on an 8 x 13 latent frame (its mid-block attention sees the whole frame): 7.7% measured.
    error = rel_l2(gang_videos[0][3], whole)
    assert 0 < error < 0.15


def test_strips_cover_each_column_once_and_widen_by_the_halo():
    plan = strips(104, 2, 8)
    assert plan == [Strip(0, 60, 0, 52), Strip(44, 104, 52, 104)]
    for size, parts, halo in ((13, 2, 3), (60, 4, 0), (7, 7, 1)):
        plan = strips(size, parts, halo)
        assert [s.keep_start for s in plan[1:]] == [s.keep_stop for s in plan[:-1]]
        assert plan[0].keep_start == 0 and plan[-1].keep_stop == size
        assert all(max(0, s.keep_start - halo) == s.start and min(size, s.keep_stop + halo) == s.stop for s in plan)


def test_impossible_splits_are_refused():
    with pytest.raises(ValueError, match="cannot split"):
        strips(3, 4, 0)
    with pytest.raises(ValueError, match="halo"):
        strips(8, 2, -1)
