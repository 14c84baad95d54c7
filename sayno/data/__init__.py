"""Readers for the public benchmark formats (NegBench MCQ and retrieval, CC-Neg, ImageFolder).

Every reader returns a dataset of parallel lists plus ``bad_rows``: rows it had to drop, never silently.
Whole-file problems raise :class:`DataError` (a ``SaynoError`` and ``ValueError``) with a one-line message naming
the file. :func:`read_csv_rows` is the CSV walker under every reader (header check, line numbers, records with the
wrong field count as reasons): a sayno-specific CSV (the world's ``negation_<split>.csv``) is read through it too.
"""

from sayno.data._io import read_csv as read_csv_rows
from sayno.data.captions import CaptionDataset, read_captions_csv
from sayno.data.ccneg import CcNegDataset, read_ccneg
from sayno.data.errors import BadRow, DataError, report_bad_rows
from sayno.data.images import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    is_image_file,
    load_image,
    read_class_names,
    read_image_folder,
    walk_images,
)
from sayno.data.negbench import McqDataset, RetrievalDataset, read_mcq_csv, read_retrieval_csv

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadRow",
    "CaptionDataset",
    "CcNegDataset",
    "DataError",
    "ImageFolderDataset",
    "McqDataset",
    "RetrievalDataset",
    "is_image_file",
    "load_image",
    "read_captions_csv",
    "read_ccneg",
    "read_class_names",
    "read_csv_rows",
    "read_image_folder",
    "read_mcq_csv",
    "read_retrieval_csv",
    "report_bad_rows",
    "walk_images",
]
