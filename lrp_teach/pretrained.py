"""Trained weights that ship with the book, verified by SHA-256 before they are loaded.

Every file ``data/weights/<name>.pt`` has an entry in ``data/MANIFEST.json``::

    {"weights": {"<name>": {
        "file": "weights/<name>.pt",
        "sha256": "<hex digest of the file>",
        "builder": "lrp_teach.models:<function>",   # builds the untrained model
        "kwargs": {...},                            # arguments of the builder
        "command": "python -m lrp_teach.train <name>",
        "metrics": {"test_accuracy": 0.97, ...}}}}

The data folder is ``data/`` of the repository checkout, or the folder named by the
environment variable ``LRP_TEACH_DATA``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "PretrainedError",
    "available",
    "data_dir",
    "entry",
    "load",
    "load_state_dict",
    "save",
    "sha256",
]

MANIFEST = "MANIFEST.json"


class PretrainedError(RuntimeError):
    """A shipped weight file is missing, corrupt or not listed in the manifest."""


def data_dir() -> Path:
    """The folder that holds ``MANIFEST.json`` and ``weights/``."""
    env = os.environ.get("LRP_TEACH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.exists():
        raise PretrainedError(
            f"no {MANIFEST} in {root}. Run from a checkout of the lrp-teach repository, or set "
            "LRP_TEACH_DATA to its data/ folder."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PretrainedError(
            f"{path} is not valid JSON ({err}); restore it from the repository "
            f"(git checkout -- {MANIFEST})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("weights", {}), dict):
        raise PretrainedError(
            f"{path} does not have the expected layout {{\"weights\": {{name: entry}}}}; "
            f"restore it from the repository (git checkout -- {MANIFEST})")
    return manifest


def available() -> list[str]:
    """Names of the weights listed in the manifest."""
    return sorted(_read_manifest(data_dir()).get("weights", {}))


def entry(name: str) -> dict[str, Any]:
    """The manifest entry of ``name`` (file, hash, builder, command, metrics)."""
    weights = _read_manifest(data_dir()).get("weights", {})
    if name not in weights:
        known = ", ".join(sorted(weights)) or "none"
        raise PretrainedError(f"no weights called {name!r} in the manifest; available: {known}")
    info = weights[name]
    missing = [k for k in ("file", "sha256", "builder")
               if not isinstance(info, dict) or k not in info]
    if missing:
        raise PretrainedError(
            f"the entry {name!r} of {data_dir() / MANIFEST} lacks {', '.join(missing)}; restore "
            f"the manifest from the repository (git checkout -- {MANIFEST})")
    return info


def load_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Load the state dict of ``name`` after checking its SHA-256 against the manifest."""
    info = entry(name)
    path = data_dir() / info["file"]
    if not path.exists():
        raise PretrainedError(
            f"weight file {path} is missing. Reproduce it with `{info.get('command', '?')}`."
        )
    actual = sha256(path)
    if actual != info["sha256"]:
        raise PretrainedError(
            f"weight file {path} is corrupt or was changed: SHA-256 {actual[:16]}... does not "
            f"match the manifest's {info['sha256'][:16]}.... Restore it from the repository "
            f"(git checkout -- {path.name}) or reproduce it with `{info.get('command', '?')}`."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _builder(spec: str):
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function)


def load(name: str) -> nn.Module:
    """Build the model of ``name``, load its verified weights and return it in eval mode.

    Raises
    ------
    PretrainedError
        When the manifest has no such entry, or the file is missing or fails its hash.
    """
    info = entry(name)
    model = _builder(info["builder"])(**info.get("kwargs", {}))
    model.load_state_dict(load_state_dict(name))
    return model.eval()


def save(
    name: str,
    model: nn.Module,
    *,
    builder: str,
    kwargs: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights to ``data/weights/<name>.pt`` and record them in the manifest.

    Used by ``python -m lrp_teach.train``; the entry records the hash, the builder that
    recreates the architecture, the command that reproduces the file, and its metrics.
    """
    root = data_dir()
    (root / "weights").mkdir(parents=True, exist_ok=True)
    rel = f"weights/{name}.pt"
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, root / rel)
    manifest_path = root / MANIFEST
    manifest = _read_manifest(root) if manifest_path.exists() else {"weights": {}}
    record: dict[str, Any] = {
        "file": rel,
        "sha256": sha256(root / rel),
        "builder": builder,
        "kwargs": kwargs or {},
        "command": f"python -m lrp_teach.train {name}",
        "metrics": metrics or {},
    }
    if extra:
        record.update(extra)
    manifest.setdefault("weights", {})[name] = record
    manifest["weights"] = dict(sorted(manifest["weights"].items()))
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    return root / rel
