"""`medgan anonymize IN OUT`: de-identify a tree, resumably, one report row per input.

- IN (a file, a folder, or a DICOMDIR) is only read. OUT gets
  `<patient pseudonym>/<new StudyInstanceUID>/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm`
  (NIfTI: `nifti/<input id>.nii.gz` + `.json`), `report.csv`, and a hidden work folder.
- Workers write to temporary files in the work folder; the main process renames each into
  place (atomic, on one file system) and only then appends its row to report.csv. A killed run
  leaves whole files and whole rows; the restart skips inputs with an "ok" row whose file exists
  (and quarantined or failed ones), redoes the rest, and never writes a row twice.
- Inputs are identified in the report by a keyed id (HMAC of the path relative to IN), since
  file and folder names often carry names or IDs; `input_id()` recomputes it.
- Memory stays bounded: the walk is lazy and at most `2 * workers` files are in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import hmac
import io
import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from medgan.anonymize import worker
from medgan.anonymize.recipe import Policy
from medgan.anonymize.result import Result
from medgan.errors import InputError, OutputError
from medgan.io.dicom_scan import list_dicom_files
from medgan.io.walk import walk_tree

__all__ = ["REPORT_COLUMNS", "BatchSummary", "anonymize_tree", "input_id", "iter_inputs", "read_report"]

log = logging.getLogger(__name__)

REPORT_NAME = "report.csv"
WORK_DIR = ".medgan-anonymize"
REPORT_COLUMNS = ("input_id", "kind", "status", "reason", "output")
# 2: patients keyed by their own ID (format 1 filed every patient under one pseudonym).
_FORMAT = 2
_SKIPPED_NAMES = {"DICOMDIR", "Thumbs.db", "desktop.ini", ".DS_Store"}


@dataclass
class BatchSummary:
    """Counts for one run (rows already in the report from an earlier run count as `resumed`)."""

    ok: int = 0
    quarantined: int = 0
    failed: int = 0
    resumed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input path, reason), this run only
    failed_before: int = 0  # failed rows kept from an earlier run

    @property
    def any_failed(self) -> bool:
        return bool(self.failed or self.failed_before)


def input_id(secret: bytes, relative_path: str) -> str:
    """The keyed id of an input (its path relative to IN, with / separators) as report.csv shows it."""
    key = relative_path.replace(os.sep, "/").encode("utf-8", "surrogateescape")
    return hmac.new(secret, b"medgan-input-v1\0" + key, hashlib.sha256).hexdigest()[:20]


def iter_inputs(root: str, exclude: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Yield (file, sidecar) lazily: every file under a folder (sorted, hidden ones skipped, symbolic
    links followed), the files a DICOMDIR references, or one file. A NIfTI's JSON sidecar travels
    with it. `exclude`: a real path whose folders are not entered (OUT, should IN link to it)."""
    if not os.path.exists(root):
        raise InputError("no such file or folder", path=root)
    if os.path.isfile(root):
        for path in list_dicom_files(root):  # the file itself, or the files a DICOMDIR references
            yield path, _sidecar(path)
        return
    for folder, names in walk_tree(root, _hidden, exclude):
        visible = [n for n in names if not n.startswith(".") and n not in _SKIPPED_NAMES]
        present = set(visible)
        for name in visible:
            if name.endswith(".json") and (name[:-5] + ".nii" in present or name[:-5] + ".nii.gz" in present):
                continue  # handled with its NIfTI
            path = os.path.join(folder, name)
            yield path, _sidecar(path)


def _hidden(folder: str, name: str) -> bool:
    return name.startswith(".")


def _sidecar(path: str) -> str | None:
    for suffix in (".nii.gz", ".nii"):
        if path.endswith(suffix):
            candidate = path[: -len(suffix)] + ".json"
            return candidate if os.path.isfile(candidate) else None
    return None


def read_report(path: str) -> list[dict[str, str]]:
    """The complete rows of a report (a row cut short by a kill is dropped)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the last row was cut short by a kill
    rows = list(csv.DictReader(io.StringIO(text)))
    return [r for r in rows if None not in r and all(r.get(c) is not None for c in REPORT_COLUMNS)]


class _Run:
    """The output folder's state: report rows so far, claimed output paths, the report file."""

    def __init__(self, output: str, policy: Policy):
        self.output = output
        self.work = os.path.join(output, WORK_DIR)
        self.temp = os.path.join(self.work, "tmp")
        self.report_path = os.path.join(output, REPORT_NAME)
        os.makedirs(self.work, exist_ok=True)
        self._check_fingerprint(policy.fingerprint())
        shutil.rmtree(self.temp, ignore_errors=True)  # temporary files of a killed run
        os.makedirs(self.temp)
        rows: dict[str, dict[str, str]] = {}
        for row in read_report(self.report_path):
            paths = [p for p in row["output"].split(";") if p]
            if row["status"] == "ok" and not all(os.path.isfile(os.path.join(output, p)) for p in paths):
                continue  # its file went missing: redo it
            rows[row["input_id"]] = row  # a later row for the same input wins
        self.done = rows
        self.claimed = {p: row["input_id"] for row in rows.values() for p in row["output"].split(";") if p}
        temp_report = self.report_path + ".partial"
        with open(temp_report, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, REPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows.values())
        os.replace(temp_report, self.report_path)  # de-duplicated, whole rows only
        self._folders: set[str] = set()
        self._fh = open(self.report_path, "a", newline="", encoding="utf-8")  # noqa: SIM115  closed by close()
        self._writer = csv.DictWriter(self._fh, REPORT_COLUMNS, lineterminator="\n")

    def _check_fingerprint(self, fingerprint: str) -> None:
        state = os.path.join(self.work, "run.json")
        if os.path.exists(state):
            with open(state, encoding="utf-8") as fh:
                saved = json.load(fh)
            if saved.get("format", 1) < _FORMAT:
                raise OutputError(
                    "was written by an older medgan that gave every patient the same pseudonym and date "
                    "offset; do not resume it: write a new OUT",
                    path=self.output,
                )
            if saved.get("fingerprint") != fingerprint:
                raise OutputError(
                    "was written with another secret or recipe; resume with the same ones, or use a new OUT",
                    path=self.output,
                )
            return
        with open(state + ".partial", "w", encoding="utf-8") as fh:
            json.dump({"fingerprint": fingerprint, "format": _FORMAT}, fh)
        os.replace(state + ".partial", state)

    def finish(self, key: str, result: Result) -> str:
        """Move the result's files into place, then record its row. Returns the output column."""
        outputs = []
        for temp, relative in zip(result.temp_paths, result.outputs, strict=True):
            claimant = self.claimed.get(relative)
            if claimant is not None and claimant != key:  # another input had the same UID: keep both
                folder, name = os.path.split(relative)
                stem, suffix = (name[:-7], ".nii.gz") if name.endswith(".nii.gz") else os.path.splitext(name)
                relative = os.path.join(folder, f"{stem}_{key[:10]}{suffix}")
            final = os.path.join(self.output, relative)
            folder = os.path.dirname(final)
            if folder not in self._folders:  # one makedirs per series, not per file
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            os.replace(temp, final)
            self.claimed[relative] = key
            outputs.append(relative.replace(os.sep, "/"))
        output = ";".join(outputs)
        self._writer.writerow(
            {"input_id": key, "kind": result.kind, "status": result.status, "reason": result.reason, "output": output}
        )
        self._fh.flush()  # the row is on disk before the next file starts: a kill loses no row
        return output

    def close(self) -> None:
        self._fh.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _check_paths(source: str, output: str) -> None:
    src, out = os.path.realpath(source), os.path.realpath(output)
    src_dir = src if os.path.isdir(src) else os.path.dirname(src)
    if os.path.isdir(src) and (out == src or out.startswith(src_dir + os.sep)):
        raise OutputError("OUT must not be inside IN (IN is never written to)", path=output)
    if src == out or src.startswith(out + os.sep):
        raise OutputError("OUT must not contain IN", path=output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError("exists and is not a folder", path=output)


def anonymize_tree(
    source: str,
    output: str,
    policy: Policy,
    workers: int = 1,  # worker processes; 1 runs in this process
    on_result: Callable[[str, Result], None] | None = None,  # called after each input is recorded
) -> BatchSummary:
    """De-identify every input under `source` into `output` (see the module docstring)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    _check_paths(source, output)
    base = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    # IN must exist and hold an input before OUT is created: a mistyped IN leaves nothing behind.
    inputs = iter_inputs(source, exclude=os.path.realpath(output))
    first = next(inputs, None)
    if first is None:
        raise InputError("holds no files to de-identify (hidden files and folders are skipped)", path=source)
    os.makedirs(output, exist_ok=True)
    run = _Run(output, policy)
    summary = BatchSummary(failed_before=sum(r["status"] == "failed" for r in run.done.values()))

    def record(path: str, key: str, result: Result) -> None:
        run.finish(key, result)
        if result.status == "failed":
            summary.failed += 1
            summary.failures.append((path, result.reason))
        elif result.status == "quarantined":
            summary.quarantined += 1
        else:
            summary.ok += 1
        if on_result is not None:
            on_result(path, result)

    def pending() -> Iterator[tuple[str, str | None, str]]:
        for path, sidecar in itertools.chain([first], inputs):
            key = input_id(policy.secret, os.path.relpath(path, base))
            if key in run.done:
                summary.resumed += 1
                continue
            run.done[key] = {}  # the same file reached twice (a DICOMDIR listing it twice) runs once
            yield path, sidecar, key

    try:
        if workers == 1:
            worker.init_worker(policy)
            for path, sidecar, key in pending():
                record(path, key, worker.process_file(path, sidecar, key, run.temp))
        else:
            _run_pool(pending(), policy, workers, run.temp, record)
    finally:
        run.close()
    return summary


def _chunks(tasks: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for task in tasks:
        chunk.append(task)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_pool(tasks, policy: Policy, workers: int, temp: str, record, chunk_files: int = 8) -> None:
    """Files go to the workers in chunks (a small file takes ~2 ms: sending each alone would cost
    as much again); at most 2 * workers chunks are in flight; results are recorded as they come.

    A worker that dies (a codec crash, the out-of-memory killer) breaks the whole pool and every
    chunk in flight with it; those files are then retried one at a time, each in a fresh process,
    so only the file that kills its worker again is recorded as failed.
    """
    limit = 2 * workers
    chunks = _chunks(iter(tasks), chunk_files)
    suspects: list[tuple[str, str | None, str]] = []
    while True:
        for task in suspects:
            with _pool(1, policy) as alone:
                _drain({alone.submit(worker.process_chunk, [task], temp): [task]}, record, retry=False)
        suspects = []
        with _pool(workers, policy) as pool:
            in_flight: dict[cf.Future, list] = {}
            for chunk in chunks:
                try:
                    in_flight[pool.submit(worker.process_chunk, chunk, temp)] = chunk
                except cf.process.BrokenProcessPool:
                    suspects += chunk
                    break
                if len(in_flight) >= limit:
                    suspects += _drain(in_flight, record, retry=True, first=True)
                if suspects:
                    break
            while in_flight:
                suspects += _drain(in_flight, record, retry=True)
        if not suspects:
            return


def _pool(workers: int, policy: Policy) -> cf.ProcessPoolExecutor:
    """Worker processes that build the passes once, and end if this process is killed."""
    return cf.ProcessPoolExecutor(workers, initializer=worker.init_pool_worker, initargs=(policy, os.getpid()))


def _drain(in_flight: dict, record, retry: bool, first: bool = False) -> list:
    """Record the completed chunks; return the tasks lost to a broken pool (when `retry`)."""
    done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED if first else cf.ALL_COMPLETED)
    lost = []
    for future in done:
        chunk = in_flight.pop(future)
        try:
            results = future.result()
        except cf.process.BrokenProcessPool:
            if retry:
                lost += chunk
                continue
            results = [Result("failed", "the worker process died on this file")] * len(chunk)
        except Exception as err:
            results = [Result("failed", f"worker error ({err.__class__.__name__})")] * len(chunk)
        for (path, _sidecar, key), result in zip(chunk, results, strict=True):
            record(path, key, result)
    return lost
