"""Datasets named by a Hugging Face Hub id: ``user/name`` or ``user/name@revision`` instead of a folder.

``niaf-train --data.path`` and ``niaf-data PATH`` accept either a local folder or a Hub dataset id; an id is
fetched once with ``huggingface_hub.snapshot_download(repo_type="dataset")`` into the Hub cache (``HF_HOME``)
and read from there. With ``HF_HUB_OFFLINE=1`` only the cache is used, and an id that is not in it is an error
naming the id and how to fill the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<revision>[^\s@]+))?$")


class DatasetNotFoundError(FileNotFoundError):
    """A ``--data.path`` / ``niaf-data PATH`` that is neither a folder nor an available Hub dataset."""


def parse_hub_dataset_id(value: str) -> tuple[str, str | None] | None:
    """``"user/name"`` → ("user/name", None); ``"user/name@v1.0"`` → ("user/name", "v1.0"); anything else None.

    Existing local paths are never Hub ids (callers check the filesystem first).
    """
    match = _HUB_ID.match(value.strip())
    if match is None or value.startswith((".", "~")) or match["repo"].endswith((".", "-")):
        return None
    return match["repo"], match["revision"]


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")


def resolve_dataset_path(value: str | os.PathLike) -> Path:
    """A local folder for ``value``: the folder itself, or the Hub snapshot of a dataset id.

    Raises:
        DatasetNotFoundError: one line naming ``value``: no such folder, or (offline) not in the Hub cache, or
            not found on the Hub.
    """
    text = str(value)
    path = Path(text).expanduser()
    if path.exists():
        return path
    parsed = parse_hub_dataset_id(text)
    if parsed is None:
        raise DatasetNotFoundError(f"{text}: no such file or folder (nor a Hub dataset id user/name[@revision])")
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _offline()
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=offline)
    except LocalEntryNotFoundError:
        where = ("offline (HF_HUB_OFFLINE=1) and it is not in the Hub cache" if offline
                 else "the Hub could not be reached and it is not in the Hub cache")
        raise DatasetNotFoundError(
            f"{text}: not a local folder, and as a Hub dataset id {repo_id}"
            f"{'@' + revision if revision else ''}: {where}; download it once online (e.g. `hf download {repo_id} "
            f"--repo-type dataset`) or pass a local folder"
        ) from None
    except RepositoryNotFoundError:
        raise DatasetNotFoundError(f"{text}: not a local folder, and no Hub dataset {repo_id} exists "
                                   "(or it is private: log in with `hf auth login`)") from None
    except HfHubHTTPError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetNotFoundError(f"{text}: fetching Hub dataset {repo_id} failed: {first}") from None
    return Path(folder)


__all__ = ["DatasetNotFoundError", "parse_hub_dataset_id", "resolve_dataset_path"]
