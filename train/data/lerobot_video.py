"""Frame access to the MP4 files of a LeRobot v3.0 folder with PyAV: one file, and a small pool of open files."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class _VideoFile:
    """Sequential-friendly frame access to one MP4 file with PyAV (seeks only when going back or far ahead)."""

    def __init__(self, path: Path) -> None:
        import av  # optional dependency: av (PyAV), for video

        self.path = path
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self._frames: Iterator[Any] | None = None
        self._last: tuple[float, np.ndarray] | None = None

    def _seek(self, seconds: float) -> None:
        tb = self.stream.time_base
        self.container.seek(max(0, int(seconds / tb)), stream=self.stream, backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self._last = None

    def frame_at(self, seconds: float, tolerance: float) -> np.ndarray:
        """The first frame whose timestamp is >= ``seconds - tolerance``, RGB uint8 [H, W, 3]."""
        if self._last is not None and abs(self._last[0] - seconds) <= tolerance:
            return self._last[1]
        if self._frames is None or self._last is None or self._last[0] > seconds - tolerance or seconds - self._last[0] > 2.0:
            self._seek(seconds)
        assert self._frames is not None
        for frame in self._frames:
            if frame.pts is None:
                continue
            ts = float(frame.pts * self.stream.time_base)
            if ts >= seconds - tolerance:
                self._last = (ts, frame.to_ndarray(format="rgb24"))
                if ts > seconds + tolerance:
                    raise ValueError(f"{self.path}: no frame at {seconds:.4f} s (next frame at {ts:.4f} s)")
                return self._last[1]
        raise ValueError(f"{self.path}: video ends before {seconds:.4f} s")

    def close(self) -> None:
        self.container.close()


class _VideoPool:
    """A few open video files, least recently used closed first."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.files: OrderedDict[Path, _VideoFile] = OrderedDict()

    def get(self, path: Path) -> _VideoFile:
        if path in self.files:
            self.files.move_to_end(path)
            return self.files[path]
        vf = _VideoFile(path)
        self.files[path] = vf
        while len(self.files) > self.size:
            self.files.popitem(last=False)[1].close()
        return vf
