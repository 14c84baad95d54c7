"""Negation-aware image search: index a folder, ask "a beach with no people", get the right images.

    >>> from sayno.search import IndexConfig, build_index, Searcher          # doctest: +SKIP
    >>> build_index("photos/", "photos.index", IndexConfig(model="embedded"))
    >>> Searcher("photos.index").search("a beach with no people", k=20)

``build`` (scan, incremental encode, many processes under torchrun), ``store`` (versioned on-disk index with
atomic switches), ``query`` (routing between plain CLIP and CLIPGlasses), ``terms`` (rclip-style query terms: ``"a beach" - people
+ 2:sunset``), ``match`` (the label-free "does this image match" test), ``cli`` (``sayno index build``,
``sayno search``). docs/SEARCH.md has the design.
"""

from sayno.search.build import BuildReport, IndexConfig, build_index, scan_folder
from sayno.search.query import MAX_K, MAX_QUERY_CHARS, Hit, Searcher, SearchResult, validate_query
from sayno.search.store import (
    IndexBackboneMismatch,
    IndexData,
    IndexFileError,
    IndexMismatch,
    SearchError,
    read_index,
)
from sayno.search.terms import Term, Terms, parse_terms

__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "BuildReport",
    "Hit",
    "IndexBackboneMismatch",
    "IndexConfig",
    "IndexData",
    "IndexFileError",
    "IndexMismatch",
    "SearchError",
    "SearchResult",
    "Searcher",
    "Term",
    "Terms",
    "build_index",
    "parse_terms",
    "read_index",
    "scan_folder",
    "validate_query",
]
