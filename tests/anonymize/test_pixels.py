"""Blanking pixel regions: the keyed SOP Instance UID survives, any byte order and bit depth works."""

from __future__ import annotations

import copy

import external
import numpy as np
import pydicom
import pytest
from _corpus import SECRET, read
from _corpus import policy as make_policy

from medgan.anonymize import worker
from medgan.anonymize.passes import Deidentifier
from medgan.anonymize.pixels import PixelError, blank_regions
from medgan.anonymize.result import Result
from medgan.anonymize.uids import UidMapper

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BOX = (1, 2, 6, 5)  # x0, y0, x1, y1


def _frames(ds) -> np.ndarray:
    arr = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[np.newaxis]


def _run(tmp_path, name: str) -> tuple[pydicom.Dataset, Result, pydicom.Dataset]:
    path = external.pydicom_file(name)
    original = read(path)
    region = {"modality": str(original.Modality), "boxes": [list(BOX)]}
    worker.init_worker(make_policy(pixel_regions=[region]))
    tmp_path.mkdir(exist_ok=True)
    result = worker.process_file(path, None, name, str(tmp_path))
    output = pydicom.dcmread(result.temp_paths[0]) if result.status == "ok" else None
    return original, result, output


@pytest.mark.parametrize("name", ["US1_J2KR.dcm", "CT_small.dcm"])
def test_blanking_keeps_the_keyed_sop_instance_uid_and_is_deterministic(tmp_path, name):
    original, result, output = _run(tmp_path / "a", name)
    assert result.status == "ok" and result.reason == "pixels blanked"
    keyed = UidMapper(SECRET)(original.SOPInstanceUID)
    assert output.SOPInstanceUID == keyed
    assert output.file_meta.MediaStorageSOPInstanceUID == keyed
    assert result.outputs[0].endswith(keyed + ".dcm")
    _, again, _ = _run(tmp_path / "b", name)
    with open(result.temp_paths[0], "rb") as a, open(again.temp_paths[0], "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize(
    "name",
    [
        "rtdose.dcm",  # 32 bits, implicit VR
        "SC_rgb_rle_32bit.dcm",  # 32 bits, RLE
        "MR_small_bigendian.dcm",  # 16 bits, big endian
        "SC_rgb_small_odd_big_endian.dcm",  # 8-bit RGB in big endian OW (swapped pairs)
        "ExplVR_BigEnd.dcm",  # big endian, planar configuration 1
        "SC_rgb_rle_16bit_2frame.dcm",  # two frames
    ],
)
def test_blanking_works_for_any_bit_depth_and_byte_order(tmp_path, name):
    original, result, output = _run(tmp_path, name)
    assert result.status == "ok", result.reason
    before, after = _frames(original), _frames(output)
    assert after.shape == before.shape and after.dtype.itemsize == before.dtype.itemsize
    x0, y0, x1, y1 = BOX
    assert (after[:, y0:y1, x0:x1] == 0).all()
    outside = np.ones(after.shape, bool)
    outside[:, y0:y1, x0:x1] = False
    assert (after[outside] == before[outside]).all()
    syntax = original.file_meta.TransferSyntaxUID
    assert output.file_meta.TransferSyntaxUID == (
        pydicom.uid.ExplicitVRLittleEndian if syntax.is_compressed else syntax
    )


def test_blanking_ybr_422_blanks_whole_pixel_pairs_to_black():
    ds = read(external.pydicom_file("SC_ybr_full_422_uncompressed.dcm"))
    before = ds.pixel_array.copy()
    blank_regions(ds, [(1, 0, 4, 3)])
    after = ds.pixel_array  # converted to RGB by pydicom
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (after[:3, 0:4] <= 1).all()  # pairs (0,1) and (2,3): black
    assert (after[3:] == before[3:]).all() and (after[:, 4:] == before[:, 4:]).all()


def test_blanking_refuses_pixel_data_shorter_than_its_header():
    ds = read(external.pydicom_file("CT_small.dcm"))
    damaged = copy.deepcopy(ds)
    damaged.PixelData = ds.PixelData[:100]
    with pytest.raises(PixelError, match="shorter than its header"):
        blank_regions(damaged, [(0, 0, 2, 2)])
    assert Deidentifier(make_policy())(ds).status == "ok"
