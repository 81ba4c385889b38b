"""External data and tools for the reader tests, shared through `tests/conftest.py`.

* a cache folder (`.cache/medgan-tests/` in the repository, or `$MEDGAN_TEST_CACHE`);
* Debian packages fetched without root (`apt-get download` + `dpkg-deb -x`) and Debian tools on PATH;
* pydicom's test files, found offline;
* real multi-slice DICOM series built at test time from real volumes (the InVesalius head CT and
  the Colin27 T1), one file per slice, with the ground truth kept beside them;
* the peers, read independently of medgan's own geometry code: SimpleITK and dcm2niix.

What is unavailable skips the test, unless `MEDGAN_REQUIRE_EXTERNAL=1` (set in CI): then it fails.
"""

from __future__ import annotations

import glob
import gzip
import os
import plistlib
import random
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pydicom.valuerep import DSfloat

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "MEDGAN_TEST_CACHE"
REQUIRE_ENV = "MEDGAN_REQUIRE_EXTERNAL"
AFFINE_TOLERANCE_MM = 1e-3
# Bump when the series builder changes, so stale cached series are never used.
SERIES_VERSION = "v1"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # restated here on purpose: the tests do not trust medgan's


def cache_dir() -> Path:
    """Where fetched packages and built series live between runs."""
    folder = Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "medgan-tests")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when the environment promises every external resource."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def external_tool(name: str, package: str | None = None) -> str:
    """Path of a command-line tool such as dcm2niix or dciodvfy."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install {package or name})")
    return path


def debian_package(package: str) -> Path:
    """The files of a Debian package, unpacked under the cache (no root needed); cached for good."""
    root = cache_dir() / "debian" / package
    if root.is_dir():
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            unavailable(f"cannot fetch the Debian package {package}: {tool} is not available")
    work = root.parent / f".{package}.{uuid.uuid4().hex[:8]}.partial"
    work.mkdir(parents=True)
    try:
        result = subprocess.run(
            ["apt-get", "download", package], cwd=work, capture_output=True, text=True, timeout=600, check=False
        )
        debs = sorted(work.glob("*.deb"))
        if result.returncode != 0 or not debs:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no .deb file"]
            unavailable(f"apt-get download {package} failed: {lines[-1]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], check=True, timeout=600)
        try:
            os.replace(work / "root", root)
        except OSError:  # another session unpacked it first
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def pydicom_file(name: str) -> str:
    """A file from pydicom's test data (or pydicom-data), never downloaded."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        unavailable(f"pydicom test file {name} is not installed (pip install pydicom-data)")
    return os.fspath(path)


# ----------------------------------------------------------------------------------- real volumes


def invesalius_head_ct() -> tuple[np.ndarray, tuple[float, float, float]]:
    """The InVesalius 'Cranium' head CT: int16 HU shaped (slices, rows, columns), and its spacing in mm
    as (between slices, between rows, between columns), from the project's main.plist."""
    project = debian_package("invesalius-examples") / "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
    if not project.is_file():
        unavailable(f"{project} is missing from invesalius-examples")
    with tarfile.open(project, "r:gz") as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        plist = plistlib.load(tar.extractfile(members["main.plist"]))
        matrix = plist["matrix"]
        raw = tar.extractfile(members[matrix["filename"]]).read()
    volume = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<")).reshape(matrix["shape"])
    spacing_xyz = [float(v) for v in plist["spacing"]]  # InVesalius: (column, row, slice) spacing
    return volume.astype(np.int16), (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])


def colin27_t1() -> tuple[np.ndarray, np.ndarray]:
    """The Colin27 single-subject T1 (mricron's ch2.nii.gz): uint8 array indexed (x, y, z), RAS affine."""
    path = debian_package("mricron-data") / "usr/share/mricron/templates/ch2.nii.gz"
    if not path.is_file():
        unavailable(f"{path} is missing from mricron-data")
    with gzip.open(path, "rb") as fh:
        image = nib.Nifti1Image.from_bytes(fh.read())
    return np.asanyarray(image.dataobj), image.affine


# ------------------------------------------------------------------------------ series built here


@dataclass
class RealSeries:
    """A DICOM series written from a real volume, and what a correct reader must return for it."""

    name: str
    folder: Path  # the DICOM files, nothing else
    voxels: np.ndarray  # expected values (HU for CT) in medgan's order [i = column, j = row, k = slice]
    affine: np.ndarray  # expected RAS affine, from the header strings as written
    positions_lps: np.ndarray  # ImagePositionPatient of slice k, in k order (as written)
    modality: str

    @property
    def files(self) -> list[str]:
        return sorted(os.path.join(self.folder, n) for n in os.listdir(self.folder))


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about world axis 0, 1 or 2."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _ds(values) -> list[DSfloat]:
    """Decimal strings as a scanner would print them (at most 16 characters)."""
    return [DSfloat(float(v), auto_format=True) for v in np.atleast_1d(values)]


def _parsed(strings: list[DSfloat]) -> np.ndarray:
    return np.array([float(str(v)) for v in strings])


def _template(name: str) -> Dataset:
    """A real header (pydicom's CT_small or MR_small, fictional patients) without its pixel data."""
    ds = pydicom.dcmread(pydicom_file(name), stop_before_pixels=True)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "SpacingBetweenSlices"):
        if keyword in ds:
            del ds[keyword]
    return ds


def _write_series(
    folder: Path,
    template: str,
    planes: np.ndarray,  # stored values, (slices, rows, columns), in position order
    row_cosine: np.ndarray,  # LPS
    col_cosine: np.ndarray,  # LPS
    pixel_spacing: tuple[float, float],  # (between rows, between columns)
    positions: np.ndarray,  # LPS, (slices, 3)
    header: dict,
    compress: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One file per slice, shuffled names, InstanceNumber out of position order.
    Returns (orientation, spacing, positions) parsed back from the strings written."""
    rng = random.Random(seed)
    n = len(planes)
    instance_numbers = list(range(1, n + 1))
    while instance_numbers == sorted(instance_numbers) or instance_numbers == sorted(instance_numbers, reverse=True):
        rng.shuffle(instance_numbers)
    names = [f"IM{uuid.UUID(int=rng.getrandbits(128)).hex[:12].upper()}" for _ in range(n)]
    assert names != sorted(names) and len(set(names)) == n
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    iop = _ds(np.r_[row_cosine, col_cosine])
    spacing = _ds(pixel_spacing)
    written = []
    for k in range(n):
        ds = _template(template)
        ds.update(header)
        ipp = _ds(positions[k])
        written.append(_parsed(ipp))
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID = (
            study,
            series,
            frame_of_reference,
            sop,
        )
        ds.SeriesNumber = 7
        ds.InstanceNumber = instance_numbers[k]
        ds.ImagePositionPatient = ipp
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = spacing
        ds.SliceLocation = _ds(float(positions[k] @ np.cross(row_cosine, col_cosine)))[0]
        ds.Rows, ds.Columns = planes.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.ascontiguousarray(planes[k]).astype(planes.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if compress == "jpeg2000":
            ds.compress(JPEG2000Lossless, planes[k])
        ds.save_as(folder / names[k], enforce_file_format=True)
    return _parsed(iop), _parsed(spacing), np.array(written)


def _lps_affine(orientation: np.ndarray, spacing: np.ndarray, origin: np.ndarray, step: np.ndarray) -> np.ndarray:
    """RAS affine of a stack: column i along the rows, j down the columns, k the measured slice step."""
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * spacing[1]
    lps[:3, 1] = orientation[3:] * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


CT_SLICES = slice(22, 86)  # 64 of the 108 slices, through the skull and brain
CT_VARIANTS = ("axial", "oblique", "tilted")
MR_VARIANTS = ("mr_sagittal",)
VARIANTS = CT_VARIANTS + MR_VARIANTS
BENCH_VARIANTS = ("axial_full",)  # all 108 slices: the series of benchmarks/io_bench.py
GANTRY_TILT_DEG = 15.0


def _build_ct(variant: str, folder: Path) -> dict:
    hu, (slice_mm, row_mm, col_mm) = invesalius_head_ct()
    hu = hu if variant == "axial_full" else hu[CT_SLICES]
    intercept = -1024
    stored = (hu.astype(np.int32) - intercept).astype(np.uint16)  # CT as most scanners store it: unsigned
    assert stored.max() < 4096
    n, rows, cols = hu.shape
    header = {
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SliceThickness": DSfloat(slice_mm, auto_format=True),
        "RescaleIntercept": DSfloat(intercept),
        "RescaleSlope": DSfloat(1),
        "RescaleType": "HU",
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": DSfloat(40),
        "WindowWidth": DSfloat(400),
        "GantryDetectorTilt": DSfloat(0),
        "ReconstructionDiameter": DSfloat(round(cols * col_mm, 3), auto_format=True),
        "SeriesDescription": f"InVesalius head CT, {variant}",
    }
    if variant in ("axial", "axial_full"):
        turn = np.eye(3)
        step = np.array([0.0, 0.0, slice_mm])
    elif variant == "oblique":
        turn = rotation(0, 15.0) @ rotation(1, 10.0)
        step = turn[:, 2] * slice_mm  # slices stacked along their normal
    elif variant == "tilted":
        # The gantry leans about the patient's left-right axis; the table still moves along z, so
        # consecutive planes are offset within the plane by slice_mm * sin(tilt).
        turn = rotation(0, -GANTRY_TILT_DEG)
        step = np.array([0.0, 0.0, slice_mm])
        header["GantryDetectorTilt"] = DSfloat(GANTRY_TILT_DEG)
    else:
        raise ValueError(variant)
    row_cosine, col_cosine = turn[:, 0], turn[:, 1]
    centre = np.array([(cols - 1) * col_mm, (rows - 1) * row_mm, 0.0]) / 2
    origin = np.array([3.25, 21.7, -48.0]) - turn @ centre
    positions = origin + np.outer(np.arange(n), step)
    orientation, spacing, written = _write_series(
        folder, "CT_small.dcm", stored, row_cosine, col_cosine, (row_mm, col_mm), positions, header
    )
    return {
        "voxels": hu.transpose(2, 1, 0),  # (slice, row, column) -> (i, j, k)
        "affine": _lps_affine(orientation, spacing, written[0], (written[-1] - written[0]) / (n - 1)),
        "positions_lps": written,
        "modality": "CT",
    }


def _build_mr_sagittal(folder: Path) -> dict:
    t1, t1_affine = colin27_t1()
    assert np.allclose(t1_affine[:3, :3], np.eye(3)), "ch2.nii.gz is expected on a 1 mm RAS grid"
    xs = np.arange(12, 170, 3)  # every third sagittal plane (3 mm apart), right to left of the head
    _, ny, nz = t1.shape
    # rows run head to foot (LPS +z reversed), columns front to back (LPS +y): a scanner's sagittal
    planes = np.stack([t1[x, ::-1, ::-1].T for x in xs]).astype(np.int16)  # (slices, rows = z, columns = y)
    row_cosine, col_cosine = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    corner_ras = t1_affine @ np.array([0, ny - 1, nz - 1, 1.0])  # most anterior, most superior voxel
    positions = np.array([[-(t1_affine[0, 3] + x), -corner_ras[1], corner_ras[2]] for x in xs])
    header = {
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "MRAcquisitionType": "2D",
        "SliceThickness": DSfloat(3),
        "SpacingBetweenSlices": DSfloat(3),
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "WindowCenter": DSfloat(100),
        "WindowWidth": DSfloat(200),
        "SeriesDescription": "Colin27 T1, sagittal, JPEG 2000 lossless",
        "ImageComments": "built from mricron-data ch2.nii.gz for medgan's tests",
    }
    orientation, spacing, written = _write_series(
        folder,
        "MR_small.dcm",
        planes,
        row_cosine,
        col_cosine,
        (1.0, 1.0),
        positions,
        header,
        compress="jpeg2000",
        seed=1,
    )
    n = len(xs)
    return {
        "voxels": planes.transpose(2, 1, 0),
        "affine": _lps_affine(orientation, spacing, written[0], (written[-1] - written[0]) / (n - 1)),
        "positions_lps": written,
        "modality": "MR",
    }


def real_series(variant: str) -> RealSeries:
    """Build (once, then from the cache) one of VARIANTS as a folder of DICOM files."""
    if variant not in VARIANTS + BENCH_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS + BENCH_VARIANTS}")
    home = cache_dir() / "series" / f"{variant}-{SERIES_VERSION}"
    if not (home / "truth.npz").is_file():
        work = home.parent / f".{home.name}.{uuid.uuid4().hex[:8]}.partial"
        (work / "dicom").mkdir(parents=True)
        try:
            dicom = work / "dicom"
            truth = _build_mr_sagittal(dicom) if variant == "mr_sagittal" else _build_ct(variant, dicom)
            np.savez(work / "truth.npz", **truth)
            if home.exists() and not (home / "truth.npz").is_file():  # left half-built by an interrupted run
                shutil.rmtree(home)
            try:
                os.replace(work, home)
            except OSError:  # another session finished first: keep its copy
                if not (home / "truth.npz").is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    with np.load(home / "truth.npz") as truth:
        return RealSeries(
            variant,
            home / "dicom",
            truth["voxels"],
            truth["affine"],
            truth["positions_lps"],
            str(truth["modality"]),
        )


# --------------------------------------------------------------------------------------- the peers


def sitk_series(folder: str | os.PathLike, orthogonal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's ImageSeriesReader (GDCM sorting): voxels as [i, j, k] and the RAS affine.

    orthogonal=False keeps ITK's measured slice direction (first-to-last position), so a
    gantry-tilted stack comes back with a sheared direction matrix instead of a squared one."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(os.fspath(folder))
    assert len(ids) == 1, f"SimpleITK sees {len(ids)} series in {folder}"
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(os.fspath(folder), ids[0]))
    reader.SetForceOrthogonalDirection(orthogonal)
    image = reader.Execute()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), sitk_affine(image)


def sitk_affine(image) -> np.ndarray:
    """RAS affine of an ITK image (ITK keeps LPS; direction is row-major)."""
    dim = image.GetDimension()
    lps = np.eye(4)
    lps[:dim, :dim] = np.reshape(image.GetDirection(), (dim, dim)) * np.asarray(image.GetSpacing())
    lps[:dim, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def dcm2niix(folder: str | os.PathLike, out: str | os.PathLike, name: str = "volume") -> dict[str, nib.Nifti1Image]:
    """Convert with dcm2niix; every NIfTI it wrote, by file name (e.g. 'volume', 'volume_Tilt_1')."""
    tool = external_tool("dcm2niix")
    os.makedirs(out, exist_ok=True)
    result = subprocess.run(
        [tool, "-z", "y", "-f", name, "-o", os.fspath(out), os.fspath(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    written = sorted(glob.glob(os.path.join(out, f"{name}*.nii.gz")))
    assert result.returncode == 0 and written, result.stdout + result.stderr
    images = {}
    for path in written:
        with open(path, "rb") as fh:  # read now: the caller's folder may go away
            images[os.path.basename(path)[: -len(".nii.gz")]] = nib.Nifti1Image.from_bytes(gzip.decompress(fh.read()))
    return images


def nifti_voxels(image: nib.Nifti1Image) -> np.ndarray:
    """Voxel values with the header's scl_slope/scl_inter applied (dcm2niix stores raw values)."""
    return np.asanyarray(image.dataobj)


def in_axes_of(voxels: np.ndarray, affine: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute a 3D array (and its affine) onto the axis order of `reference`'s affine,
    so that two readers that chose different storage orders can be compared voxel for voxel."""
    transform = ornt_transform(io_orientation(affine), io_orientation(reference))
    return apply_orientation(voxels, transform), affine @ inv_ornt_aff(transform, voxels.shape)


def world_mismatch_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance between where the two affines put the same voxel, over the grid's corners."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((affine_a @ corners - affine_b @ corners)[:3], axis=0).max())
