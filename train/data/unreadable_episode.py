"""A placeholder for an episode whose files could not be read, so the chunk builder can count it.

:func:`niaf_train.data.chunking.build_chunk_dataset` decides whether a bad episode stops the build or is skipped
(``skip_invalid``) when it calls :meth:`Episode.validate`, and records skips in the dataset's
:class:`~niaf_train.data.episodes.LoadSummary`. A reader error raised inside the episode iterator would end the
iteration instead. Format loaders (CALVIN, LIBERO HDF5) therefore yield an :class:`UnreadableEpisode` carrying
the :class:`~niaf_train.data.episodes.EpisodeError`; its ``validate`` raises that error, and the builder treats it
exactly like any other invalid episode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from .episodes import Episode, EpisodeError, LoadSummary


class UnreadableEpisode(Episode):
    """An :class:`Episode` with no data whose :meth:`validate` raises the reading error it was built from."""

    def __init__(self, error: EpisodeError, fps: float) -> None:
        super().__init__(
            episode_id=error.episode_id,
            source=error.source,
            instruction="",
            fps=fps,
            actions=np.zeros((0, 0), dtype=np.float32),
        )
        self.read_error = error

    def validate(self, image_shapes: Mapping[str, tuple[int, int, int]] | None = None) -> Episode:
        raise self.read_error


def raise_or_skip_unreadable(
    episodes: Iterable[Episode], skip_invalid: bool, summary: LoadSummary
) -> Iterator[Episode]:
    """Pass episodes through; an :class:`UnreadableEpisode` raises its read error, or, with ``skip_invalid``,
    is recorded in ``summary`` (and logged) and left out. For format iterators used on their own, outside the
    chunk builder."""
    iterator = iter(episodes)
    try:
        for episode in iterator:
            if isinstance(episode, UnreadableEpisode):
                if not skip_invalid:
                    raise episode.read_error
                summary.skip(episode.read_error)
                continue
            yield episode
    finally:  # a format iterator holds open files: release them now, not when the traceback is collected
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


__all__ = ["UnreadableEpisode", "raise_or_skip_unreadable"]
