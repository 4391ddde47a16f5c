"""The benchmark's frame pool holds exactly the frames that rendering on the fly gives, and is reused once complete."""

import pytest
import torch

from benchmarks.frame_pool import COMPLETE, PoolDataset, render_pool
from smartpark.train import SceneTargets


def test_a_pool_holds_the_scene_targets_items_and_a_complete_one_is_not_rendered_again(tmp_path):
    pool = render_pool(tmp_path / "pool", seed=1, frames=3, workers=2, log=lambda message: None)

    dataset = PoolDataset(pool)
    assert len(dataset) == 3
    for index in range(3):
        expected, got = SceneTargets(1, 3)[index], dataset[index]
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[name], expected[name]) for name in expected)
    with pytest.raises(IndexError):
        dataset[3]

    stamp = (pool / "image.npy").stat().st_mtime_ns
    assert render_pool(pool, seed=1, frames=3, workers=2) == pool
    assert (pool / "image.npy").stat().st_mtime_ns == stamp


def test_an_interrupted_pool_is_refused(tmp_path):
    pool = render_pool(tmp_path / "pool", seed=1, frames=1, workers=1, log=lambda message: None)
    (pool / COMPLETE).unlink()

    with pytest.raises(FileNotFoundError, match="no complete frame pool"):
        PoolDataset(pool)
