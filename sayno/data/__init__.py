"""Readers for the public benchmark formats (NegBench MCQ and retrieval, CC-Neg, ImageFolder).

Every reader returns a dataset of parallel lists plus ``bad_rows``: rows it had to drop, never silently.
Whole-file problems raise :class:`DataError` (a ``ValueError``) with a one-line message naming the file.
"""

from sayno.data.ccneg import CcNegDataset, read_ccneg
from sayno.data.errors import BadRow, DataError, report_bad_rows
from sayno.data.images import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    is_image_file,
    walk_images,
    load_image,
    read_class_names,
    read_image_folder,
)
from sayno.data.negbench import McqDataset, RetrievalDataset, read_mcq_csv, read_retrieval_csv

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadRow",
    "CcNegDataset",
    "DataError",
    "ImageFolderDataset",
    "McqDataset",
    "RetrievalDataset",
    "is_image_file",
    "walk_images",
    "load_image",
    "read_ccneg",
    "read_class_names",
    "read_image_folder",
    "read_mcq_csv",
    "read_retrieval_csv",
    "report_bad_rows",
]
