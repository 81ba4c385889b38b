"""DICOM Segmentation (SEG) objects for label maps on a DICOM series medgan wrote, built with highdicom.

    from medgan.io.seg import write_seg
    write_dicom_series(image, "out/scan_lesions", modality="CT", synthetic=True)
    write_seg(labels, "out/scan_lesions", "out/scan_seg.dcm", segments={1: "simulated lesion 1"})

The SEG references the series' own SOP instances (its Referenced Series Sequence and each frame's
Derivation Image Sequence), shares its Frame of Reference and study, and holds one frame per
segment per slice that contains it (BINARY). The label map must lie on the series' grid: each
slice's position, orientation and pixel spacing are read back from the files and checked against the
label map's affine before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pydicom

import medgan
from medgan.errors import OutputError
from medgan.io.atomic import atomic_file
from medgan.io.geometry import LPS_TO_RAS
from medgan.io.image import affine_of, array_of

__all__ = ["write_seg"]

_POSITION_TOLERANCE_MM = 1e-3


def _series_files(folder: str) -> list[pydicom.Dataset]:
    """The series' datasets (headers only), in slice order k = 0, 1, ... as medgan wrote them."""
    datasets = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
    if not datasets:
        raise OutputError("no DICOM files to reference", path=folder)
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


def _check_grid(datasets: list[pydicom.Dataset], affine: np.ndarray, shape: tuple[int, ...], folder: str) -> None:
    """Each slice k of the series must sit where the label map's slice k does."""
    if len(datasets) != shape[2] or any((int(ds.Columns), int(ds.Rows)) != shape[:2] for ds in datasets):
        size = f"{len(datasets)} slices of {datasets[0].Columns}x{datasets[0].Rows}"
        raise OutputError(f"the label map ({'x'.join(map(str, shape))}) is not on this series' grid ({size})",
                          path=folder)  # fmt: skip
    for k, ds in enumerate(datasets):
        want = (LPS_TO_RAS @ affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        have = np.array([float(v) for v in ds.ImagePositionPatient])
        if np.abs(want - have).max() > _POSITION_TOLERANCE_MM * max(1.0, np.abs(have).max() / 1000):
            raise OutputError(f"slice {k + 1} of the series lies at {have.round(3).tolist()} (LPS mm), the label "
                              f"map's at {want.round(3).tolist()}: not the same grid", path=folder)  # fmt: skip


def write_seg(
    labels,  # MetaTensor [1, i, j, k] (or [i, j, k]) of label values, on the series' grid
    series_folder: str | os.PathLike,  # a DICOM series written by medgan.io.write_image(..., to="dicom")
    path: str | os.PathLike,  # the SEG file to write
    segments: Mapping[int, str] | None = None,  # label value -> segment label; default: every value present
    overwrite: bool = False,
    series_description: str = "SIMULATED LESIONS medgan",
    category: tuple[str, str, str] = ("49755003", "SCT", "Morphologically Abnormal Structure"),
    kind: tuple[str, str, str] = ("52988006", "SCT", "Lesion"),
) -> str:
    """Write the label map as a DICOM SEG referencing every instance of `series_folder`; returns `path`."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    folder, path = os.fspath(series_folder), os.fspath(path)
    array = array_of(labels)
    array = array[0] if array.ndim == 4 else array
    values = sorted(int(v) for v in np.unique(array) if v != 0)
    segments = dict(segments) if segments is not None else {v: f"label {v}" for v in values}
    if not segments:
        raise OutputError("the label map holds no labels: nothing to segment", path=path)
    datasets = _series_files(folder)
    _check_grid(datasets, affine_of(labels), tuple(array.shape), folder)
    frames = np.stack([array[:, :, k].T for k in range(array.shape[2])])  # (slice, rows = j, columns = i)
    masks = np.stack([frames == value for value in segments], axis=-1).astype(np.uint8)
    # CID 7162 (Surface Processing Algorithm Families) has no concept for simulation; like the derived
    # series (medgan.io.dicom_write), the general DCM concept for image processing.
    family = Code("110001", "DCM", "Image Processing")
    algorithm = hd.AlgorithmIdentificationSequence(name="medgan", version=medgan.__version__, family=family)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(text)[:64],
            segmented_property_category=Code(*category),
            segmented_property_type=Code(*kind),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, text in enumerate(segments.values(), start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(datasets[0].SeriesNumber) + 1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medgan",
        manufacturer_model_name="medgan",
        software_versions=f"medgan {medgan.__version__}",
        device_serial_number="0",
        series_description=series_description,
    )
    with atomic_file(path, overwrite, suffix=".dcm") as temp:
        seg.save_as(temp, enforce_file_format=True)
    return path
