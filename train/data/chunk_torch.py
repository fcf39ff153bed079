"""A fast torch view of a cached chunk dataset (:func:`with_torch_format`): PNG cells decoded in batches to
uint8 [B, 3, H, W] tensors, every other column as a tensor of its feature's dtype.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _feature_numpy_dtype(feature: Any) -> np.dtype | None:
    import datasets  # heavy: datasets (pyarrow, fsspec)

    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return np.dtype(feature.dtype)
    if isinstance(feature, datasets.List):
        return _feature_numpy_dtype(feature.feature)
    if isinstance(feature, datasets.Value):
        return None if feature.dtype in ("string", "large_string") else np.dtype(feature.dtype)
    return None


def _decode_png_batch(cells: list[Any]) -> Any:
    import torch  # heavy: torch
    from PIL import Image  # lazy: Pillow, only for image features

    frames = []
    for cell in cells:
        with Image.open(io.BytesIO(cell["bytes"])) as img:
            frames.append(np.asarray(img.convert("RGB")))
    # [B, H, W, 3] -> contiguous [B, 3, H, W]: torch.stack in the DataLoader's collate is slow on
    # non-contiguous views, numpy's transposing copy is not
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))


class _TorchBatchTransform:
    """Turns a python-formatted batch of a chunk dataset into tensors of the features' dtypes."""

    def __init__(self, features: Any) -> None:
        import datasets  # heavy: datasets (pyarrow, fsspec)

        self.images = {k for k, f in features.items() if isinstance(f, datasets.Image)}
        self.dtypes = {k: _feature_numpy_dtype(f) for k, f in features.items()}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        import torch  # heavy: torch

        out: dict[str, Any] = {}
        for key, values in batch.items():
            if key in self.images:
                out[key] = _decode_png_batch(values)
            elif self.dtypes.get(key) is None:
                out[key] = values
            else:
                # raw image storage stays uint8 [3, H, W]; numbers get their feature dtype
                out[key] = torch.from_numpy(np.asarray(values, dtype=self.dtypes[key]))
        return out


def with_torch_format(dataset: Any) -> Any:
    """A view of a chunk ``datasets.Dataset`` whose rows are torch tensors, decoded fast.

    ``dataset.with_format("torch")`` works too and is about as fast for PNG storage; this view also keeps
    each feature's dtype where datasets' formatter does not: images uint8 [3, H, W] contiguous (raw storage
    too, without the int64 promotion), ``action``/``velocity``/``tau``/``observation.state`` float32,
    ``action_is_pad`` bool, indices int64, ``task`` str. Use it as a map-style dataset for
    ``torch.utils.data.DataLoader``. It is a ``datasets`` transform (``with_transform``): it is not kept by
    ``map`` or ``save_to_disk``. For a streaming ``IterableDataset`` use ``with_format("torch")``.

    Throughput note: on a busy shared CPU, ``torch.stack`` in the DataLoader's collate with 2 intra-op threads
    was measured hundreds of times slower than with 1; load data with ``torch.set_num_threads(1)`` in the
    loading process or use DataLoader workers (which default to one thread each).
    """
    import datasets  # heavy: datasets (pyarrow, fsspec)

    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError("with_torch_format takes a map-style datasets.Dataset; use .with_format('torch') when streaming")
    ds = dataset
    for key, feat in dataset.features.items():
        if isinstance(feat, datasets.Image) and feat.decode:
            ds = ds.cast_column(key, datasets.Image(decode=False))
    return ds.with_transform(_TorchBatchTransform(dataset.features))
