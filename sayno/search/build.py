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
from sayno.glasses.training_free import TRAINING_FREE, TrainingFreeGlasses, is_training_free
from sayno.glasses.training_free import identity as training_free_identity
from sayno.runtime import torch_threads
from sayno.search.ann import build_coarse, check_kind, index_info
from sayno.search.milvus import MilvusStore, check_backend, collection_name
from sayno.search.shards import NpyRows, VectorSpool, incoming_path, merge_to_file, remove_leftovers
from sayno.search.store import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    POINTER,
    FileTable,
    IndexBackboneMismatch,
    IndexData,
    IndexMismatch,
    SearchError,
    current_version,
    is_index,
    read_index,
    recorded_versions,
    write_version,
    writer_lock,
)


@dataclass
class IndexConfig:
    """How to build an index.

    model: backbone spec. glasses: a Glasses checkpoint, ``"auto"`` (the shipped one for ``embedded``, the
    training-free Glasses otherwise), ``"training-free"`` or ``None``/``"none"``. rebuild: ignore (and replace) an existing index even if it was built with another
    model, Glasses checkpoint or folder. batch_size: images per forward pass; num_workers: decoding processes.
    """

    model: str = "embedded"
    glasses: str | None = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    num_workers: int = 0
    rebuild: bool = False
    index: str = "auto"  # flat | ivf | auto (sayno.search.ann)
    backend: str = "faiss"  # faiss | milvus (sayno.search.milvus; needs uri)
    uri: str | None = None  # milvus: ./photos.db (Milvus Lite) or http://host:19530


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
    glasses: str = ""  # the Glasses negated queries will use: "CLIPGlasses", "CLIPGlasses (training-free)", ""
    index_kind: str = ""  # "flat" or "ivf" (sayno.search.ann)
    backend: str = "faiss"
    notes: list[str] = field(default_factory=list)  # how the index was chosen, fallbacks

    def summary(self) -> str:
        using = f"; negated queries: {self.glasses}" if self.glasses else "; no Glasses: plain CLIP only"
        kind = f" ({self.index_kind} index{', milvus' if self.backend == 'milvus' else ''})" if self.index_kind else ""
        return (f"{self.total} images indexed ({self.encoded} encoded, {self.reused} reused, {self.removed} "
                f"removed, {len(self.bad)} unreadable) in {self.seconds:.1f} s -> {self.index}{kind}{using}")


# ------------------------------------------------------------------------------------------ identities
def resolve_glasses(glasses: str | os.PathLike | None, model: str) -> Path | str | None:
    """``"auto"``: the shipped checkpoint for ``model`` (``embedded`` only), else ``"training-free"`` (the
    training-free Glasses, :mod:`sayno.glasses.training_free`); ``"none"``/None: None; else the path."""
    if glasses is None or str(glasses).lower() == "none":
        return None
    if is_training_free(glasses):
        return TRAINING_FREE
    if str(glasses) == "auto":
        return shipped_weights("glasses", model) or TRAINING_FREE
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


def glasses_identity(path: Path | str | None, backbone) -> dict | None:
    """``{"path", "sha1"}`` of a Glasses checkpoint, after checking (from its header) that it is one and was
    trained on ``backbone`` (:class:`sayno.errors.BackboneMismatch` otherwise); for ``"training-free"`` its
    identity (kind, version, settings; the calibration is added at the end of the build)."""
    if path is None:
        return None
    if is_training_free(path):
        return training_free_identity()
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
    if is_training_free(identity):
        return f"training-free Glasses (version {identity.get('version')})"
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
                 progress: bool, vectors: VectorSpool | None = None) -> _Part:
    """Read, decode and encode ``jobs``; new vectors go to ``vectors`` (a spool on disk) or a list."""
    part = _Part(vectors=[] if vectors is None else vectors)
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
                backbone=None, progress: bool = True, threads: int | None = None, force: bool = False
                ) -> BuildReport:
    """Index (or update the index of) every image under ``folder`` into ``out``.

    ``backbone``: an already loaded backbone (else ``config.model`` is loaded). ``threads``: torch threads
    while building, >= 1 (restored afterwards; None: leave the setting alone). ``force``: allow an ``out``
    that is the image folder, inside it, or a non-empty folder that is not an index (the index never removes
    anything it did not write). Raises :class:`SearchError` for bad arguments (before any work), a missing
    folder or one without images, another build writing ``out`` (the writer lock is held for the whole build),
    and :class:`IndexMismatch` when ``out`` holds an index of another backbone (an
    :class:`IndexBackboneMismatch`), Glasses checkpoint or folder (unless ``config.rebuild``).
    """
    cfg = config if config is not None else IndexConfig()
    check_config(cfg)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SearchError(f"threads={threads!r}: give a number of threads >= 1 (or None for torch's default)")
    folder, out = Path(folder).expanduser().resolve(), Path(out).expanduser().resolve()
    if not folder.is_dir():
        raise SearchError(f"{folder}: no such image folder")
    check_out(folder, out, force)
    resolve_glasses(cfg.glasses, cfg.model)  # a missing checkpoint fails before the model loads
    if cfg.backend == "milvus":  # a Milvus that does not answer fails before any work
        MilvusStore(cfg.uri).close()
    with torch_threads(threads):
        return _build(folder, out, cfg, backbone, progress)


def check_config(cfg: IndexConfig) -> None:
    """:class:`SearchError` for a config that cannot build anything."""
    if not isinstance(cfg, IndexConfig):
        raise SearchError(f"config must be an IndexConfig, not {type(cfg).__name__}")
    for name, low in (("batch_size", 1), ("num_workers", 0)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SearchError(f"{name}={value!r}: give an integer >= {low}")
    if not isinstance(cfg.model, str) or not cfg.model:
        raise SearchError(f"model={cfg.model!r}: give a backbone spec such as 'embedded'")
    check_kind(cfg.index)
    check_backend(cfg.backend, cfg.uri)
    if cfg.backend == "milvus" and cfg.uri is None:
        raise SearchError("--backend milvus needs --uri: a Milvus Lite file (./photos.db) or a server "
                          "(http://host:19530)")


def check_out(folder: Path, out: Path, force: bool = False) -> None:
    """:class:`SearchError` unless ``out`` (absolute) can hold the index of ``folder`` (absolute): a file, a
    missing parent folder, the image folder itself or a folder inside it, and a non-empty folder that is not
    a sayno index are refused (the last two unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise SearchError(f"{out}: is a file; --out names the folder that holds the index")
    if not out.parent.is_dir():
        raise SearchError(f"{out.parent}: no such folder (create it first; --out names the index folder)")
    if force:
        return
    if out == folder or out.is_relative_to(folder):
        raise SearchError(f"{out}: is {'the image folder' if out == folder else 'inside the image folder'} "
                          f"{folder}; give an --out outside it (or --force)")
    looks_like_index = (out / POINTER).is_file() or (out / MANIFEST).is_file()  # damaged ones too: --rebuild
    if out.is_dir() and not looks_like_index and any(p.name != ".lock" for p in out.iterdir()):
        raise SearchError(f"{out}: a folder with other files that is not a sayno index; give a new or empty "
                          "folder as --out (or --force to keep the index beside them)")


def _build(folder: Path, out: Path, cfg: IndexConfig, backbone, progress: bool) -> BuildReport:
    t0 = time.perf_counter()
    rank, world, own_group = _dist_info(cfg.device)
    rows, bad = scan_folder(folder)
    if not rows and not bad:
        kinds = ", ".join(sorted(ext[1:] for ext in IMAGE_EXTENSIONS))
        raise SearchError(f"{folder}: no images ({kinds}) in this folder or below it")
    with _rank0_lock(out, rank, world):
        if backbone is None:
            backbone = load(cfg.model, device=_rank_device(cfg.device, world), precision=cfg.precision)
        glasses = glasses_identity(resolve_glasses(cfg.glasses, cfg.model), backbone)
        old = _previous(out, folder, backbone.fingerprint, glasses, cfg.rebuild)
        keep, todo, known_ids = _plan(rows, old)
        files = [folder / r[0] for r in rows]
        report = BuildReport(out, "", folder, 0, 0, 0, 0, bad, 0.0, world)
        if rank == 0:
            remove_leftovers(out)  # files of interrupted builds (rank 0 holds the writer lock)
        # one process: new vectors are spooled to disk as they are encoded (sayno.search.shards)
        spool = VectorSpool(incoming_path(out, ".spool"), backbone.embed_dim) if world == 1 else None
        try:
            part = _encode_jobs(backbone, files, todo[rank::world], frozenset(known_ids), cfg,
                                progress and rank == 0, vectors=spool)
            if world == 1:
                report = _merge(out, folder, rows, keep, old, known_ids, [part], bad, backbone, glasses, cfg, world)
        finally:
            if spool is not None:
                spool.close()
        if world > 1:
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


@contextlib.contextmanager
def _rank0_lock(out: Path, rank: int, world: int) -> Iterator[None]:
    """Rank 0 holds ``out``'s writer lock for the whole build (every rank learns if it could not). A folder
    this build created is removed again when the build fails before writing an index."""
    created = not out.exists()
    with contextlib.ExitStack() as stack:
        refused = None
        if rank == 0:
            try:
                stack.enter_context(writer_lock(out))
            except SearchError as e:
                refused = str(e)
        refused = _broadcast(refused, world)
        if refused is not None:
            raise SearchError(refused)
        try:
            yield
        except BaseException:
            if rank == 0 and created and not is_index(out):
                stack.close()
                _remove_empty_index_folder(out)
            raise


def _remove_empty_index_folder(out: Path) -> None:
    with contextlib.suppress(OSError):
        (out / ".lock").unlink(missing_ok=True)
        out.rmdir()


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
    if rebuild or not (out / POINTER).exists():
        return None
    old = read_index(out)  # a damaged index is a SearchError that says to rebuild
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
    # streamed to a file in path order, a chunk at a time; write_version moves it into the version
    feats = merge_to_file(incoming_path(out), keep_rows, source, _old_rows(old), new_vec, dim)
    table = FileTable.from_rows([(rows[i][0], rows[i][1], rows[i][2], sha[i]) for i in keep_rows])
    removed = len(set(old.files.path.tolist()) - {rows[i][0] for i in keep_rows}) if old is not None else 0
    if is_training_free(glasses):  # calibrated on the indexed vectors, stored with the index
        glasses = TrainingFreeGlasses.from_backbone(backbone, reference_images=np.load(feats, mmap_mode="r")
                                                    ).identity()
    envelope = Envelope(
        FORMAT, FORMAT_VERSION, backbone.fingerprint, backbone.spec, asdict(cfg),
        {"embed_dim": dim, "logit_scale": float(backbone.logit_scale), "glasses": glasses, "root": str(folder),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
         "build": {"encoded": encoded, "reused": int(len(keep_rows) - encoded), "removed": removed,
                   "processes": world},
         "bad": [{"path": b.file, "reason": b.reason} for b in bad]})
    writers = None
    try:  # the caller holds the writer lock
        writers = _IndexWriters(out, cfg, old, source[keep_rows])
        version = write_version(out, feats, table, envelope, coarse=writers.coarse, publish=writers.publish)
        writers.drop_stale()
    finally:
        if writers is not None:
            writers.close()
        feats.unlink(missing_ok=True)  # moved into the version unless the write failed
    name = "" if glasses is None else glasses.get("name", "CLIPGlasses")
    report = BuildReport(out, version, folder, len(keep_rows), encoded, int(len(keep_rows) - encoded), removed,
                         bad, 0.0, world, name)
    report.index_kind, report.backend, report.notes = writers.kind, cfg.backend, writers.notes
    return report


def _old_rows(old: IndexData | None):
    """The previous version's vectors, read through the file (:class:`NpyRows`) when it is still there."""
    if old is None:
        return None
    path = old.folder / "vectors.npy"
    return NpyRows(path) if path.is_file() else old.vectors


class _IndexWriters:
    """The coarse index (:func:`sayno.search.ann.build_coarse`: flat or IVF, keeping the previous version's
    cells when they fit) and, for the milvus backend, the upload of a version before it goes live."""

    def __init__(self, out: Path, cfg: IndexConfig, old: IndexData | None, source: np.ndarray):
        self.out, self.cfg, self.old, self.source = out, cfg, old, source
        self.kind, self.notes = "", []
        self.store = MilvusStore(cfg.uri) if cfg.backend == "milvus" else None

    def coarse(self, vectors: np.ndarray) -> tuple[object, dict]:
        old = self.old
        index, info, reason = build_coarse(
            vectors, self.cfg.index, previous=old.coarse if old is not None else None,
            previous_info=index_info(old) if old is not None else None,
            previous_version=old.version if old is not None else "", source=self.source)
        self.kind = info["kind"]
        self.notes.append(reason)
        return index, {"index": info}

    def publish(self, version: str, vectors: np.ndarray) -> dict:
        if self.store is None:
            return {"backend": {"kind": "faiss"}}
        return {"backend": self.store.upload(collection_name(self.out, version), vectors)}

    def drop_stale(self) -> None:
        """Drop this index's Milvus collections of versions no longer on disk (best effort)."""
        if self.store is not None:
            with contextlib.suppress(SearchError):
                self.store.drop_stale(self.out, set(recorded_versions(self.out)) | {current_version(self.out)})

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
