"""A fuzzed corpus never crashes the batch, never leaves a half file, never leaves an identifier."""

from __future__ import annotations

import os

import pydicom
import pytest
from _corpus import SAMPLE_IDENTIFIERS, SECRET, SERIES, read
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from medgan.anonymize import worker
from medgan.anonymize.batch import anonymize_tree, read_report
from medgan.anonymize.recipe import Policy, Recipe
from medgan.anonymize.verify import phi_scan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SAMPLE = SERIES / "IM00001.dcm"
NAME = "Brightwater^Harriet^Jane"


def _patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def build_corpus(folder) -> int:
    """Write the fuzzed inputs; returns how many there are."""
    folder.mkdir()
    data = SAMPLE.read_bytes()
    for cut in (0, 60, 131, 200, 700, 3000, len(data) - 7):
        (folder / f"truncated_{cut}.dcm").write_bytes(data[:cut])
    name_element = b"\x10\x00\x10\x00PN"
    (folder / "wrong_vr_us.dcm").write_bytes(_patched(data, name_element, b"\x10\x00\x10\x00US"))
    (folder / "wrong_vr_un.dcm").write_bytes(_patched(data, name_element, b"\x10\x00\x10\x00UN"))
    (folder / "wrong_length.dcm").write_bytes(_patched(data, name_element + b"\x18\x00", name_element + b"\xff\x7f"))
    ds = read(SAMPLE)
    ds.ImageComments = ("Patient Harriet Brightwater " * 40_000)[:1_000_000]  # 1 MB of text
    ds.Manufacturer = f"scanner of {NAME.split('^')[0]}"  # kept, but names the patient
    ds.save_as(folder / "huge_values.dcm")
    ds = read(SAMPLE)
    leaf = Dataset()
    leaf.PatientName, leaf.TextValue = NAME, "Brightwater was here"
    for _ in range(200):  # deeper than any real file; deeper than medgan walks
        parent = Dataset()
        parent.ContentSequence = [leaf]
        leaf = parent
    ds.ContentSequence = leaf.ContentSequence
    ds.save_as(folder / "deep_sequences.dcm")
    (folder / "random.bin").write_bytes(os.urandom(5000))
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "preamble_then_garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
    (folder / "text.dcm").write_text("PatientName=Brightwater\n")
    os.symlink(folder / "nowhere.dcm", folder / "unreadable.dcm")
    return len(os.listdir(folder))


def scan_bytes(folder) -> list[tuple[str, bytes]]:
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as fh:
                data = fh.read().lower()
            found += [(name, i) for i in SAMPLE_IDENTIFIERS if i.lower() in data]
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_fuzzed_corpus(tmp_path, workers):
    count = build_corpus(tmp_path / "in")
    policy = Policy.from_recipe(Recipe(), SECRET)
    summary = anonymize_tree(str(tmp_path / "in"), str(tmp_path / "out"), policy, workers=workers)
    rows = read_report(str(tmp_path / "out" / "report.csv"))
    assert len(rows) == count == summary.ok + summary.quarantined + summary.failed
    assert all(r["status"] in ("ok", "failed") and (r["status"] == "ok" or r["reason"]) for r in rows)
    # the huge file and the US-for-PN one are still images; PN read as UN makes the parse run past the end of
    # the file, swallowing the pixels: that one fails as truncated rather than coming out as a CT without pixels
    assert summary.ok >= 2
    assert scan_bytes(tmp_path / "out") == []
    findings, scanned = phi_scan(str(tmp_path / "out"))
    assert scanned == summary.ok and findings == []
    leftovers = [n for n in os.listdir(tmp_path / "out" / ".medgan-anonymize") if n != "run.json"]
    assert leftovers == []  # no temporary file survives


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=SAMPLE.stat().st_size), flip=st.integers(0, 255))
def test_any_damaged_file_fails_cleanly_or_comes_out_clean(tmp_path, cut, flip):
    data = bytearray(SAMPLE.read_bytes())
    if cut < len(data):
        data[cut] ^= flip  # one damaged byte anywhere...
    path = tmp_path / f"damaged_{cut}_{flip}.dcm"
    path.write_bytes(bytes(data[: max(cut, 1000)]))  # ...and the file cut there (or kept whole)
    worker.init_worker(Policy.from_recipe(Recipe(), SECRET))
    result = worker.process_file(str(path), None, "x", str(tmp_path))
    assert result.status in ("ok", "failed") and (result.status == "ok" or result.reason)
    for temp in result.temp_paths:
        with open(temp, "rb") as fh:
            written = fh.read().lower()
        assert not [i for i in SAMPLE_IDENTIFIERS if i.lower() in written]
        assert pydicom.dcmread(temp).PatientIdentityRemoved == "YES"
        os.remove(temp)


@pytest.mark.parametrize(
    ("offset", "flip"),
    [
        (162, 32),  # a file-meta length swallows the whole data set into one UID value
        (162, 1),  # a file-meta VR becomes one pydicom cannot convert
        (694, 128),  # Modality's length swallows InstitutionName and its neighbours
        (712, 32),  # InstitutionName's tag turns into an unlisted attribute that still holds the name
        (750, 255),  # InstitutionAddress's tag turns into one unknown to the dictionary
    ],
)
def test_damage_found_by_sweeping_every_header_byte(tmp_path, offset, flip):
    """Every header byte of SAMPLE was flipped in four ways; these were the cases that once leaked."""
    data = bytearray(SAMPLE.read_bytes())
    data[offset] ^= flip
    path = tmp_path / "damaged.dcm"
    path.write_bytes(bytes(data))
    worker.init_worker(Policy.from_recipe(Recipe(), SECRET))
    result = worker.process_file(str(path), None, "x", str(tmp_path))
    assert result.status in ("ok", "failed") and (result.status == "ok" or result.reason)
    for temp in result.temp_paths:
        written = open(temp, "rb").read().lower()  # noqa: SIM115
        assert not [i for i in SAMPLE_IDENTIFIERS if i.lower() in written]
