"""`medgan anonymize`: layout, report, IN untouched, exit codes, and resume after a crash or a kill."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import _truth
import pytest
from _corpus import SECRET, SERIES, read

from medgan.anonymize import batch, worker
from medgan.anonymize.batch import anonymize_tree, input_id, read_report
from medgan.anonymize.recipe import Policy, Recipe

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def digest_tree(folder) -> dict[str, str]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def tree(tmp_path):
    """The sample series, a duplicate of one slice, and three inputs that must fail."""
    source = tmp_path / "in"
    shutil.copytree(SERIES, source / "ct")
    shutil.copyfile(SERIES / "IM00001.dcm", source / "copy_of_IM00001.dcm")  # same SOP Instance UID
    (source / "notes.txt").write_text("not an image\n")
    with open(SERIES / "IM00002.dcm", "rb") as fh:
        (source / "cut.dcm").write_bytes(fh.read()[:3000])
    os.symlink(source / "missing.dcm", source / "dangling.dcm")
    return source


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


def rows_by_input(output, source) -> dict[str, dict]:
    ids = {input_id(SECRET, os.path.relpath(p, source)): p for p, _ in batch.iter_inputs(str(source))}
    return {os.path.relpath(ids[r["input_id"]], source): r for r in read_report(os.path.join(output, "report.csv"))}


def test_cli_writes_the_layout_and_one_row_per_input(tree, tmp_path, secret_file, run_cli):
    before = digest_tree(tree)
    status, out, err = run_cli("anonymize", tree, tmp_path / "out", "--secret-file", secret_file)
    assert status == 1  # three inputs failed
    assert digest_tree(tree) == before  # IN is only read
    assert "29 ok, 0 quarantined, 3 failed" in out
    for name in ("notes.txt", "cut.dcm", "dangling.dcm"):
        assert f"{name}: " in err  # one line naming each failed file
    rows = rows_by_input(tmp_path / "out", tree)
    assert len(rows) == 32
    assert rows["notes.txt"]["reason"] == "not a DICOM file"
    assert rows["cut.dcm"]["status"] == "failed" and "truncated" in rows["cut.dcm"]["reason"]
    assert rows["dangling.dcm"]["reason"].startswith("cannot read")
    outputs = [r["output"] for r in rows.values() if r["status"] == "ok"]
    assert len(set(outputs)) == 29  # the duplicate slice got its own name
    report_text = (tmp_path / "out" / "report.csv").read_text()
    for identifier in ("Brightwater", "RB4471902", "IM0000", "ct/"):
        assert identifier not in report_text  # no identifiers, not even input file names
    for relative, row in rows.items():
        if row["status"] != "ok":
            continue
        patient, study, series, name = row["output"].split("/")
        ds = read(tmp_path / "out" / row["output"])
        assert (patient, study, series) == (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert name.startswith(ds.SOPInstanceUID)
        assert _truth.left_values(read(tree / relative), ds) == []
    written = [p for p in digest_tree(tmp_path / "out") if p.endswith(".dcm")]
    assert len(written) == 29
    assert not [p for p in digest_tree(tmp_path / "out") if "partial" in p or "tmp" in p.split(os.sep)]


def test_usage_errors_exit_2(tree, tmp_path, secret_file, run_cli):
    status, _, err = run_cli("anonymize", tree, tree / "out", "--secret-file", secret_file)
    assert status == 2 and "must not be inside IN" in err
    run_cli("anonymize", tree / "ct", tmp_path / "out", "--secret-file", secret_file)
    other = tmp_path / "other-secret"
    other.write_bytes(b"a-different-secret-0123456789")
    status, _, err = run_cli("anonymize", tree / "ct", tmp_path / "out", "--secret-file", other)
    assert status == 2 and "another secret or recipe" in err
    status, _, err = run_cli("anonymize", tree / "ct", tmp_path / "o2", "--secret-file", tmp_path / "nope")
    assert status == 2 and "secret file not found" in err


def test_clean_run_exits_0_and_a_rerun_does_nothing(tmp_path, secret_file, run_cli):
    status, out, _ = run_cli("anonymize", SERIES, tmp_path / "out", "--secret-file", secret_file, "--workers", "2")
    assert status == 0 and "28 ok" in out
    first = digest_tree(tmp_path / "out")
    status, out, _ = run_cli("anonymize", SERIES, tmp_path / "out", "--secret-file", secret_file)
    assert status == 0 and "0 ok" in out and "28 done before" in out
    assert digest_tree(tmp_path / "out") == first


def test_resume_after_a_crash_redoes_nothing_and_duplicates_nothing(tree, tmp_path, monkeypatch):
    policy = Policy.from_recipe(Recipe(), SECRET)
    real = worker.process_file
    calls = []

    def crash_after_ten(*args):
        calls.append(args[0])
        if len(calls) > 10:
            raise KeyboardInterrupt  # the run dies between two files
        return real(*args)

    monkeypatch.setattr(worker, "process_file", crash_after_ten)
    with pytest.raises(KeyboardInterrupt):
        anonymize_tree(str(tree), str(tmp_path / "out"), policy)
    assert len(read_report(str(tmp_path / "out" / "report.csv"))) == 10
    # A kill while a row was being written leaves half a line: it must not survive either.
    with open(tmp_path / "out" / "report.csv", "a") as fh:
        fh.write("0123456789abcdef,dicom,o")
    monkeypatch.setattr(worker, "process_file", real)
    calls.clear()
    monkeypatch.setattr(worker, "process_file", lambda *a: calls.append(a[0]) or real(*a))
    summary = anonymize_tree(str(tree), str(tmp_path / "out"), policy)
    assert summary.resumed == 10 and len(calls) == 22
    rows = read_report(str(tmp_path / "out" / "report.csv"))
    assert len(rows) == len({r["input_id"] for r in rows}) == 32


def test_a_missing_output_file_is_redone(tmp_path):
    policy = Policy.from_recipe(Recipe(), SECRET)
    anonymize_tree(str(SERIES), str(tmp_path / "out"), policy)
    rows = read_report(str(tmp_path / "out" / "report.csv"))
    os.remove(tmp_path / "out" / rows[0]["output"])
    summary = anonymize_tree(str(SERIES), str(tmp_path / "out"), policy)
    assert (summary.ok, summary.resumed) == (1, 27)
    assert os.path.isfile(tmp_path / "out" / rows[0]["output"])


def _processes_reading(source) -> list[int]:
    """Processes whose command line names `source` (the batch and its pool workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
                if str(source).encode() in fh.read():
                    found.append(int(entry))
    return found


def test_a_run_killed_halfway_resumes_to_the_same_result(tmp_path, secret_file):
    source = tmp_path / "in"
    for copy in range(6):  # 168 files: long enough to be killed in the middle
        shutil.copytree(SERIES, source / f"s{copy}")
    command = [sys.executable, "-m", "medgan", "anonymize", str(source), str(tmp_path / "out")]
    command += ["--secret-file", str(secret_file), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = tmp_path / "out" / "report.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not report.exists() or report.read_text().count("\n") < 20):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if sys.platform.startswith("linux"):  # its workers end with it rather than wait on forever
        deadline = time.monotonic() + 10
        while _processes_reading(source) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_reading(source) == []
    done_before = len(read_report(str(report)))
    assert 0 < done_before < 168, "the run was not caught in the middle"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    rows = read_report(str(report))
    assert len(rows) == len({r["input_id"] for r in rows}) == 168
    on_disk = [p for p in digest_tree(tmp_path / "out") if p.endswith(".dcm")]
    assert sorted(on_disk) == sorted(r["output"] for r in rows)  # no stray or half file
    clean = tmp_path / "clean"  # an uninterrupted run writes exactly the same files (the copies of a
    # series share their UIDs, so which copy gets the plain name and which a suffix depends on the order)
    subprocess.run([*command[:5], str(clean), *command[6:]], capture_output=True, timeout=120, check=True)
    resumed = sorted(v for k, v in digest_tree(tmp_path / "out").items() if k.endswith(".dcm"))
    assert resumed == sorted(v for k, v in digest_tree(clean).items() if k.endswith(".dcm"))


def test_a_dicomdir_is_walked_through_its_references(tmp_path):
    import pydicom

    dicomdir = pydicom.data.get_testdata_file("DICOMDIR")
    shutil.copytree(os.path.dirname(dicomdir), tmp_path / "media")
    policy = Policy.from_recipe(Recipe(), SECRET)
    summary = anonymize_tree(str(tmp_path / "media" / "DICOMDIR"), str(tmp_path / "out"), policy)
    assert summary.ok > 0 and summary.failed == 0
    with open(tmp_path / "out" / "report.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == summary.ok + summary.quarantined


def test_a_file_cut_inside_its_header_fails_as_truncated(tmp_path, secret_file, run_cli):
    """Cut before Rows and PixelData, an image file still parses: its image SOP class gives it away."""
    data = (SERIES / "IM00002.dcm").read_bytes()
    source = tmp_path / "in"
    source.mkdir()
    for length in (600, 1200, len(data) // 4):
        (source / f"cut_{length}.dcm").write_bytes(data[:length])
    status, out, _ = run_cli("anonymize", source, tmp_path / "out", "--secret-file", secret_file)
    assert status == 1 and "0 ok, 0 quarantined, 3 failed" in out
    rows = rows_by_input(tmp_path / "out", source)
    assert all(r["status"] == "failed" and "truncated" in r["reason"] for r in rows.values()), rows
