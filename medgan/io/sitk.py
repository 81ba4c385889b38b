"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK.

ITK keeps geometry in LPS; `medgan.io.geometry` converts it to medgan's RAS affine. ITK
arrays come out `(k, j, i)`, so they are transposed to `(i, j, k)`; vector pixels become
channels.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from medgan.errors import InputError, OutputError, describe
from medgan.io.atomic import atomic_file
from medgan.io.geometry import affine_from_sitk, sitk_geometry_from_affine
from medgan.io.image import affine_of, array_of, make_image

__all__ = ["read_sitk", "write_sitk"]


def read_sitk(path: str | os.PathLike, format_name: str):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError("no such file" if not os.path.exists(path) else "not a file", path=path)
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as err:
        raise InputError(f"not a readable {format_name.upper()} file ({_itk_reason(err)})", path=path) from None
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise InputError(f"unsupported {dim}-D image", path=path)
    array = sitk.GetArrayFromImage(img)  # (k, j, i[, c])
    channels = np.moveaxis(array, -1, 0) if img.GetNumberOfComponentsPerPixel() > 1 else array[np.newaxis]
    channels = np.ascontiguousarray(np.moveaxis(channels, range(1, dim + 1), range(dim, 0, -1)))
    affine = affine_from_sitk(img.GetDirection(), img.GetSpacing(), img.GetOrigin())
    meta = {
        "format": format_name,
        "filename_or_obj": path,
        "files": [path],
        "modality": str(img.GetMetaData("Modality")) if img.HasMetaDataKey("Modality") else "",
    }
    return make_image(channels, affine, meta)


def write_sitk(image, path: str | os.PathLike, overwrite: bool = False) -> str:
    path = os.fspath(path)
    array = array_of(image)
    dim = array.ndim - 1
    if dim not in (2, 3):
        raise OutputError(f"cannot write an image of shape {tuple(array.shape)}", path=path)
    try:
        direction, spacing, origin = sitk_geometry_from_affine(affine_of(image), dim=3)
    except ValueError as err:
        raise OutputError(f"{err}; write NIfTI or a DICOM series instead", path=path) from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    reversed_axes = np.moveaxis(array, range(1, dim + 1), range(dim, 0, -1))  # (C, k, j, i)
    vector = array.shape[0] > 1
    img = sitk.GetImageFromArray(np.moveaxis(reversed_axes, 0, -1) if vector else reversed_axes[0], isVector=vector)
    if dim == 3:
        img.SetDirection(direction)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
    else:
        d3 = np.asarray(direction).reshape(3, 3)
        img.SetDirection(tuple(d3[:2, :2].ravel()))
        img.SetSpacing(spacing[:2])
        img.SetOrigin(origin[:2])
    suffix = os.path.splitext(path)[1]
    with atomic_file(path, overwrite, suffix=suffix) as temp:
        try:
            sitk.WriteImage(img, temp, useCompression=True)
        except RuntimeError as err:
            raise OutputError(f"SimpleITK could not write it ({_itk_reason(err)})", path=path) from None
    return path


def _itk_reason(err: RuntimeError) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Description:" in line:
            return describe(line.split("Description:", 1)[1])
    return describe(lines[-1] if lines else err)
