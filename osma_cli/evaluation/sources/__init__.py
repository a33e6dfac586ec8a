"""Where a benchmark's images come from: one typed description, one module per source.

Every source returns a ``BenchmarkSplit`` (``base``) and is registered by name:

- ``pose`` (``pose_layout``): the annotation files of the POSE benchmark, read as released;
  ``write_pose_annotations`` writes the same layout;
- ``manifest`` (``manifest``): a TOML or JSON file of folders, for a user's own benchmark;
- ``builtin`` (``builtin``): the zoo osma ships, built on first use, in the POSE layout.

``open_split("pose", root, "split1")`` reads a split by its source's name. A new source is one
module with a loader decorated ``@register_source("name")`` and its import below.
"""

from osma_cli.evaluation.sources import builtin, manifest, pose_layout  # noqa: F401  (imported to register)
from osma_cli.evaluation.sources.base import (
    PARTS,
    UNKNOWN_KINDS,
    BenchmarkSplit,
    LabeledImage,
    SourceLoader,
    get_source,
    list_sources,
    open_split,
    register_source,
)
from osma_cli.evaluation.sources.manifest import load_manifest
from osma_cli.evaluation.sources.pose_layout import (
    AnnotationLine,
    PoseAnnotations,
    load_pose_split,
    pose_annotation_files,
    pose_split_name,
    write_pose_annotations,
)

__all__ = [
    "PARTS",
    "UNKNOWN_KINDS",
    "AnnotationLine",
    "BenchmarkSplit",
    "LabeledImage",
    "PoseAnnotations",
    "SourceLoader",
    "get_source",
    "list_sources",
    "load_manifest",
    "load_pose_split",
    "open_split",
    "pose_annotation_files",
    "pose_split_name",
    "register_source",
    "write_pose_annotations",
]
