"""Finding one sample in two datasets: validation (or test) images that are also training images make
every score on them optimistic, and pick the checkpoint on images the model has learned. Datasets that
can say what their samples are made of define `sample_sources() -> [(id, parts)]`: image files (compared
by content, so a copy in another folder is found too) or a generator's arguments."""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from ...image_files import file_digest


def content_digest(path: Path) -> str:
    """`retina.image_files.file_digest` of an image file, computed once per process for each state of
    the file (path, size, modification time): the validation check and a checkpoint's training digests
    ask for the same files."""
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


class _Contents:
    """A file's identity by content: its size, and its digest only where a file of that size is on
    both sides (an image of a size that only one dataset has cannot be in the other; most files are
    never read)."""

    def __init__(self, first: list[tuple], second: list[tuple]):
        sizes = [{p.stat().st_size for _, parts in side for p in parts if isinstance(p, Path)}
                 for side in (first, second)]
        self.common_sizes = sizes[0] & sizes[1]

    def __call__(self, part):
        if not isinstance(part, Path):
            return part
        size = part.stat().st_size
        if size not in self.common_sizes:
            return ("only one side has files of", size, str(part))
        return ("file", size, content_digest(part))


def _sources(dataset: Dataset) -> Optional[list[tuple]]:
    method = getattr(dataset, "sample_sources", None)
    return None if method is None else method()


def sample_digests(dataset: Dataset) -> Optional[list[str]]:
    """One content digest per sample of a file-backed dataset (its image files' digests joined by '+'),
    as checkpoints record their training images so that `retina predict` can say which of its inputs the
    model trained on; None for datasets without files."""
    sources = _sources(dataset)
    if not sources or not all(isinstance(p, Path) for _, parts in sources for p in parts):
        return None
    return ["+".join(content_digest(p) for p in parts) for _, parts in sources]


def shared_samples(train: Dataset, other: Dataset) -> list[tuple[str, str]]:
    """(id in `other`, id in `train`) for every sample of `other` made of the same images as a sample of
    `train` (the same files or copies of them, or the same synthetic draw); empty when none is, or when
    either dataset cannot say what its samples are (no `sample_sources`)."""
    train_sources, other_sources = _sources(train), _sources(other)
    if not train_sources or not other_sources:
        return []
    identity = _Contents(train_sources, other_sources)
    by_key: dict[tuple, list[str]] = defaultdict(list)
    for sample_id, parts in train_sources:
        by_key[tuple(identity(p) for p in parts)].append(sample_id)
    shared = []
    for sample_id, parts in other_sources:
        found = by_key.get(tuple(identity(p) for p in parts))
        if found:
            shared.append((sample_id, found[0]))
    return shared
