"""Building and updating an index of an image folder: scan -> diff -> encode what changed -> one new version.

Data flows one way: files -> (sha1, pixels) -> backbone image features -> faiss vectors + file table.

- **Incremental.** A file whose (path, size, mtime) is unchanged keeps its stored vector without being read.
  Any other file is read once: its sha1 is taken from the bytes; a content already in the index (a renamed or
  touched file) reuses that vector; anything else is decoded and encoded. Files that disappeared are dropped.
- **Streamed.** Files are decoded and encoded one batch at a time (a torch DataLoader with ``num_workers``
  decoding processes); memory holds one batch of pixels plus the features (4*D bytes per image).
- **Folder walking** is :func:`sayno.data.walk_images` (its extensions; hidden files and folders skipped;
  symlinks followed, each real folder once).
- **Unreadable files** (corrupt, truncated, not an image, no permission) are reported with their paths and
  left out; the next build tries them again.
- **Many processes.** Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank scans the folder, encodes every
  WORLD_SIZE-th file that needs encoding, and writes its part to ``INDEX/.parts-<run>/``; rank 0 merges them
  into one version. The result equals a one-process build (same rows, same vectors).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sayno.backbones import load
from sayno.base.shipped import shipped_weights
from sayno.checkpoint import Envelope, atomic_path, read_header
from sayno.data.errors import BadRow
from sayno.data.images import IMAGE_EXTENSIONS, to_rgb, walk_images
from sayno.glasses.checkpoint import FORMAT as GLASSES_FORMAT
from sayno.runtime import torch_threads
from sayno.search.store import (
    FORMAT,
    FORMAT_VERSION,
    FileTable,
    IndexBackboneMismatch,
    IndexData,
    IndexMismatch,
    SearchError,
    is_index,
    read_index,
    write_version,
    writer_lock,
)



@dataclass
class IndexConfig:
    """How to build an index.

    model: backbone spec. glasses: a Glasses checkpoint, ``"auto"`` (the shipped one for ``embedded``, none
    otherwise) or ``None``. rebuild: ignore (and replace) an existing index even if it was built with another
    model, Glasses checkpoint or folder. batch_size: images per forward pass; num_workers: decoding processes.
    """

    model: str = "embedded"
    glasses: str | None = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    num_workers: int = 0
    rebuild: bool = False


@dataclass
class BuildReport:
    """What a build did. ``bad``: unreadable files (path, reason), not in the index."""

    index: Path
    version: str
    folder: Path
    total: int
    encoded: int
    reused: int
    removed: int
    bad: list[BadRow] = field(default_factory=list)
    seconds: float = 0.0
    processes: int = 1

    def summary(self) -> str:
        return (f"{self.total} images indexed ({self.encoded} encoded, {self.reused} reused, {self.removed} "
                f"removed, {len(self.bad)} unreadable) in {self.seconds:.1f} s -> {self.index}")


# ------------------------------------------------------------------------------------------ identities
def resolve_glasses(glasses: str | os.PathLike | None, model: str) -> Path | None:
    """``"auto"``: the shipped checkpoint for ``model`` (``embedded`` only), else None; ``"none"``/None: None;
    else the path."""
    if glasses is None or str(glasses).lower() == "none":
        return None
    if str(glasses) == "auto":
        return shipped_weights("glasses", model)
    path = Path(glasses).expanduser()
    if not path.is_file():
        raise SearchError(f"{path}: no such Glasses checkpoint")
    return path.resolve()


def file_sha1(path: str | os.PathLike) -> str:
    """Hex sha1 of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def glasses_identity(path: Path | None, backbone) -> dict | None:
    """``{"path", "sha1"}`` of a Glasses checkpoint, after checking (from its header) that it is one and was
    trained on ``backbone`` (:class:`sayno.errors.BackboneMismatch` otherwise)."""
    if path is None:
        return None
    envelope = read_header(path)
    if envelope.format != GLASSES_FORMAT:
        raise SearchError(f"{path}: not a Glasses checkpoint (format {envelope.format!r})")
    envelope.check_backbone(backbone.fingerprint, backbone.spec, str(path))
    return {"path": str(path), "sha1": file_sha1(path)}


def check_compatible(index: IndexData, fingerprint: str, glasses: dict | None, what: str) -> None:
    """Raise :class:`IndexMismatch` when ``index`` was built with another backbone (then an
    :class:`IndexBackboneMismatch`) or another Glasses checkpoint than the given ones."""
    if index.fingerprint != fingerprint:
        raise IndexBackboneMismatch(
            f"{what} was built with backbone {index.model!r} (fingerprint {index.fingerprint}), not the given "
            f"one (fingerprint {fingerprint}): use the index's model, or rebuild the index")
    have = (index.glasses or {}).get("sha1")
    want = (glasses or {}).get("sha1")
    if have != want:
        raise IndexMismatch(f"{what} was built with {_glasses_name(index.glasses)}, not {_glasses_name(glasses)}: "
                            "use the index's checkpoint, or rebuild the index")


def _glasses_name(identity: dict | None) -> str:
    return f"{identity['path']} (sha1 {identity['sha1'][:12]})" if identity else "no Glasses"


# ------------------------------------------------------------------------------------------ scanning
def scan_folder(folder: str | os.PathLike) -> tuple[list[tuple[str, int, int]], list[BadRow]]:
    """Image files under ``folder`` (:func:`sayno.data.walk_images`: any depth, hidden files and folders
    skipped, symlinks followed), sorted by path.

    Returns ``(relative posix path, size, mtime_ns)`` rows and the files that could not even be stat'ed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise SearchError(f"{root}: no such image folder")
    rows, bad = [], []
    for path in walk_images(root):
        try:
            st = path.stat()
        except OSError as e:
            bad.append(BadRow(str(path), None, f"cannot read file ({e.strerror or type(e).__name__})"))
            continue
        rows.append((path.relative_to(root).as_posix(), int(st.st_size), int(st.st_mtime_ns)))
    rows.sort()
    return rows, bad


# ------------------------------------------------------------------------------------------ decoding
class _ReadDecode(torch.utils.data.Dataset):
    """Job j -> (j, sha1 | None, pixels | None, reason | None). One read per file; contents whose sha1 is
    in ``known`` are not decoded (their vector is reused). Never raises on a bad file."""

    def __init__(self, files: Sequence[Path], preprocess: Callable, known: frozenset[str]):
        self.files, self.preprocess, self.known = list(files), preprocess, known

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, j: int):
        p = self.files[j]
        try:
            data = p.read_bytes()
        except OSError as e:
            return j, None, None, f"cannot read file ({e.strerror or type(e).__name__})"
        sha = hashlib.sha1(data).hexdigest()
        if sha in self.known:
            return j, sha, None, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                rgb = to_rgb(im)
            return j, sha, self.preprocess(rgb), None
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, EOFError, ...
            msg = " ".join(str(e).split())[:120]
            return j, sha, None, f"cannot decode image ({type(e).__name__}: {msg})"


def _as_list(batch: list) -> list:
    return batch


def _progress(enabled: bool) -> Progress | contextlib.nullcontext:
    if not enabled:
        return contextlib.nullcontext()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


@dataclass
class _Part:
    """One rank's work: for each job it handled, either a vector or the id of a reused content."""

    job: list[int] = field(default_factory=list)
    sha1: list[str] = field(default_factory=list)
    reuse: list[str] = field(default_factory=list)  # sha1 of a known content, "" where encoded
    vectors: list[np.ndarray] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)


def _encode_jobs(backbone, files: Sequence[Path], jobs: Sequence[int], known: frozenset[str], cfg: IndexConfig,
                 progress: bool) -> _Part:
    part = _Part()
    data = _ReadDecode([files[j] for j in jobs], backbone.preprocess, known)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         collate_fn=_as_list, shuffle=False)
    with _progress(progress and len(jobs) > cfg.batch_size) as bar:
        task = bar.add_task("encoding images", total=len(jobs)) if bar is not None else None
        for batch in loader:
            good = []
            for k, sha, px, reason in batch:
                if reason is not None:
                    part.bad.append((jobs[k], reason))
                elif px is None:
                    part.job.append(jobs[k])
                    part.sha1.append(sha)
                    part.reuse.append(sha)
                else:
                    good.append((k, sha, px))
            if good:
                with torch.no_grad():
                    out = backbone.encode_image(torch.stack([px for _, _, px in good])).float().cpu().numpy()
                for (k, sha, _), v in zip(good, out):
                    part.job.append(jobs[k])
                    part.sha1.append(sha)
                    part.reuse.append("")
                    part.vectors.append(v)
            if bar is not None:
                bar.advance(task, len(batch))
    return part


# ------------------------------------------------------------------------------------------ processes
def _dist_info(device: str) -> tuple[int, int, bool]:
    """(rank, world, whether this call initialised the process group) under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    mine = not dist.is_initialized()
    if mine:
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), mine


def _broadcast(obj, world: int):
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _save_part(path: Path, part: _Part, dim: int) -> None:
    vec = np.stack(part.vectors) if part.vectors else np.zeros((0, dim), np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, job=np.asarray(part.job, np.int64), sha1=np.asarray(part.sha1, dtype="<U40"),
                 reuse=np.asarray(part.reuse, dtype="<U40"), vectors=vec.astype(np.float32),
                 bad=np.asarray(json.dumps(part.bad)))


def _load_part(path: Path) -> _Part:
    with np.load(path, allow_pickle=False) as z:
        vec = z["vectors"]
        return _Part(z["job"].tolist(), z["sha1"].tolist(), z["reuse"].tolist(), list(vec),
                     [tuple(b) for b in json.loads(str(z["bad"]))])


# ------------------------------------------------------------------------------------------ the build
def build_index(folder: str | os.PathLike, out: str | os.PathLike, config: IndexConfig | None = None, *,
                backbone=None, progress: bool = True, threads: int | None = None) -> BuildReport:
    """Index (or update the index of) every image under ``folder`` into ``out``.

    ``backbone``: an already loaded backbone (else ``config.model`` is loaded). ``threads``: torch threads
    while building (restored afterwards; None: leave the setting alone). Raises :class:`SearchError` for a
    missing folder or one without images, :class:`IndexMismatch` when ``out`` holds an index of another
    backbone (an :class:`IndexBackboneMismatch`), Glasses checkpoint or folder (unless ``config.rebuild``).
    """
    with torch_threads(threads):
        return _build(Path(folder).resolve(), Path(out).resolve(), config or IndexConfig(), backbone, progress)


def _build(folder: Path, out: Path, cfg: IndexConfig, backbone, progress: bool) -> BuildReport:
    t0 = time.perf_counter()
    rank, world, own_group = _dist_info(cfg.device)
    if backbone is None:
        backbone = load(cfg.model, device=_rank_device(cfg.device, world), precision=cfg.precision)
    glasses = glasses_identity(resolve_glasses(cfg.glasses, cfg.model), backbone)

    rows, bad = scan_folder(folder)
    if not rows and not bad:
        kinds = ", ".join(sorted(ext[1:] for ext in IMAGE_EXTENSIONS))
        raise SearchError(f"{folder}: no images ({kinds}) in this folder or below it")
    old = _previous(out, folder, backbone.fingerprint, glasses, cfg.rebuild)
    keep, todo, known_ids = _plan(rows, old)
    files = [folder / r[0] for r in rows]
    part = _encode_jobs(backbone, files, todo[rank::world], frozenset(known_ids), cfg, progress and rank == 0)

    report = BuildReport(out, "", folder, 0, 0, 0, 0, bad, 0.0, world)
    if world == 1:
        report = _merge(out, folder, rows, keep, old, known_ids, [part], bad, backbone, glasses, cfg, world)
    else:
        with _shared_parts(out, rank, world) as parts_dir:
            _save_part(parts_dir / f"rank-{rank}.npz", part, backbone.embed_dim)
            _barrier(world)
            if rank == 0:
                parts = [_load_part(parts_dir / f"rank-{r}.npz") for r in range(world)]
                report = _merge(out, folder, rows, keep, old, known_ids, parts, bad, backbone, glasses, cfg,
                                world)
        report = _broadcast(report, world)
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    report.seconds = time.perf_counter() - t0
    return report


def _rank_device(device: str, world: int) -> str:
    """Under torchrun, ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``)."""
    if world > 1 and device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


@contextlib.contextmanager
def _shared_parts(out: Path, rank: int, world: int) -> Iterator[Path]:
    """``INDEX/.parts-<run>/`` (one name for all ranks), removed by rank 0 when the block ends."""
    run = _broadcast(uuid.uuid4().hex[:12], world)
    parts_dir = out / f".parts-{run}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield parts_dir
    finally:
        if rank == 0:
            shutil.rmtree(parts_dir, ignore_errors=True)


def _plan(rows: list[tuple[str, int, int]], old: IndexData | None
          ) -> tuple[dict[int, int], list[int], dict[str, int]]:
    """What to do with each scanned row: ``keep`` (row -> old row, unchanged stat), ``todo`` (rows to read)
    and ``known_ids`` (sha1 of an old content -> its first old row, for reuse)."""
    if old is None:
        return {}, list(range(len(rows))), {}
    old_pos = {p: i for i, p in enumerate(old.files.path.tolist())}
    keep: dict[int, int] = {}
    todo: list[int] = []
    for i, (path, size, mtime) in enumerate(rows):
        j = old_pos.get(path)
        if j is not None and old.files.size[j] == size and old.files.mtime_ns[j] == mtime:
            keep[i] = j
        else:
            todo.append(i)
    known_ids: dict[str, int] = {}
    for j, sha in enumerate(old.files.sha1.tolist()):
        known_ids.setdefault(sha, j)
    return keep, todo, known_ids


def _previous(out: Path, folder: Path, fingerprint: str, glasses: dict | None, rebuild: bool
              ) -> IndexData | None:
    """The live version of ``out`` to update (None: start over), after checking it fits."""
    if not is_index(out) or rebuild:
        return None
    old = read_index(out)
    check_compatible(old, fingerprint, glasses, str(out))
    if old.root != folder:
        raise IndexMismatch(f"{out} indexes {old.root}, not {folder}: use another --out, or --rebuild")
    return old


def _merge(out: Path, folder: Path, rows, keep: dict[int, int], old: IndexData | None, known_ids: dict[str, int],
           parts: list[_Part], bad: list[BadRow], backbone, glasses: dict | None, cfg: IndexConfig,
           world: int) -> BuildReport:
    """Rank 0: put kept, reused and new vectors in path order and write one new version."""
    dim = int(backbone.embed_dim)
    n = len(rows)
    sha = [""] * n
    source = np.full(n, -1, np.int64)  # old row to copy from
    new_vec: dict[int, np.ndarray] = {}
    for i, j in keep.items():
        source[i] = j
        sha[i] = str(old.files.sha1[j])
    encoded = 0
    for part in parts:
        vec_iter = iter(part.vectors)
        for job, h, reuse in zip(part.job, part.sha1, part.reuse):
            sha[job] = h
            if reuse:
                source[job] = known_ids[reuse]
            else:
                new_vec[job] = next(vec_iter)
                encoded += 1
        for job, reason in part.bad:
            bad.append(BadRow(str(folder / rows[job][0]), None, reason))
    ok = np.array([source[i] >= 0 or i in new_vec for i in range(n)], dtype=bool)
    if not ok.any():
        raise SearchError(f"{folder}: none of its {n} image files could be read ({bad[0] if bad else ''})")
    keep_rows = np.flatnonzero(ok)
    old_feats = old.features(source[keep_rows][source[keep_rows] >= 0]) if old is not None else None
    feats = np.empty((len(keep_rows), dim), np.float32)
    o = 0
    for r, i in enumerate(keep_rows):
        if source[i] >= 0:
            feats[r] = old_feats[o]
            o += 1
        else:
            feats[r] = new_vec[i]
    table = FileTable.from_rows([(rows[i][0], rows[i][1], rows[i][2], sha[i]) for i in keep_rows])
    removed = len(set(old.files.path.tolist()) - {rows[i][0] for i in keep_rows}) if old is not None else 0
    envelope = Envelope(
        FORMAT, FORMAT_VERSION, backbone.fingerprint, backbone.spec, asdict(cfg),
        {"embed_dim": dim, "logit_scale": float(backbone.logit_scale), "glasses": glasses, "root": str(folder),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
         "build": {"encoded": encoded, "reused": int(len(keep_rows) - encoded), "removed": removed,
                   "processes": world},
         "bad": [{"path": b.file, "reason": b.reason} for b in bad]})
    with writer_lock(out):
        version = write_version(out, feats, table, envelope)
    return BuildReport(out, version, folder, len(keep_rows), encoded, int(len(keep_rows) - encoded), removed,
                       bad, 0.0, world)
