"""De-identify the same DICOM files with medgan, dicognito and dicom-anonymizer; print speed and leftovers.

    python benchmarks/anon_bench.py                 # the pydicom test files (155), each contender once
    python benchmarks/anon_bench.py --copies 8      # the same files 8 times over (1,240), steadier timing
    python benchmarks/anon_bench.py --files DIR     # any folder of DICOM files
    python benchmarks/anon_bench.py --json out.json

Contenders, each in a fresh process, timed from "here is the list of files" to "all written":
  medgan-wN         medgan.anonymize.anonymize_tree with N worker processes (Basic Profile;
                    burned-in quarantine off, so that every contender writes every file)
  dicognito         dicognito 0.19.0 Anonymizer().anonymize(ds) + save_as, one process
  dicom-anonymizer  dicomanonymizer 2.1.0 anonymize_dicom_file(in, out), one process

Each contender runs `--repeats` times, interleaved with the others, each run in a fresh process
after its imports and with the files in the page cache; the fastest run counts.
Then the truth checker of tests/anonymize/_truth.py (independent of medgan's passes) counts,
for every output, the original values that the Basic Profile says must go (non-K attributes,
private attributes, at any depth) and that the same attribute still holds. Peak memory is the
largest resident set of the contender's processes (main and workers).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "anonymize"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
SECRET = b"anon-bench-secret-0123456789"
PEERS = ("dicognito", "dicom-anonymizer")


def pydicom_corpus() -> list[str]:
    """The readable pydicom test files, DICOMDIR indexes excluded (155 with pydicom 3.0.2)."""
    from _corpus import pydicom_files  # the tests' own list, so both count the same files

    return pydicom_files()


def stage(files: list[str], copies: int, folder: str) -> list[str]:
    """Copy the files into one flat folder (copy k of file i is k_i_name), so every contender reads alike."""
    os.makedirs(folder)
    staged = []
    for k in range(copies):
        for i, path in enumerate(files):
            target = os.path.join(folder, f"{k:03d}_{i:04d}_{os.path.basename(path)}")
            shutil.copyfile(path, target)
            staged.append(target)
    return staged


# -- contenders (run inside a child process) ------------------------------------------------


def run_medgan(inputs: list[str], out: str, workers: int) -> dict[str, str]:
    from medgan.anonymize.batch import anonymize_tree, input_id, read_report
    from medgan.anonymize.recipe import Policy, Recipe

    policy = Policy.from_recipe(Recipe(quarantine_burned_in=False), SECRET)
    folder = os.path.dirname(inputs[0])
    anonymize_tree(folder, out, policy, workers=workers)
    rows = {r["input_id"]: r for r in read_report(os.path.join(out, "report.csv"))}
    mapping = {}
    for path in inputs:
        row = rows.get(input_id(SECRET, os.path.relpath(path, folder)))
        if row and row["status"] == "ok":
            mapping[path] = os.path.join(out, row["output"])
    return mapping


def run_dicognito(inputs: list[str], out: str) -> dict[str, str]:
    import pydicom
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    mapping = {}
    for i, path in enumerate(inputs):
        target = os.path.join(out, f"{i}.dcm")
        try:
            ds = pydicom.dcmread(path)
            anonymizer.anonymize(ds)
            ds.save_as(target)
            mapping[path] = target
        except Exception:
            continue
    return mapping


def run_dicom_anonymizer(inputs: list[str], out: str) -> dict[str, str]:
    from dicomanonymizer import anonymize_dicom_file

    mapping = {}
    for i, path in enumerate(inputs):
        target = os.path.join(out, f"{i}.dcm")
        try:
            anonymize_dicom_file(path, target)
            mapping[path] = target
        except Exception:
            continue
    return mapping


def child(name: str, listing: str, out: str, result: str) -> None:
    """Child-process entry: run one contender, write timing, memory and the input->output map."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    with open(listing, encoding="utf-8") as fh:
        inputs = json.load(fh)
    os.makedirs(out, exist_ok=True)
    # Imports and the page cache are not what is measured: load every contender's modules, read every file once.
    try:
        import dicognito.anonymizer  # noqa: F401
        import dicomanonymizer  # noqa: F401
    except ImportError as err:
        sys.exit(f"anon_bench: {err.name} is missing: pip install -e '.[bench]' (or make bench-anon)")

    import medgan.anonymize.batch  # noqa: F401

    for path in inputs:
        with open(path, "rb") as fh:
            fh.read()
    start = time.perf_counter()
    if name.startswith("medgan-w"):
        mapping = run_medgan(inputs, out, int(name.removeprefix("medgan-w")))
    elif name == "dicognito":
        mapping = run_dicognito(inputs, out)
    else:
        mapping = run_dicom_anonymizer(inputs, out)
    seconds = time.perf_counter() - start
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    with open(result, "w", encoding="utf-8") as fh:
        json.dump({"seconds": seconds, "peak_mib": peak_kib / 1024, "mapping": mapping}, fh)


# -- the parent: stage, run, score ------------------------------------------------------------


def leftovers(mapping: dict[str, str]) -> dict[str, int]:
    import logging
    import warnings

    import _truth

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    own = private = nested = inherited = 0
    for source, output in mapping.items():
        original, written = _truth.read(source), _truth.read(output)
        left = _truth.left_values(original, written, inherit=False)
        own += len(left)
        private += sum(x.private for x in left)
        nested += sum(x.nested for x in left)
        inherited += len(_truth.left_values(original, written, inherit=True))
    return {"left": own, "left_private": private, "left_nested": nested, "left_with_inherited": inherited}


def run_contender(name: str, listing: str, work: str, repeat: int) -> dict:
    out, result = os.path.join(work, f"out-{name}-{repeat}"), os.path.join(work, f"{name}-{repeat}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, listing, out, result]
    subprocess.run(cmd, check=True)
    with open(result, encoding="utf-8") as fh:
        return json.load(fh)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", help="folder of DICOM files (default: the pydicom test files)")
    parser.add_argument("--copies", type=int, default=1, help="stage the files this many times over")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="medgan worker counts to time")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender, interleaved; the best counts")
    parser.add_argument("--no-score", action="store_true", help="skip the leftover count (timing only)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    files = sorted(glob.glob(os.path.join(args.files, "**", "*"), recursive=True)) if args.files else pydicom_corpus()
    files = [f for f in files if os.path.isfile(f)]
    work = tempfile.mkdtemp(prefix="anon-bench-")
    try:
        inputs = stage(files, args.copies, os.path.join(work, "in"))
        listing = os.path.join(work, "inputs.json")
        with open(listing, "w", encoding="utf-8") as fh:
            json.dump(inputs, fh)
        names = [f"medgan-w{n}" for n in args.workers] + list(PEERS)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for repeat in range(args.repeats):  # interleaved, so that a busy moment hits everyone alike
            for name in names:
                runs[name].append(run_contender(name, listing, work, repeat))
                if repeat:
                    shutil.rmtree(os.path.join(work, f"out-{name}-{repeat}"), ignore_errors=True)
        results = {}
        for name in names:
            best = min(runs[name], key=lambda r: r["seconds"])
            record = {
                "files_in": len(inputs),
                "files_written": len(runs[name][0]["mapping"]),
                "seconds": best["seconds"],
                "seconds_all": [r["seconds"] for r in runs[name]],
                "files_per_s": len(inputs) / best["seconds"],
                "peak_mib": max(r["peak_mib"] for r in runs[name]),
            }
            if not args.no_score:
                record.update(leftovers(runs[name][0]["mapping"]))
            results[name] = record
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fastest_peer = max(results[p]["files_per_s"] for p in PEERS)
    load = os.getloadavg()[0]
    print(
        f"{len(inputs)} files ({len(files)} distinct x {args.copies}), {os.cpu_count()} CPUs, "
        f"load {load:.1f}, best of {args.repeats} interleaved runs, {platform.python_version()}"
    )
    header = f"{'contender':18} {'written':>7} {'s':>7} {'files/s':>8} {'x peer':>7} {'peak MiB':>8}"
    if not args.no_score:
        header += f" {'left':>6} {'private':>7} {'nested':>6} {'+inherit':>8}"
    print(header)
    for name, r in results.items():
        line = (
            f"{name:18} {r['files_written']:7d} {r['seconds']:7.2f} {r['files_per_s']:8.1f} "
            f"{r['files_per_s'] / fastest_peer:7.2f} {r['peak_mib']:8.0f}"
        )
        if not args.no_score:
            line += f" {r['left']:6d} {r['left_private']:7d} {r['left_nested']:6d} {r['left_with_inherited']:8d}"
        print(line)
    summary = {"files": len(inputs), "cpus": os.cpu_count(), "load": load, "results": results}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    main()
