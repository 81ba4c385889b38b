"""`medgan enhance`: apply a trained enhancer (denoising, super-resolution, contrast translation) to whole scans."""

from __future__ import annotations

import sys

import click

from medgan.cli import cli


def _parse_patch(ctx, param, value: str | None) -> list[int] | None:
    """`96` (every axis), `96x96x64` or `96,96,64`."""
    if value is None:
        return None
    parts = value.replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not N or NxNxN (voxels)") from None
    if min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: sizes must be positive")
    return sizes


@cli.command()
@click.argument("source", metavar="IN", type=click.Path(path_type=str))
@click.option("-k", "--checkpoint", required=True, type=click.Path(path_type=str),
              help="A training checkpoint of a task that translates a scan (pix2pix, cyclegan).")  # fmt: skip
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=str),
              help="One scan: the output file (.nii.gz ...) or DICOM folder; a folder of scans: a folder.")  # fmt: skip
@click.option("--patch", callback=_parse_patch, metavar="N|NxN[xN]",
              help="Window in voxels (default: the training image size); one N for every axis.")  # fmt: skip
@click.option("--overlap", type=float, default=0.5, show_default=True,
              help="Fraction of a window shared with its neighbour, in [0, 1).")  # fmt: skip
@click.option("--batch", "batch_size", type=int, default=4, show_default=True, help="Windows per network call.")
@click.option("--device", default="auto", show_default=True, help="auto (a GPU when there is one), cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on a GPU that runs it natively, else fp32 (always on the CPU).")  # fmt: skip
@click.option("--slice-wise", is_flag=True, help="Apply a 2D checkpoint to a 3D scan slice by slice.")
@click.option("--format", "format", type=click.Choice(["nifti", "dicom"]),
              help="Output format (default: the input's; for one scan also OUT's suffix).")  # fmt: skip
@click.option("--series", help="IN is a DICOM folder of several series: the SeriesInstanceUID (or UID:n key) to use.")
@click.option("--modality", type=click.Choice(["CT", "MR"], case_sensitive=False),
              help="DICOM output, when the checkpoint recorded no modality.")  # fmt: skip
@click.option("--copy-patient", is_flag=True,
              help="DICOM output: copy the source's patient identity and series description.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace outputs (and a folder's reports) that exist.")
def enhance(source, checkpoint, out, patch, overlap, batch_size, device, precision, slice_wise, format, series,
            modality, copy_patient, overwrite) -> None:  # fmt: skip
    """Enhance the scan IN (or every scan under the folder IN) with a trained CHECKPOINT.

    IN is a NIfTI, NRRD or MetaImage file or a DICOM series (file or folder). The generator runs over
    the whole scan in windows of the training size, blended with Gaussian weights (no seams), in bf16
    on a GPU. The scan is first turned to the training data's axis order and resampled to its voxel
    size; the output has the scan's geometry (for super-resolution, the finer training grid) and
    physical units (HU for CT) and is marked as derived by a network.

    NIfTI in, NIfTI out (with a JSON sidecar naming modality and units). A DICOM series in, a derived
    DICOM series out (a folder): in the source's study and frame of reference, a new series, ImageType
    DERIVED, SourceImageSequence pointing at the source images and a DerivationDescription naming the
    checkpoint. Patient identity is not copied unless --copy-patient.

    A folder of scans (each DICOM series in it counts as one) runs as a batch into the folder OUT with
    the same relative names, progress on stderr, and OUT/report.json and OUT/report.csv listing every
    scan with its status, time, output and error; a bad scan is reported and the batch goes on, and the
    exit status is 1 if any failed. Existing outputs are refused before the first scan unless
    --overwrite.

    A 2D checkpoint on a 3D scan needs --slice-wise. A scan smaller than one window (at the training
    voxel size) is refused.

    \b
    Examples:
      medgan enhance lowdose.nii.gz -k runs/denoise/checkpoints/step_0100000.pt -o denoised.nii.gz
      medgan enhance dicom/chest_ct/ -k denoise.pt -o enhanced_ct/ --slice-wise
      medgan enhance scans/ -k sr.pt -o enhanced/ --patch 96 --overlap 0.5 --batch 8 --device cuda
    """
    from medgan.inference.enhance import enhance as run

    with _Progress() as progress:
        report = run(source, checkpoint, out, patch=patch, overlap=overlap, batch_size=batch_size, device=device,
                     slice_wise=slice_wise, format=format, overwrite=overwrite, precision=precision, series=series,
                     modality=modality, copy_patient=copy_patient, progress=progress)  # fmt: skip
    if report.report_json is None:
        click.echo(report.results[0].output)
        return
    for result in report.failed:
        click.echo(f"medgan: failed: {result.input}: {result.error}", err=True)
    click.echo(f"{len(report.results) - len(report.failed)} enhanced, {len(report.failed)} failed; "
               f"report: {report.report_json}")  # fmt: skip
    if report.failed:  # the batch ran, some scans did not: 1, as anonymize and degrade (2 is a user error)
        sys.exit(1)


class _Progress:
    """A progress bar on stderr when it is a terminal, and one line per scan of a folder either way."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True, highlight=False)
        columns = (TextColumn("enhancing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal)
        self.bar.__enter__()
        self.task = None
        return self

    def __call__(self, index: int, total: int, result) -> None:
        if self.task is None:
            self.task = self.bar.add_task("enhancing", total=total)
        detail = f"{result.output} ({result.seconds:.1f} s)" if result.status == "ok" else result.error
        self.console.print(
            f"[{index}/{total}] {result.status}: {result.input} -> {detail}", markup=False, soft_wrap=True
        )
        self.bar.advance(self.task)

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)
