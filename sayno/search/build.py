"""Building and updating an index of an image folder: scan -> diff -> encode what changed -> one new version.

Data flows one way: files -> (sha1, pixels) -> backbone image features -> faiss vectors + file table.

- **Incremental.** A file whose (path, size, mtime) is unchanged keeps its stored vector without being read.
  Any other file is read once: its sha1 is taken from the bytes; a content already in the index (a renamed or
  touched file) reuses that vector; anything else is decoded and encoded. Files that disappeared are dropped.
- **Streamed.** Files are decoded and encoded one batch at a time (a torch DataLoader with ``num_workers``
  decoding processes); new vectors go to a spool file as they are encoded and are merged into the version a
  chunk at a time (:mod:`sayno.search.shards`); the flat faiss index is written straight to its file. What
  is kept per image is flat arrays, never a Python object per file: the scan (:mod:`sayno.search.scan`: paths
  as one byte blob, sizes, mtimes), raw 20-byte sha1 digests, row numbers (about 100 bytes per image in all);
  unchanged files and known contents are matched by hash and binary search, not dicts.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress

from sayno.backbones import load
from sayno.base.shipped import shipped_weights
from sayno.checkpoint import Envelope, atomic_path, read_header
from sayno.cliutil import progress_bar
from sayno.data.errors import BadRow
from sayno.data.images import IMAGE_EXTENSIONS, to_rgb
from sayno.glasses.checkpoint import FORMAT as GLASSES_FORMAT
from sayno.glasses.model import load_glasses
from sayno.glasses.training_free import TRAINING_FREE, TrainingFreeGlasses, is_training_free
from sayno.glasses.training_free import identity as training_free_identity
from sayno.runtime import torch_threads
from sayno.search.ann import build_coarse, check_kind, index_info
from sayno.search.match import section as match_section
from sayno.search.milvus import MilvusStore, MilvusSync, backend_section, check_backend, content_keys
from sayno.search.scan import Scanned, scan_images
from sayno.search.shards import (
    INCOMING_PREFIX,
    NPY_HEADERS,
    ConcatRows,
    NpyRows,
    VectorSpool,
    incoming_path,
    merge_to_file,
    remove_leftovers,
)
from sayno.search.store import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    POINTER,
    IndexBackboneMismatch,
    IndexData,
    IndexMismatch,
    SearchError,
    current_version,
    is_index,
    read_envelope,
    read_index,
    recorded_versions,
    write_version,
    writer_lock,
)
from sayno.search.table import DIGEST, FileTable, PathColumn, Sha1Column


@dataclass
class IndexConfig:
    """How to build an index.

    model: backbone spec. glasses: a Glasses checkpoint, ``"auto"`` (the shipped one for ``embedded``, the
    training-free Glasses otherwise), ``"training-free"`` or ``None``/``"none"``. rebuild: ignore (and replace) an existing index even if it was built with another
    model, Glasses checkpoint or folder. batch_size: images per forward pass; num_workers: decoding processes.
    vocabulary: store the open vocabulary's embeddings for the match test (:mod:`sayno.search.match`; an update
    reuses the previous version's).
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
    vocabulary: bool = True  # the match test also against ~3,000 WordNet nouns (sayno.search.vocabulary)


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
    """``{"path", "sha1"}`` of a Glasses checkpoint, after checking that it is one, was trained on ``backbone``
    (:class:`sayno.errors.BackboneMismatch` otherwise) and loads whole (:func:`sayno.glasses.model.load_glasses`:
    config, tensors, shapes; a one-line :class:`~sayno.checkpoint.CheckpointError` otherwise); for
    ``"training-free"`` its identity (kind, version, settings; the calibration is added at the end of the
    build)."""
    if path is None:
        return None
    if is_training_free(path):
        return training_free_identity()
    envelope = read_header(path)
    if envelope.format != GLASSES_FORMAT:
        raise SearchError(f"{path}: not a Glasses checkpoint (format {envelope.format!r})")
    envelope.check_backbone(backbone.fingerprint, backbone.spec, str(path))
    load_glasses(path, backbone)  # the whole checkpoint (config, tensors, shapes) loads, or one-line error now
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

    Returns ``(relative posix path, size, mtime_ns)`` rows and the files that could not even be stat'ed. (The
    build itself keeps them as arrays: :func:`scan_arrays`.)
    """
    scanned, bad = scan_arrays(folder)
    return scanned.rows(), bad


def scan_arrays(folder: str | os.PathLike) -> tuple[Scanned, list[BadRow]]:
    """:func:`scan_folder` as flat arrays (:class:`sayno.search.scan.Scanned`), never a Python object per
    file."""
    root = Path(folder)
    if not root.is_dir():
        raise SearchError(f"{root}: no such image folder")
    return scan_images(root)


class KnownContents:
    """The previous version's contents: a sha1 digest -> its first row, by binary search in the sorted digests
    (no dict of a million hex strings). ``digest in known``; :meth:`first_rows`."""

    def __init__(self, sha1: Sha1Column | None = None):
        keys = sha1.keys() if sha1 is not None else np.zeros(0, f"S{DIGEST}")
        self.order = np.argsort(keys, kind="stable")  # equal digests: the first row first
        self.sorted = keys[self.order]

    def first_rows(self, digests: np.ndarray) -> np.ndarray:
        """(M, 20) uint8 digests -> (M,) int64 first row with that content, -1 where unknown."""
        keys = np.ascontiguousarray(digests, np.uint8).reshape(-1, DIGEST).view(f"S{DIGEST}").reshape(-1)
        if not len(self.sorted):
            return np.full(len(keys), -1, np.int64)
        at = np.minimum(np.searchsorted(self.sorted, keys), len(self.sorted) - 1)
        return np.where(self.sorted[at] == keys, self.order[at], -1).astype(np.int64)

    def __contains__(self, digest: bytes) -> bool:
        return bool(self.first_rows(np.frombuffer(digest, np.uint8))[0] >= 0)


# ------------------------------------------------------------------------------------------ decoding
class _ReadDecode(torch.utils.data.Dataset):
    """Job k (scanned row ``jobs[k]`` of ``paths`` under ``root``) -> (k, sha1 digest | None, pixels | None,
    reason | None). One read per file; contents in ``known`` are not decoded (their vector is reused). Never
    raises on a bad file."""

    def __init__(self, root: str, paths: PathColumn, jobs: np.ndarray, preprocess: Callable,
                 known: KnownContents):
        self.root, self.paths, self.jobs, self.preprocess, self.known = root, paths, jobs, preprocess, known

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int):
        path = os.path.join(self.root, self.paths[int(self.jobs[k])])
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            return k, None, None, f"cannot read file ({e.strerror or type(e).__name__})"
        sha = hashlib.sha1(data).digest()
        if sha in self.known:
            return k, sha, None, None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                rgb = to_rgb(im)
            return k, sha, self.preprocess(rgb), None
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, EOFError, ...
            msg = " ".join(str(e).split())[:120]
            return k, sha, None, f"cannot decode image ({type(e).__name__}: {msg})"


def _as_list(batch: list) -> list:
    return batch


def _progress(enabled: bool) -> Progress | contextlib.nullcontext:
    if not enabled:
        return contextlib.nullcontext()
    return progress_bar()  # readable in logs too (sayno.cliutil.LogProgress)


NEW, REUSED, BAD = 1, 2, 3  # what became of a job (_Part.state)


@dataclass
class _Part:
    """One process's work, as arrays over its jobs (scanned rows ``job``, in order): ``sha1`` (M, 20) digests,
    ``state`` NEW (its vector is the next one in the process's spool), REUSED (a known content) or BAD (then
    ``bad`` holds (job, reason))."""

    job: np.ndarray
    sha1: np.ndarray
    state: np.ndarray
    bad: list[tuple[int, str]] = field(default_factory=list)


def _encode_jobs(backbone, root: Path, paths: PathColumn, jobs: np.ndarray, known: KnownContents,
                 cfg: IndexConfig, progress: bool, vectors: VectorSpool) -> _Part:
    """Read, decode and encode ``jobs`` (scanned rows, in order); new vectors go to ``vectors`` (a spool on
    disk), in job order."""
    jobs = np.asarray(jobs, np.int64)
    part = _Part(jobs, np.zeros((len(jobs), DIGEST), np.uint8), np.zeros(len(jobs), np.int8))
    data = _ReadDecode(str(root), paths, jobs, backbone.preprocess, known)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         collate_fn=_as_list, shuffle=False)
    with _progress(progress and len(jobs) > cfg.batch_size) as bar:
        task = bar.add_task("encoding images", total=len(jobs)) if bar is not None else None
        for batch in loader:
            good = []
            for k, sha, px, reason in batch:
                if sha is not None:
                    part.sha1[k] = np.frombuffer(sha, np.uint8)
                if reason is not None:
                    part.state[k] = BAD
                    part.bad.append((int(jobs[k]), reason))
                elif px is None:
                    part.state[k] = REUSED
                else:
                    part.state[k] = NEW
                    good.append(px)
            if good:
                with torch.no_grad():
                    block = backbone.encode_image(torch.stack(good)).float().cpu().numpy()
                try:
                    vectors.extend(block)
                except OSError as e:  # a full disk while encoding: one line, as the write stage says it
                    raise SearchError(f"{vectors.path.parent}: cannot write the index ({e.strerror or e}); "
                                      "nothing changed, the live version is as it was") from e
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


def _save_part(path: Path, part: _Part) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, job=part.job, sha1=part.sha1, state=part.state, bad=np.asarray(json.dumps(part.bad)))


def _load_part(path: Path) -> _Part:
    with NPY_HEADERS, np.load(path, allow_pickle=False) as z:
        return _Part(z["job"], z["sha1"], z["state"], [tuple(b) for b in json.loads(str(z["bad"]))])


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


def _build_file(name: str) -> bool:
    """A build's own lock or spool file (another build may be writing it right now): not an "other file"."""
    return name == ".lock" or name.startswith(INCOMING_PREFIX)


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
    if out.is_dir() and not looks_like_index and any(not _build_file(p.name) for p in out.iterdir()):
        raise SearchError(f"{out}: a folder with other files that is not a sayno index; give a new or empty "
                          "folder as --out (or --force to keep the index beside them)")


def _build(folder: Path, out: Path, cfg: IndexConfig, backbone, progress: bool) -> BuildReport:
    t0 = time.perf_counter()
    rank, world, own_group = _dist_info(cfg.device)
    scanned, bad = scan_arrays(folder)
    if not len(scanned) and not bad:
        kinds = ", ".join(sorted(ext[1:] for ext in IMAGE_EXTENSIONS))
        raise SearchError(f"{folder}: no images ({kinds}) in this folder or below it")
    with _rank0_lock(out, rank, world):
        if backbone is None:
            backbone = load(cfg.model, device=_rank_device(cfg.device, world), precision=cfg.precision)
        glasses = glasses_identity(resolve_glasses(cfg.glasses, cfg.model), backbone)
        old = _previous(out, folder, backbone.fingerprint, glasses, cfg.rebuild)
        plan = _plan(scanned, old)
        known = KnownContents(old.files.sha1 if old is not None else None)
        report = BuildReport(out, "", folder, 0, 0, 0, 0, bad, 0.0, world)
        dim = int(backbone.embed_dim)
        if rank == 0:
            remove_leftovers(out)  # files of interrupted builds (rank 0 holds the writer lock)
        with _shared_parts(out, rank, world) as parts_dir:
            # new vectors are spooled to disk as they are encoded (sayno.search.shards), one file per process
            spool = VectorSpool(incoming_path(out, ".spool") if parts_dir is None else parts_dir / f"rank-{rank}.f32",
                                dim)
            try:
                part = _encode_jobs(backbone, folder, scanned.paths, plan.todo[rank::world], known, cfg,
                                    progress and rank == 0, spool)
                if world == 1:
                    report = _merge(out, folder, scanned, plan, old, known, [(part, spool.reader())], bad,
                                    backbone, glasses, cfg, world)
                else:
                    spool.close(remove=False)  # rank 0 reads it; the parts folder goes when the build ends
                    _save_part(parts_dir / f"rank-{rank}.npz", part)
                    _barrier(world)
                    if rank == 0:
                        parts = [_load_part(parts_dir / f"rank-{r}.npz") for r in range(world)]
                        spools = [NpyRows(parts_dir / f"rank-{r}.f32", raw=(int((p.state == NEW).sum()), dim))
                                  for r, p in enumerate(parts)]
                        report = _merge(out, folder, scanned, plan, old, known, list(zip(parts, spools)), bad,
                                        backbone, glasses, cfg, world)
            finally:
                spool.close(remove=parts_dir is None)
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
def _shared_parts(out: Path, rank: int, world: int) -> Iterator[Path | None]:
    """``INDEX/.parts-<run>/`` (one name for all ranks), removed by rank 0 when the block ends; None for one
    process."""
    if world <= 1:
        yield None
        return
    run = _broadcast(uuid.uuid4().hex[:12], world)
    parts_dir = out / f".parts-{run}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield parts_dir
    finally:
        if rank == 0:
            shutil.rmtree(parts_dir, ignore_errors=True)


@dataclass
class _Plan:
    """Per scanned row: ``same_path`` the old row with the same path (-1: none) and ``keep`` whether its stat
    is unchanged (its old vector and sha1 are kept without reading it); ``todo`` the rows to read."""

    same_path: np.ndarray
    keep: np.ndarray

    @property
    def todo(self) -> np.ndarray:
        return np.flatnonzero(~self.keep)


def _plan(scanned: Scanned, old: IndexData | None) -> _Plan:
    """What to do with each scanned row (arrays; paths are matched by hash, never a dict of paths)."""
    n = len(scanned)
    if old is None:
        return _Plan(np.full(n, -1, np.int64), np.zeros(n, bool))
    same = match_paths(scanned.paths, old.files.path)
    has = np.flatnonzero(same >= 0)
    keep = np.zeros(n, bool)
    j = same[has]
    keep[has] = (old.files.size[j] == scanned.size[has]) & (old.files.mtime_ns[j] == scanned.mtime_ns[has])
    return _Plan(same, keep)


def match_paths(paths: PathColumn, old: PathColumn) -> np.ndarray:
    """(N,) int64: for each of ``paths``, the row of ``old`` with the same path, -1 where none."""
    old_hash = old.hashes()
    order = np.argsort(old_hash, kind="stable")
    sorted_hash = old_hash[order]
    new_hash = paths.hashes()
    lo, hi = np.searchsorted(sorted_hash, new_hash, "left"), np.searchsorted(sorted_hash, new_hash, "right")
    out = np.full(len(paths), -1, np.int64)
    for i in np.flatnonzero(hi > lo).tolist():
        raw = paths.raw(i)
        for j in order[lo[i]:hi[i]].tolist():
            if old.raw(j) == raw:
                out[i] = j
                break
    return out


def _previous(out: Path, folder: Path, fingerprint: str, glasses: dict | None, rebuild: bool
              ) -> IndexData | None:
    """The live version of ``out`` to update (None: start over), after checking it fits."""
    if rebuild or not (out / POINTER).exists():
        return None
    old = read_index(out, coarse=None)  # a damaged index is a SearchError that says to rebuild; IVF cells only
    check_compatible(old, fingerprint, glasses, str(out))
    if old.root != folder:
        raise IndexMismatch(f"{out} indexes {old.root}, not {folder}: use another --out, or --rebuild")
    return old


def _merge(out: Path, folder: Path, scanned: Scanned, plan: _Plan, old: IndexData | None, known: KnownContents,
           parts: list[tuple[_Part, NpyRows]], bad: list[BadRow], backbone, glasses: dict | None, cfg: IndexConfig,
           world: int) -> BuildReport:
    """Rank 0: put kept, reused and new vectors in path order and write one new version. ``parts``: each
    process's work and its spooled new vectors."""
    dim = int(backbone.embed_dim)
    n = len(scanned)
    one_pass = len(parts) == 1 and len(parts[0][0].job) == n  # one process read every row, in order
    sha = parts[0][0].sha1 if one_pass else np.zeros((n, DIGEST), np.uint8)  # a fresh build: no copy
    source = np.full(n, -1, np.int64)  # old row to copy from
    new_ids = np.full(n, -1, np.int64)  # row of the concatenated spools
    kept = np.flatnonzero(plan.keep)
    source[kept] = plan.same_path[kept]
    if len(kept):
        sha[kept] = old.files.sha1.raw[source[kept]]
    offset = 0
    for part, _ in parts:
        sha[part.job] = part.sha1
        reused = part.state == REUSED
        source[part.job[reused]] = known.first_rows(part.sha1[reused])
        fresh = part.job[part.state == NEW]
        new_ids[fresh] = offset + np.arange(len(fresh))
        offset += len(fresh)
        bad.extend(BadRow(os.path.join(folder, scanned.paths[job]), None, reason) for job, reason in part.bad)
    ok = (source >= 0) | (new_ids >= 0)
    if not ok.any():
        raise SearchError(f"{folder}: none of its {n} image files could be read ({bad[0] if bad else ''})")
    keep_rows = np.flatnonzero(ok)
    encoded = int((new_ids[keep_rows] >= 0).sum())
    # streamed to a file in path order, a chunk at a time; write_version moves it into the version
    spools = parts[0][1] if len(parts) == 1 else ConcatRows([rows for _, rows in parts])
    feats = merge_to_file(incoming_path(out), keep_rows, source, _old_rows(old), spools, dim, new_ids=new_ids)
    del new_ids
    every = len(keep_rows) == n
    table = (FileTable(scanned.paths, scanned.size, scanned.mtime_ns, Sha1Column(sha)) if every else
             FileTable(scanned.paths.take(keep_rows), scanned.size[keep_rows], scanned.mtime_ns[keep_rows],
                       Sha1Column(sha[keep_rows])))
    del sha
    removed = 0
    if old is not None:
        still = np.zeros(len(old), bool)
        same = plan.same_path[keep_rows]
        still[same[same >= 0]] = True
        removed = int(len(old) - still.sum())
    with NPY_HEADERS:
        indexed = np.load(feats, mmap_mode="r")
    if is_training_free(glasses):  # calibrated on the indexed vectors, stored with the index
        glasses = TrainingFreeGlasses.from_backbone(backbone, reference_images=indexed).identity()
    match = match_section(glasses, backbone, indexed, cfg.vocabulary,  # "nothing here matches" (match.py)
                          previous=None if old is None else old.envelope.sections)
    envelope = Envelope(
        FORMAT, FORMAT_VERSION, backbone.fingerprint, backbone.spec, asdict(cfg),
        {"embed_dim": dim, "logit_scale": float(backbone.logit_scale), "glasses": glasses, "root": str(folder),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
         "build": {"encoded": encoded, "reused": int(len(keep_rows) - encoded), "removed": removed,
                   "processes": world},
         "bad": [{"path": b.file, "reason": b.reason} for b in bad], "match": match})
    writers = None
    try:  # the caller holds the writer lock
        writers = _IndexWriters(out, cfg, old, source[keep_rows], table)
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
    cells when they fit) and, for the milvus backend, the rows a version adds sent before it goes live and the
    rows it dropped deleted after (:class:`sayno.search.milvus.MilvusSync`; the first build uploads them all)."""

    def __init__(self, out: Path, cfg: IndexConfig, old: IndexData | None, source: np.ndarray, table: FileTable):
        self.out, self.cfg, self.old, self.source, self.table = out, cfg, old, source, table
        self.kind, self.notes = "", []
        self.store = MilvusStore(cfg.uri) if cfg.backend == "milvus" else None
        self.milvus = None
        if self.store is not None:
            previous = None if old is None else (backend_section(old), content_keys(old.files.sha1.raw))
            self.milvus = MilvusSync(self.store, out, previous)

    def coarse(self, vectors: np.ndarray) -> tuple[object, dict]:
        old = self.old
        index, info, reason = build_coarse(
            vectors, self.cfg.index, previous=old.coarse if old is not None else None,
            previous_info=index_info(old) if old is not None else None,
            previous_version=old.version if old is not None else "", source=self.source, stream_flat=True)
        self.kind = info["kind"]
        self.notes.append(reason)
        return index, {"index": info}

    def publish(self, version: str, vectors: np.ndarray) -> dict:
        if self.milvus is None:
            return {"backend": {"kind": "faiss"}}
        section = self.milvus.publish(version, vectors, content_keys(self.table.sha1.raw))
        self.notes.extend(self.milvus.notes)
        return {"backend": section}

    def drop_stale(self) -> None:
        """Milvus, once the version is live: delete the rows it dropped, then this index's collections that no
        version on disk names (best effort)."""
        if self.milvus is not None:
            keep = set()
            for v in set(recorded_versions(self.out)) | {current_version(self.out)}:
                with contextlib.suppress(SearchError, OSError, AttributeError):
                    keep.add((read_envelope(self.out / v / "meta.json").sections.get("backend") or {}
                              ).get("collection"))
            self.milvus.finish(keep - {None})

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
