"""Demonstrations on disk, read into one chunk-dataset layout (``niaf-data``; also what ``niaf-train`` reads).

* :mod:`.sources`: the one registry of data sources, used by both command lines;
* one module per format: :mod:`.lerobot_v3` (LeRobot v3.0, and LIBERO converted to it), :mod:`.libero` (HDF5),
  :mod:`.calvin` (release layout), :mod:`.metaworld` (scripted-expert demonstrations, written as LeRobot v3.0);
* :mod:`.episodes` (the validated in-memory episode), :mod:`.chunking` (episodes → cached chunk datasets),
  :mod:`.stats` (stats.json), :mod:`.safe_pickle`, :mod:`.unreadable_episode`, :mod:`.hub_datasets`;
* :mod:`.cli`: the ``niaf-data`` command line.
"""
