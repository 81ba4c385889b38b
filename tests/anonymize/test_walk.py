"""Which files the commands read: symbolic links followed (once), empty or missing IN refused
before OUT exists, and phi-scan reading hidden files too."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from _corpus import SECRET, SERIES
from _corpus import policy as make_policy

from medgan.anonymize import batch
from medgan.anonymize.batch import anonymize_tree
from medgan.errors import InputError, OutputError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_SAMPLE = len(list(SERIES.glob("*.dcm")))


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture
def linked(tmp_path):
    """A folder that holds only links: to the sample series, to itself (a loop), and to the series again."""
    source = tmp_path / "linked"
    source.mkdir()
    os.symlink(SERIES, source / "ct")
    os.symlink(source, source / "loop")
    os.symlink(SERIES, source / "same_again")
    return source


def test_symlinked_folders_are_followed_each_real_folder_once(linked, tmp_path):
    files = [path for path, _ in batch.iter_inputs(str(linked))]
    assert len(files) == N_SAMPLE
    assert all(os.path.relpath(p, linked).startswith("ct" + os.sep) for p in files)
    summary = anonymize_tree(str(linked), str(tmp_path / "out"), make_policy())
    assert (summary.ok, summary.failed) == (N_SAMPLE, 0)


def test_a_link_from_in_to_out_is_not_walked(tmp_path):
    source = tmp_path / "in"
    shutil.copytree(SERIES, source / "ct")
    os.symlink(tmp_path / "out", source / "to_out")
    first = anonymize_tree(str(source), str(tmp_path / "out"), make_policy())
    second = anonymize_tree(str(source), str(tmp_path / "out"), make_policy())
    assert (first.ok, second.ok, second.resumed, second.failed) == (N_SAMPLE, 0, N_SAMPLE, 0)


def test_an_in_without_files_is_an_error_and_creates_no_out(tmp_path, secret_file, run_cli):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / ".hidden").write_text("x")
    for source in (empty, tmp_path / "mistyped"):
        status, _, err = run_cli("anonymize", source, tmp_path / "out", "--secret-file", secret_file)
        assert status == 2 and err.count("\n") == 1 and str(source) in err, err
        assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="no files"):
        anonymize_tree(str(empty), str(tmp_path / "out"), make_policy())
    # The mistyped run locked nothing: a run with another recipe into the same OUT works.
    recipe = tmp_path / "r.yaml"
    recipe.write_text("clean_descriptors: true\n")
    status, _, err = run_cli("anonymize", SERIES, tmp_path / "out", "--secret-file", secret_file, "--recipe", recipe)
    assert status == 0, err


def test_an_out_written_by_the_old_format_is_not_resumed(tmp_path):
    output = tmp_path / "out"
    anonymize_tree(str(SERIES), str(output), make_policy())
    state = output / batch.WORK_DIR / "run.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "format": 1}))
    with pytest.raises(OutputError, match="same pseudonym"):
        anonymize_tree(str(SERIES), str(output), make_policy())


def test_phi_scan_follows_links_and_refuses_an_empty_folder(linked, tmp_path, run_cli):
    status, out, _ = run_cli("phi-scan", linked, "--limit", "1")
    assert status == 1 and f"{N_SAMPLE} files scanned" in out
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    status, _, err = run_cli("phi-scan", tmp_path / "empty")
    assert status == 2 and "no files" in err
    status, _, err = run_cli("phi-scan", linked, "--original", tmp_path / "empty")
    assert status == 2 and "originals" in err


def test_phi_scan_reads_hidden_files_and_skips_only_the_report_and_work_folder(tmp_path, secret_file, run_cli):
    output = tmp_path / "out"
    assert run_cli("anonymize", SERIES, output, "--secret-file", secret_file)[0] == 0
    (output / batch.WORK_DIR / "leftover.dcm").write_bytes(b"not scanned")
    status, out, _ = run_cli("phi-scan", output)
    assert status == 0 and f"{N_SAMPLE} files scanned, 0 findings" in out
    shutil.copyfile(SERIES / "IM00001.dcm", output / ".leak.dcm")
    (output / ".cache").mkdir()
    shutil.copyfile(SERIES / "IM00002.dcm", output / ".cache" / "IM00002.dcm")
    status, out, _ = run_cli("phi-scan", output, "--limit", "0")
    assert status == 1 and f"{N_SAMPLE + 2} files scanned" in out
    assert ".leak.dcm: private" in out and f".cache{os.sep}IM00002.dcm: marker" in out
