"""The one checkpoint envelope: every file sayno writes for a trained thing (Glasses, CLIPN, the fine-tuned
text tower, the embedded backbone) and every index carries the same header.

A checkpoint is a safetensors file: tensors plus string metadata

- ``sayno.format``: what it is (``sayno-glasses``, ``sayno-clipn``, ...), ``sayno.version``: its format version,
- ``sayno.backbone_fingerprint`` / ``sayno.backbone_spec``: the backbone it belongs to (absent for a backbone),
- ``sayno.config``: a JSON object (how to rebuild it), and any further ``sayno.<name>`` JSON sections
  (``training``: data, seed, losses, ...).

Writes are atomic (a temporary file beside the target, then a rename; nothing is left behind on failure) and
give mode 0644. Reads give one-line :class:`CheckpointError` messages for a missing, truncated or foreign file,
a tensor of a dtype sayno does not read (float8, complex) and header JSON nested too deeply to parse;
a checkpoint for another backbone raises :class:`sayno.errors.BackboneMismatch`. Files written by sayno 0.1 with
the older key names (``format``, ``format_version``, ``backbone_fingerprint`` ...) are read as well.

An index folder stores the same envelope as JSON (:meth:`Envelope.to_dict` / :meth:`Envelope.from_dict`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sayno.errors import BackboneMismatch, SaynoError

PREFIX = "sayno."
# keys of sayno 0.1 files (CLIPN wrote un-prefixed keys; Glasses and the fine-tuned tower used the prefix)
_LEGACY = {"format": "format", "format_version": "version", "backbone_fingerprint": "backbone_fingerprint",
           "backbone_spec": "backbone_spec", "config": "config", "training": "training"}


def _readable_dtypes() -> frozenset:
    """The tensor dtypes a checkpoint may hold (float8 and complex ones are refused, not half-read)."""
    import torch

    return frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
                      torch.int16, torch.int32, torch.int64, torch.bool})


class CheckpointError(SaynoError, ValueError):
    """A checkpoint file that cannot be used: missing, not safetensors, another format or version, bad tensors."""


@dataclass(frozen=True)
class Envelope:
    """What a checkpoint says about itself.

    format: e.g. ``"sayno-glasses"``; version: the format version (a string); backbone_fingerprint and
    backbone_spec: the backbone it was trained on (None for a backbone itself); config: a JSON-able dict;
    sections: further JSON-able dicts by name (``"training"``, ...).
    """

    format: str
    version: str
    backbone_fingerprint: str | None = None
    backbone_spec: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata (all strings)."""
        meta = {PREFIX + "format": self.format, PREFIX + "version": str(self.version),
                PREFIX + "config": json.dumps(self.config, sort_keys=True)}
        if self.backbone_fingerprint is not None:
            meta[PREFIX + "backbone_fingerprint"] = self.backbone_fingerprint
        if self.backbone_spec is not None:
            meta[PREFIX + "backbone_spec"] = self.backbone_spec
        for name, value in self.sections.items():
            meta[PREFIX + name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], where: str = "checkpoint") -> Envelope:
        """Parse safetensors metadata (current or sayno 0.1 keys); raises :class:`CheckpointError`."""
        flat: dict[str, str] = {}
        for key, value in meta.items():
            if key.startswith(PREFIX):
                flat[key[len(PREFIX):]] = value
            elif key in _LEGACY:
                flat.setdefault(_LEGACY[key], value)
        if "format" not in flat:
            raise CheckpointError(f"{where}: not a sayno checkpoint (no format in its header)")
        sections: dict[str, Any] = {}
        for key, value in flat.items():
            if key in ("format", "version", "backbone_fingerprint", "backbone_spec", "config"):
                continue
            sections[key] = _json_or_text(value, f"{where}: its {key}")
        config = _json_or_text(flat.get("config", "{}"), f"{where}: its config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{where}: its config is not a JSON object")
        return cls(format=flat["format"], version=str(flat.get("version", "")),
                   backbone_fingerprint=flat.get("backbone_fingerprint"), backbone_spec=flat.get("backbone_spec"),
                   config=config, sections=sections)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for index folders)."""
        return {"format": self.format, "version": self.version, "backbone_fingerprint": self.backbone_fingerprint,
                "backbone_spec": self.backbone_spec, "config": self.config, **self.sections}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "index") -> Envelope:
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{where}: its metadata is not a JSON object")
        if "format" not in data:
            raise CheckpointError(f"{where}: no format in its metadata")
        if not isinstance(data.get("config") or {}, Mapping):
            raise CheckpointError(f"{where}: its config is not a JSON object")
        for key in ("backbone_fingerprint", "backbone_spec"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise CheckpointError(f"{where}: its {key} is not a string")
        known = {"format", "version", "backbone_fingerprint", "backbone_spec", "config"}
        return cls(format=str(data["format"]), version=str(data.get("version", "")),
                   backbone_fingerprint=data.get("backbone_fingerprint"), backbone_spec=data.get("backbone_spec"),
                   config=dict(data.get("config") or {}),
                   sections={k: v for k, v in data.items() if k not in known})

    def expect(self, format: str, versions: str | tuple[str, ...], where: str) -> Envelope:
        """Raise :class:`CheckpointError` unless this is ``format`` in one of ``versions``; returns self."""
        if self.format != format:
            raise CheckpointError(f"{where}: a {self.format!r} file, not {format!r}")
        versions = (versions,) if isinstance(versions, str) else versions
        if self.version not in versions:
            raise CheckpointError(f"{where}: {format} format version {self.version!r}; this sayno reads "
                                  f"{', '.join(versions)}")
        return self

    def check_backbone(self, fingerprint: str, spec: str | None = None, where: str = "checkpoint") -> None:
        """Raise :class:`sayno.errors.BackboneMismatch` unless this belongs to the backbone ``fingerprint``."""
        if self.backbone_fingerprint != fingerprint:
            raise BackboneMismatch(
                f"{where}: made for backbone {self.backbone_spec!r} (fingerprint {self.backbone_fingerprint}), "
                f"not {spec!r} ({fingerprint})")


def _json_or_text(value: str, where: str) -> Any:
    """A metadata value: its JSON when it is JSON, else the text; :class:`CheckpointError` when too deep."""
    try:
        return json.loads(value)
    except RecursionError:
        raise CheckpointError(f"{where}: JSON nested too deeply to read") from None
    except (TypeError, ValueError):
        return value


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (mode ``mode``), on any
    failure removed. The parent folder must exist (a one-line :class:`CheckpointError` otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise CheckpointError(f"{path.parent}: no such folder")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write ({e.strerror or e})") from e
    except Exception as e:  # writers that wrap OSError (torch.save: RuntimeError, safetensors: SafetensorError)
        full = _out_of_space(tmp.parent, e)
        tmp.unlink(missing_ok=True)
        if full:
            raise CheckpointError(f"{path}: cannot write (no space left on device)") from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _out_of_space(folder: Path, error: BaseException, margin: int = 1 << 20) -> bool:
    """Whether a failed write into ``folder`` failed because the disk is full (its error says so, or less than
    ``margin`` bytes are left while the partial file still holds what was written)."""
    if "no space left" in str(error).lower():
        return True
    try:
        stat = os.statvfs(folder)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < margin


def write_checkpoint(path: str | os.PathLike, tensors: Mapping[str, Any], envelope: Envelope) -> Path:
    """Write ``tensors`` (name -> torch tensor) with ``envelope`` atomically; returns the path.

    The parent folder is created. Non-finite tensors are refused (a NaN checkpoint is a training bug)."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.parent != Path("") and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"{path.parent}: cannot create folder ({e.strerror or e})") from e
    state = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {name!r} has NaN or infinite values; not written")
        state[name] = t
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=envelope.to_metadata())
    return path


def read_header(path: str | os.PathLike) -> Envelope:
    """The envelope of a checkpoint, without loading tensors."""
    return _open(path, load=False)[1]


def read_checkpoint(path: str | os.PathLike, format: str | None = None,
                    versions: str | tuple[str, ...] = ()) -> tuple[dict[str, Any], Envelope]:
    """Tensors (name -> torch tensor) and envelope of a checkpoint; checks format/version when given and that
    every floating tensor is finite."""
    import torch

    tensors, env = _open(path, load=True)
    if format is not None:
        env.expect(format, versions or env.version, str(path))
    for name, t in tensors.items():
        if t.dtype not in _readable_dtypes():
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}; "
                                  "sayno reads float16/bfloat16/float32/float64, integer and bool tensors")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {name!r} has NaN or infinite values")
    return tensors, env


def _open(path: str | os.PathLike, load: bool) -> tuple[dict[str, Any], Envelope]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if load else {}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e
    return tensors, Envelope.from_metadata(meta, str(path))


def check_tensors(tensors: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Raise :class:`CheckpointError` naming the first missing, unexpected or wrong-shaped tensor.

    expected: name -> shape of what the module to be loaded holds."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{where}: missing tensor(s) {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor(s) {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {got}, expected {tuple(shape)}")


def finite(x: float) -> bool:
    return math.isfinite(float(x))
