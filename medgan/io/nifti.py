"""NIfTI-1/2 (.nii, .nii.gz) through nibabel.

Reading follows the NIfTI-1 standard's three methods: the sform when sform_code > 0, else the
qform when qform_code > 0, else the pixdim diagonal (method 1). Which one was used is stored
in `meta["nifti_xform"]`. Writing sets both sform and qform (code 1, scanner anatomical) from
the affine; a sheared affine (gantry tilt) cannot be a qform, so its qform code is 0.
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np

from medgan.errors import InputError, OutputError, describe
from medgan.io.atomic import atomic_file
from medgan.io.geometry import is_sheared
from medgan.io.image import affine_of, array_of, make_image, meta_of

__all__ = ["read_nifti", "write_nifti"]

_XFORM_NAMES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "talairach", 4: "mni", 5: "template"}


def read_nifti(path: str | os.PathLike):
    path = os.fspath(path)
    try:
        img = nib.load(path)
        header = img.header
        sform_code = int(header["sform_code"])
        qform_code = int(header["qform_code"])
        if sform_code > 0:
            affine, xform = header.get_sform(), "sform"
        elif qform_code > 0:
            affine, xform = header.get_qform(), "qform"
        else:
            affine, xform = header.get_base_affine(), "pixdim"
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except PermissionError:
        raise InputError("permission denied", path=path) from None
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib and gzip errors
        raise InputError(f"not a readable NIfTI file ({describe(err)})", path=path) from None
    if data.ndim == 5 and data.shape[3] == 1:  # (i, j, k, 1, c): a vector image
        # (i, j, 1, 1, c) is how NIfTI stores a 2D vector (colour) image: read it back as 2D.
        channels = np.moveaxis(data[:, :, 0, 0] if data.shape[2] == 1 else data[:, :, :, 0], -1, 0)
    elif data.ndim == 4:
        channels = np.moveaxis(data, -1, 0)
    elif data.ndim in (2, 3):
        channels = data[np.newaxis]
    else:
        raise InputError(f"unsupported NIfTI shape {data.shape}", path=path)
    slope, inter = _scaling(img)
    if slope is not None:
        channels = _narrow_scaled(channels, img.get_data_dtype(), slope, inter)
    elif channels.dtype == np.float64 and _was_float32(img):
        channels = channels.astype(np.float32)
    meta = {
        "format": "nifti",
        "filename_or_obj": path,
        "files": [path],
        "modality": _sidecar_modality(path),
        "nifti_xform": xform,
        "nifti_codes": {"sform": _XFORM_NAMES.get(sform_code, str(sform_code)),
                        "qform": _XFORM_NAMES.get(qform_code, str(qform_code))},
        "description": _text(header.get("descrip")),
    }  # fmt: skip
    if slope is not None:
        meta.update(rescale_slope=slope, rescale_intercept=inter)
    zooms = header.get_zooms()
    if data.ndim == 4 and len(zooms) > 3:  # a time series: keep the time step for writing
        meta.update(nifti_time_step=float(zooms[3]), nifti_time_units=header.get_xyzt_units()[1])
    return make_image(channels, affine, meta)


def _scaling(img) -> tuple[float | None, float]:
    """scl_slope/scl_inter as applied by nibabel (None when there is no scaling)."""
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    if slope is None or not np.isfinite(slope) or (float(slope) == 1.0 and float(inter or 0.0) == 0.0):
        return None, 0.0
    return float(slope), float(inter or 0.0)


def _narrow_scaled(channels: np.ndarray, stored: np.dtype, slope: float, inter: float) -> np.ndarray:
    """Scaled integers (dcm2niix CT: int16 with scl_inter -1024) stay integers when the scaling keeps them
    whole, as DICOM does; anything else is float32."""
    if np.issubdtype(stored, np.integer) and float(slope).is_integer() and float(inter).is_integer():
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if channels.size == 0 or (info.min <= channels.min() and channels.max() <= info.max):
                return channels.astype(dtype)
    return channels.astype(np.float32)


def write_nifti(image, path: str | os.PathLike, overwrite: bool = False) -> str:
    """Write a `[C, *spatial]` image; C > 1 becomes the fourth dimension."""
    path = os.fspath(path)
    array = array_of(image)
    if array.ndim not in (3, 4):
        raise OutputError(f"cannot write an image of shape {tuple(array.shape)} as NIfTI", path=path)
    meta = meta_of(image)
    time_step = meta.get("nifti_time_step")
    if array.shape[0] == 1:
        data = array[0]
    elif array.ndim == 3:  # a 2D vector (colour) image: NIfTI's vector layout (i, j, 1, 1, c)
        data = np.moveaxis(array, 0, -1)[:, :, np.newaxis, np.newaxis, :]
    else:
        data = np.moveaxis(array, 0, -1)
    data = _nifti_dtype(data)
    affine = affine_of(image)
    img = nib.Nifti1Image(data, affine)
    if data.ndim == 5:
        img.header.set_intent("vector")
    if data.ndim == 4 and time_step:  # a time series read from NIfTI keeps its time step
        img.header.set_zooms((*img.header.get_zooms()[:3], float(time_step)))
        img.header.set_xyzt_units("mm", meta.get("nifti_time_units") or "sec")
    else:
        img.header.set_xyzt_units("mm", "sec")
    img.header.set_sform(affine, code=1)
    if is_sheared(affine):
        img.header.set_qform(None, code=0)
    else:
        img.header.set_qform(affine, code=1)
    description = str(meta.get("description") or "medgan")
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    suffix = ".nii.gz" if path.endswith(".gz") else ".nii"
    with atomic_file(path, overwrite, suffix=suffix) as temp:
        nib.save(img, temp)
    _write_sidecar(path, meta, overwrite)
    return path


def _write_sidecar(path: str, meta: dict, overwrite: bool) -> None:
    """NIfTI has no modality field: a BIDS-style JSON sidecar (as dcm2niix writes) keeps it, so that reading
    the file back (and `medgan evaluate`) knows CT in HU. An existing sidecar is replaced only with overwrite."""
    modality = str(meta.get("modality") or "")
    sidecar = _stem(path) + ".json"
    if not modality or (os.path.lexists(sidecar) and not overwrite):
        return
    record = {"Modality": modality}
    if meta.get("units"):
        record["Units"] = str(meta["units"])
    if meta.get("synthetic"):
        record["SyntheticData"] = True
    with atomic_file(sidecar, overwrite=True, suffix=".json") as temp, open(temp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")


def _stem(path: str) -> str:
    return path[: -len(".nii.gz")] if path.endswith(".nii.gz") else os.path.splitext(path)[0]


def _nifti_dtype(data: np.ndarray) -> np.ndarray:
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    if (
        data.dtype == np.int64
        and data.size
        and np.iinfo(np.int32).min <= data.min()
        and data.max() <= np.iinfo(np.int32).max
    ):
        return data.astype(np.int32)
    return data


def _was_float32(img) -> bool:
    return img.get_data_dtype() == np.float32 and img.header.get_slope_inter() == (None, None)


def _sidecar_modality(path: str) -> str:
    """BIDS sidecars name the modality; use it when present (never guess otherwise)."""
    try:
        with open(_stem(path) + ".json", encoding="utf-8") as fh:
            return str(json.load(fh).get("Modality", "") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _text(value) -> str:
    if value is None:
        return ""
    raw = value.tobytes() if hasattr(value, "tobytes") else bytes(value)
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
