"""Datasets named by a Hugging Face Hub id: ``user/name`` or ``user/name@revision`` instead of a folder.

``niaf-train --data.path`` and ``niaf-data PATH`` accept either a local folder or a Hub dataset id; an id is
fetched once with ``huggingface_hub.snapshot_download(repo_type="dataset")`` into the Hub cache (``HF_HOME``)
and read from there. With ``HF_HUB_OFFLINE=1`` only the cache is used, and an id that is not in it is an error
naming the id and how to fill the cache.

A revision is a 40-hex commit hash or a git ref name (``main``, ``v1.0``, ``refs/pr/3``; git's
``check-ref-format`` rules: no ``..``, no component starting with ``.`` or ending in ``.lock``, no control
characters, spaces or ``~^:?*[ or backslash``): huggingface_hub joins it into cache paths (``refs/<revision>``,
``snapshots/<commit>``) without checking, so ``../../x`` would read outside the cache. The folder returned is,
in addition, checked to be ``<Hub cache>/datasets--<user>--<name>/snapshots/<40-hex commit>`` once symlinks are
resolved: a tampered ref file cannot point elsewhere either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")  # huggingface_hub's REGEX_COMMIT_HASH
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<revision>[^\s@]+))?$")


class DatasetNotFoundError(FileNotFoundError):
    """A ``--data.path`` / ``niaf-data PATH`` that is neither a folder nor an available Hub dataset."""


def parse_hub_dataset_id(value: str) -> tuple[str, str | None] | None:
    """``"user/name"`` → ("user/name", None); ``"user/name@v1.0"`` → ("user/name", "v1.0"); anything else None.

    Existing local paths are never Hub ids (callers check the filesystem first).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # heavy: huggingface_hub

    match = _HUB_ID.match(value.strip())
    if match is None or value.startswith((".", "~")) or match["repo"].endswith((".", "-")):
        return None
    try:
        validate_repo_id(match["repo"])
    except HFValidationError:
        return None
    return match["repo"], match["revision"]


def check_revision(revision: str, text: str) -> None:
    """Refuse a revision that is neither a commit hash nor a git ref name (see the module docstring)."""
    if _COMMIT_HASH.fullmatch(revision):
        return
    parts = revision.split("/")
    if (len(revision) > 255 or _REF_FORBIDDEN.search(revision) or revision in ("@",) or revision.endswith(".")
            or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)):
        raise DatasetNotFoundError(
            f"{text}: revision {revision!r} is not a commit hash or a git branch/tag name (no '..', no component "
            "starting with '.', no spaces or ~^:?*[\\); refusing to look it up in the Hub cache")


def _inside_cache(folder: str, repo_id: str, cache_dir: str, text: str) -> Path:
    """``folder`` when it is a snapshot of ``repo_id`` in ``cache_dir`` (symlinks resolved), else an error."""
    from huggingface_hub.file_download import repo_folder_name  # heavy: huggingface_hub

    snapshots = (Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="dataset") / "snapshots").resolve()
    real = Path(folder).resolve()
    if real.parent != snapshots or not _COMMIT_HASH.fullmatch(real.name):
        raise DatasetNotFoundError(f"{text}: the Hub cache resolves it to {real}, which is not a snapshot folder "
                                   f"under {snapshots}; refusing to read outside the Hub cache")
    return Path(folder)


def _offline() -> bool:
    from huggingface_hub import constants  # heavy: huggingface_hub

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
    if revision is not None:
        check_revision(revision, text)
    from huggingface_hub import constants, snapshot_download  # heavy: huggingface_hub
    from huggingface_hub.errors import (  # heavy: huggingface_hub
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = _offline()
    try:
        cache_dir = str(constants.HF_HUB_CACHE)
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=offline,
                                   cache_dir=cache_dir)
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
    except (ValueError, OSError) as err:  # e.g. huggingface_hub's own "Invalid pointer path", an unreadable ref
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetNotFoundError(f"{text}: reading Hub dataset {repo_id} from the cache failed: {first}") from None
    return _inside_cache(folder, repo_id, cache_dir, text)


__all__ = ["DatasetNotFoundError", "check_revision", "parse_hub_dataset_id", "resolve_dataset_path"]
