"""`medgan simulate-lesions`: insert procedural lesions into a scan (or a folder of scans), or replay them."""

from __future__ import annotations

import os
import sys

import click

from medgan.cli import cli

# The registry's names, listed here so that --help needs no torch import (a test keeps them equal).
PRESETS = ("generic", "ct-liver-hypo", "ct-lung-nodule", "mr-brain-enhancing")


def _range(ctx, param, text: str | None) -> tuple[float, float] | None:
    """'5:30' -> (5.0, 30.0); '10' -> (10.0, 10.0)."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number or a range LOW:HIGH", ctx=ctx, param=param) from None
    if bounds[0] > bounds[1]:
        raise click.BadParameter(f"{text!r}: the low end is above the high end", ctx=ctx, param=param)
    return bounds


@cli.command("simulate-lesions")
@click.argument("source", metavar="IN", type=click.Path(path_type=str))
@click.option("--organ-mask", "organ_mask", required=True, type=click.Path(path_type=str),
              help="Organ mask or segmentation on (or overlapping) IN's grid; a folder of masks named like the "
                   "scans for a folder IN.")  # fmt: skip
@click.option("--label", type=int, help="The organ's value in the mask (default: every nonzero voxel).")
@click.option("--n", "count", type=click.IntRange(1, 500), default=3, show_default=True, help="Lesions per scan.")
@click.option("--diameter-mm", callback=_range, metavar="LOW:HIGH",
              help="Volume-equivalent diameter range in mm (default: the preset's).")  # fmt: skip
@click.option("--contrast", callback=_range, metavar="LOW:HIGH",
              help="Mean contrast to the surroundings: HU for CT presets, a fraction of the surroundings' mean for "
                   "MR ones (default: the preset's).")  # fmt: skip
@click.option("--preset", default="generic", show_default=True, metavar="NAME",
              help=f"Lesion model preset: {', '.join(PRESETS)}.")  # fmt: skip
@click.option("--model", "checkpoint", type=click.Path(path_type=str),
              help="An inpaint checkpoint for learned lesion content (default: procedural content).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Reproduces every lesion.")
@click.option("--margin-mm", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Lesions stay this far inside the organ's border.")  # fmt: skip
@click.option("--gap-mm", type=click.FloatRange(0), default=2.0, show_default=True,
              help="Lesions (with what they change around them) stay this far apart.")  # fmt: skip
@click.option("--mass-effect", type=click.FloatRange(0, 1),
              help="Probability that a lesion pushes the tissue aside (default: the preset's).")  # fmt: skip
@click.option("--modality", type=click.Choice(["CT", "MR"], case_sensitive=False),
              help="IN's modality when its file does not record one (NRRD, MHA, NIfTI without sidecar).")  # fmt: skip
@click.option("--series", help="SeriesInstanceUID to read from a DICOM folder holding several.")
@click.option("--replay", type=click.Path(path_type=str), metavar="RECORDS.json",
              help="Render a records file written by an earlier run again (identical output).")  # fmt: skip
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def simulate_lesions(source, organ_mask, label, count, diameter_mm, contrast, preset, checkpoint, seed, margin_mm,
                     gap_mm, mass_effect, modality, series, replay, out_dir, overwrite) -> None:  # fmt: skip
    """Insert simulated lesions into IN inside an organ, with an exact label map and a record of each.

    Each lesion is sampled into a record (size, shape, orientation, texture, contrast, place) from
    --seed and rendered from it on the scan's own grid, matched to the scan's blur and noise. For a
    scan NAME it writes NAME_lesions.nii.gz (the edited scan), NAME_lesion_labels.nii.gz (lesion i
    has label i) and NAME_lesion_records.json; DICOM input gives a derived series NAME_lesions/
    and a DICOM SEG NAME_seg.dcm instead. With a folder IN and a folder of masks, every scan is
    done, with a progress bar and report.csv/report.json; failures are reported and the batch goes
    on (exit status 1 if any failed).

    \b
    Examples:
      medgan simulate-lesions ct.nii.gz --organ-mask seg.nii.gz --label 5 --preset ct-liver-hypo \\
          --n 3 --diameter-mm 5:30 --contrast -60:-20 --seed 0 --out lesions/
      medgan simulate-lesions ct.nii.gz --organ-mask seg.nii.gz --label 5 \\
          --replay lesions/ct_lesion_records.json --out again/
    """
    from medgan.lesions.scans import LesionRequest, replay_scan, simulate_scan

    if replay and os.path.isdir(organ_mask):
        raise click.UsageError("--replay takes one scan and its organ mask, not folders")
    if replay:
        outputs = replay_scan(source, organ_mask, replay, out_dir, overwrite=overwrite, label=label, series=series)
        _print(outputs)
        return
    request = LesionRequest(n=count, preset=preset, diameter_mm=diameter_mm, contrast=contrast, seed=seed,
                            margin_mm=margin_mm, gap_mm=gap_mm, label=label, modality=modality, checkpoint=checkpoint,
                            mass_effect=mass_effect, series=series, overwrite=overwrite)  # fmt: skip
    if os.path.isdir(organ_mask):
        _batch(source, organ_mask, out_dir, request)
        return
    _print(simulate_scan(source, organ_mask, out_dir, request))


def _print(outputs) -> None:
    for path in (outputs.image, outputs.labels, outputs.records, outputs.organ):
        if path:
            click.echo(path)


def _batch(source: str, mask_dir: str, out_dir: str, request) -> None:
    from medgan.lesions.batch import simulate_folder
    from medgan.lesions.scans import check_checkpoint
    from medgan.metrics.collect import progress_bar

    if request.checkpoint:
        check_checkpoint(request.checkpoint)  # once, before any scan
    with progress_bar(True) as bar:
        task = bar.add_task("simulate-lesions", total=None)

        def progress(done: int, total: int, name: str, status: str) -> None:
            bar.advance(task)
            if not sys.stderr.isatty():
                click.echo(f"[{done}/{total}] {name}: {status}", err=True)

        rows = simulate_folder(source, mask_dir, out_dir, request, progress=progress)
    failed = [row for row in rows if row["status"] != "ok"]
    click.echo(os.path.join(out_dir, "report.csv"))
    for row in failed:
        click.echo(f"medgan: failed: {row['name']}: {row.get('error', 'failed')}", err=True)
    if failed:  # the batch ran, some scans did not: 1, as anonymize, degrade and enhance (2 is a user error)
        click.echo(f"medgan: {len(failed)} of {len(rows)} scans failed; see report.csv", err=True)
        sys.exit(1)
