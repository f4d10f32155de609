"""Where reward-model weights come from: an explicit path, the Hugging Face cache, or the hub when online.

When none is available the caller either fails with a one-line error naming the file and how to provide it, or,
where the run allows it (``smoke`` and ``default`` presets, not ``--strict-weights``), builds a *stand-in*: the
same architecture at reduced width with seeded random weights, labelled in every output.
"""

from __future__ import annotations

import os
import warnings

from bench.core.errors import UsageError
from bench.core.models import hub_offline


class WeightsMissing(Exception):
    """The weights are not on disk, not in the cache, and the hub cannot be reached."""


PROBE_TIMEOUT_S = 3.0
"""Seconds the one reachability probe of the hub may take (a machine without a network fails it at once)."""
_REACHABLE: dict[str, bool] = {}


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers at all (any HTTP status counts), probed once per process with one short
    request that honours the proxy settings. huggingface_hub itself retries an unreachable hub for ~30 s per file."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint not in _REACHABLE:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
            _REACHABLE[endpoint] = True
        except urllib.error.HTTPError:  # it answered
            _REACHABLE[endpoint] = True
        except Exception:  # no route, no name resolution, refused, timed out
            _REACHABLE[endpoint] = False
    return _REACHABLE[endpoint]


def where_not() -> str:
    """Why only the cache was looked in, for the one-line error: ``offline=True`` (HF_HUB_OFFLINE), ``hub
    unreachable``, else ``offline=False``."""
    if hub_offline():
        return "offline=True"
    return "hub unreachable" if _REACHABLE and not all(_REACHABLE.values()) else "offline=False"


def _cache_only() -> bool:
    """Whether the hub must not be asked: HF_HUB_OFFLINE is set, or it cannot be reached (probed once)."""
    return hub_offline() or not hub_reachable()


def hub_file(repo: str, filename: str, explicit: str | None = None) -> str:
    """Local path of ``repo/filename``: ``explicit`` if given, else the HF cache, else a download when the hub can be
    reached. Offline (HF_HUB_OFFLINE) or with the hub unreachable a missing file is ``WeightsMissing`` at once."""
    if explicit:
        if not os.path.isfile(explicit):
            raise UsageError(f"--reward-weights {explicit!r} does not exist; pass the path of the weights file")
        return explicit
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=True)
    except Exception as exc:  # not in the cache
        if _cache_only():
            raise WeightsMissing(f"{repo}/{filename}") from exc
    try:
        return hf_hub_download(repo, filename)
    except Exception as exc:  # no network after all, no such repo: all mean "not available here"
        raise WeightsMissing(f"{repo}/{filename}") from exc


def local_dir(explicit: str, what: str) -> str:
    """``explicit`` when it is a directory (a ``save_pretrained`` folder); otherwise a one-line UsageError."""
    if not os.path.isdir(explicit):
        raise UsageError(f"--reward-weights {explicit!r} for {what} is not a directory; pass a folder written by "
                         "save_pretrained (config.json + weights)")
    return explicit


def pretrained(loader, model_id: str):
    """``loader(model_id)`` from a local folder, the cache, or the hub when it can be reached; ``WeightsMissing`` if
    none has it (at once offline or with the hub unreachable)."""
    if os.path.isdir(model_id):
        return loader(model_id)
    try:
        return loader(model_id, local_files_only=True)
    except Exception as exc:  # not in the cache
        if _cache_only():
            raise WeightsMissing(model_id) from exc
    try:
        return loader(model_id)
    except Exception as exc:  # no network after all, no such repo: all mean "not available here"
        raise WeightsMissing(model_id) from exc


def resolve(build_real, build_stand_in, *, what: str, how: str, allow_stand_in: bool, strict: bool):
    """``(build_real(), None)``; when weights are missing ``(build_stand_in(), label)`` if allowed, else UsageError."""
    try:
        return build_real(), None
    except WeightsMissing as missing:
        if allow_stand_in and not strict:
            warnings.warn(
                f"WEIGHTS MISSING for {what} ({missing}): using a RANDOM-WEIGHT STAND-IN; its scores mean nothing",
                stacklevel=2,
            )
            return build_stand_in(), f"random-weight stand-in for {what}"
        raise UsageError(f"weights for {what} not found ({missing}, {where_not()}); {how}") from None
