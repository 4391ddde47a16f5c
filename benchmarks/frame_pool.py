"""Training frames rendered once into memory-mapped arrays, shared by every method of a benchmark run.

The compression benchmark trains eight methods on the same frames (training seed 1, in order). Rendering
a frame costs ~33 ms of one core, as much as a training step on two, so rendering it again for every
method doubled the benchmark's time; a pool renders each frame once, in parallel, and every method
then reads its batches from the arrays (`PoolDataset`). Frames are `smartpark.train.SceneTargets`
items exactly, so a pool and on-the-fly rendering give the same batches.
"""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

COMPLETE = "complete.json"


def render_pool(directory: Path | str, seed: int, frames: int, workers: int | None = None, log=print) -> Path:
    """Render frames 0..frames-1 of training seed `seed` into `directory` (one .npy per field), unless it is there.

    A pool is complete only once `complete.json` is written, so an interrupted render starts over.
    """
    directory = Path(directory)
    wanted = {"seed": seed, "frames": frames}
    marker = directory / COMPLETE
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    from smartpark.train import SceneTargets

    first = SceneTargets(seed, frames)[0]
    for name, value in first.items():
        np.lib.format.open_memmap(
            directory / f"{name}.npy", mode="w+", dtype=value.numpy().dtype, shape=(frames, *value.shape)
        )
    workers = workers or os.cpu_count() or 1
    chunks = [range(start, min(frames, start + 64)) for start in range(0, frames, 64)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_single_threaded) as pool:
        for done, _ in enumerate(pool.imap_unordered(_render_chunk, [(directory, seed, frames, c) for c in chunks])):
            if (done + 1) % max(1, len(chunks) // 10) == 0:
                log(f"rendered {min(frames, (done + 1) * 64)} of {frames} training frames")
    marker.write_text(json.dumps(wanted))
    return directory


def _single_threaded() -> None:
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _render_chunk(job) -> None:
    from smartpark.train import SceneTargets

    directory, seed, frames, indices = job
    dataset = SceneTargets(seed, frames)
    arrays = {}
    for index in indices:
        for name, value in dataset[index].items():
            if name not in arrays:
                arrays[name] = np.load(directory / f"{name}.npy", mmap_mode="r+")
            arrays[name][index] = value.numpy()
    for array in arrays.values():
        array.flush()


class PoolDataset(Dataset):
    """The frames of a rendered pool as SceneTargets items (dicts of tensors), read from the memory maps."""

    def __init__(self, directory: Path | str, length: int | None = None):
        directory = Path(directory)
        if not (directory / COMPLETE).exists():
            raise FileNotFoundError(f"{directory} holds no complete frame pool; render it with render_pool")
        self.arrays = {path.stem: np.load(path, mmap_mode="r") for path in sorted(directory.glob("*.npy"))}
        frames = len(next(iter(self.arrays.values())))
        self.length = frames if length is None else min(length, frames)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return {name: torch.from_numpy(np.array(array[index])) for name, array in self.arrays.items()}
