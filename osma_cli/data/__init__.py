"""Image data: decoding, the crop policy, file discovery, and crop loading for networks."""

from osma_cli.data.crops import (
    GRID,
    SMALL_POLICIES,
    CropTooSmall,
    check_crop_policy,
    crop_origins,
    extract_crops,
    random_crop,
)
from osma_cli.data.dataset import (
    CropBatch,
    ImageCropDataset,
    SkipReason,
    collate_crops,
    crop_loader,
    default_workers,
)
from osma_cli.data.decode import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_MODES,
    DecodedImage,
    decode_image,
    load_rgb,
    pixels_to_rgb,
)
from osma_cli.data.files import IMAGE_SUFFIXES, class_folders, iter_image_files

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "GRID",
    "IMAGE_SUFFIXES",
    "SMALL_POLICIES",
    "SUPPORTED_MODES",
    "CropBatch",
    "CropTooSmall",
    "DecodedImage",
    "ImageCropDataset",
    "check_crop_policy",
    "class_folders",
    "collate_crops",
    "crop_loader",
    "crop_origins",
    "decode_image",
    "default_workers",
    "extract_crops",
    "iter_image_files",
    "load_rgb",
    "pixels_to_rgb",
    "random_crop",
    "SkipReason",
]
