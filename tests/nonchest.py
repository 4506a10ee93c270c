"""The non-chest reference set (:mod:`model.nonchest`), as the tests name it."""

from model.nonchest import (
    PYDICOM_DATA_FILES,
    PYDICOM_FILES,
    SKIMAGE_FILES,
    nonchest_images,
    to_uint8,
)

__all__ = [
    "PYDICOM_DATA_FILES",
    "PYDICOM_FILES",
    "SKIMAGE_FILES",
    "nonchest_images",
    "to_uint8",
]
