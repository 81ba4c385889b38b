"""`medgan evaluate`."""

from __future__ import annotations

import os

import click

from medgan.cli import cli


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH in physical units, e.g. -1000,1000; got {text!r}") from None
    return low, high


def _options(pairs: tuple[str, ...]) -> dict:
    """`--extractor-option KEY=VALUE` values, parsed as YAML (224 -> int, 0.5 -> float, text -> str)."""
    import yaml

    options = {}
    for text in pairs:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE, e.g. input_size=224; got {text!r}", param_hint="'--extractor-option'"
            )
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            options[key] = raw.strip()  # not YAML: kept as text, and the option's own check names it
    return options


@cli.command()
@click.option("--real", type=click.Path(path_type=str), help="Folder of real images (held out from training).")
@click.option("--fake", type=click.Path(path_type=str), help="Folder of generated images.")
@click.option(
    "--train",
    type=click.Path(path_type=str),
    help="Folder of training images: enables memorization and the nearest-training panels, and is the floor's "
    "second real set unless --real-b is given.",
)
@click.option(
    "--real-b",
    type=click.Path(path_type=str),
    help="A second real set (other patients than --real) for the real-vs-real floor. Default: --train, else two "
    "halves of --real.",
)
@click.option(
    "--pairs",
    "pairs_csv",
    type=click.Path(path_type=str),
    help="CSV of reference,test[,mask] pairs (test and mask on the reference's voxel grid).",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=str), help="Report folder to create, apart from every input."
)
@click.option("--metrics", help="Comma-separated metric names (default: all that apply).")
@click.option(
    "--extractor",
    default="auto",
    show_default=True,
    help="auto: every installed offline extractor side by side (random_cnn, efficientnet_lite0 when installed, "
    "and --extractor-file's); or a comma-separated subset of random_cnn, efficientnet_lite0, file.",
)
@click.option("--extractor-file", type=click.Path(path_type=str), help="TorchScript / torch.export / state-dict file.")
@click.option("--extractor-sha256", help="Expected SHA-256 of --extractor-file (required with it).")
@click.option(
    "--extractor-arch", help="Architecture of a state-dict file (random_cnn, efficientnet_lite0, resnet18...)."
)
@click.option(
    "--extractor-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extractor keyword, e.g. input_size=224, in_channels=3, spatial_dims=3, seed=1: the file's when one is "
    "given, else every extractor's that takes it.",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "native", "2.5d"]),
    default="auto",
    show_default=True,
    help="3D images: through a 3D extractor (native) or as slices in three planes (2.5d).",
)
@click.option("--window", help="Intensity window LOW,HIGH (physical units) mapped to [0, 1]; pairs: clip range.")
@click.option("--data-range", type=float, help="Pairs: width of the intensity range (e.g. 4095 for CT HU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--batch-size", default=32, show_default=True, help="Extractor inputs per batch.")
@click.option(
    "--slices-per-plane",
    type=int,
    help="2.5D only: slices per plane and volume (default 32; 0: all). Refused when images are not scored as 2.5D.",
)
@click.option("--nearest-k", default=5, show_default=True, help="k of the precision/recall/density/coverage balls.")
@click.option("--kid-subset-size", default=1000, show_default=True)
@click.option("--kid-subsets", default=100, show_default=True)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of every random choice (subsets, pairs, voxels, floor halves)."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (never an input or a folder holding one).")
def evaluate(**kw) -> None:
    """Score generated images against real ones, or enhanced images against references.

    \b
    Sets:  medgan evaluate --real DIR --fake DIR [--train DIR] --out REPORT_DIR
    Pairs: medgan evaluate --pairs pairs.csv --out REPORT_DIR [--data-range 4095]

    Writes REPORT_DIR/metrics.json and a self-contained REPORT_DIR/report.html. Feature-based
    numbers are keyed by the extractor (fd_random_cnn, ...): they are not Inception FIDs. By default
    every installed offline extractor runs, side by side. Every distribution metric comes with its
    real-vs-real floor at the same sample sizes (--real-b, else --train, else two halves of --real)
    and the ratio. The summary printed first says whether the generated set is near its floor (FD
    within 2.5x, precision and recall at least 0.5x the floor's) on the most discriminative
    extractor: the one whose FD puts the generated set furthest beyond the gap between two real
    halves (its separation). The report's first screen shows the same, the separation figure, and
    with --train the generated samples beside their nearest training images. See
    docs/evaluation.md.
    """
    metrics = [m.strip() for m in kw["metrics"].split(",") if m.strip()] if kw["metrics"] else None
    window = _window(kw["window"])
    progress = not kw["no_progress"]
    if kw["pairs_csv"]:
        if kw["real"] or kw["fake"] or kw["train"] or kw["real_b"]:
            raise click.UsageError("--pairs cannot be combined with --real, --fake, --train or --real-b")
        ignored = _given(_SET_ONLY)
        if ignored:
            raise click.UsageError(f"{', '.join(ignored)} apply to --real/--fake sets, not to --pairs")
        if window is not None and kw["data_range"] is not None and kw["data_range"] != window[1] - window[0]:
            raise click.UsageError(
                f"--data-range {kw['data_range']:g} disagrees with --window (which is {window[1] - window[0]:g} "
                "wide and sets the range itself); give one of them"
            )
        from medgan.metrics.pairs import evaluate_pairs, summary_line

        record = evaluate_pairs(
            kw["pairs_csv"], kw["out"], metrics, kw["data_range"], window, progress, kw["overwrite"]
        )
        for name, stats in record["summary"].items():
            click.echo(f"{name:24s} {summary_line(stats)}")
    else:
        if not (kw["real"] and kw["fake"]):
            raise click.UsageError("give --real and --fake (or --pairs CSV)")
        if kw["data_range"] is not None:
            raise click.UsageError("--data-range applies to --pairs; sets use --window")
        from medgan.metrics.evaluate import evaluate_sets

        extractor, options = _extractors(kw["extractor"]), _options(kw["extractor_option"])
        if kw["extractor_file"]:
            if extractor is not None and "file" not in extractor:
                extractor = ["file", *extractor]
            options.update(path=kw["extractor_file"], sha256=kw["extractor_sha256"], architecture=kw["extractor_arch"])
        elif kw["extractor_sha256"] or kw["extractor_arch"]:
            raise click.UsageError("--extractor-sha256 and --extractor-arch go with --extractor-file")
        elif extractor is not None and "file" in extractor:
            raise click.UsageError("--extractor file needs --extractor-file PATH and --extractor-sha256 HEX")
        record = evaluate_sets(
            kw["real"],
            kw["fake"],
            kw["out"],
            train=kw["train"],
            real_b=kw["real_b"],
            metrics=metrics,
            extractor=extractor,
            extractor_options=options,
            mode=kw["mode"],
            window=window,
            device=_device(kw["device"]),
            batch_size=kw["batch_size"],
            slices_per_plane=kw["slices_per_plane"],
            nearest_k=kw["nearest_k"],
            kid_subset_size=kw["kid_subset_size"],
            kid_subsets=kw["kid_subsets"],
            seed=kw["seed"],
            progress=progress,
            overwrite=kw["overwrite"],
        )
        for line in record["summary"]["lines"]:
            click.echo(line)
        width = max(len(name) for name in record["metrics"]) + 2
        for name, value in record["metrics"].items():
            click.echo(f"{name:{width}s}{_short(value)}")
    for warning in record["warnings"]:
        click.echo(f"medgan: warning: {warning}", err=True)
    click.echo(os.path.join(kw["out"], "report.html"))


# Options that only sets use: refused with --pairs rather than silently ignored.
_SET_ONLY = (
    *("extractor", "extractor_file", "extractor_sha256", "extractor_arch", "extractor_option", "mode", "device"),
    *("batch_size", "slices_per_plane", "nearest_k", "kid_subset_size", "kid_subsets", "seed"),
)


def _given(names: tuple[str, ...]) -> list[str]:
    """The options among `names` that the command line set (as --option-names)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return [
        "--" + name.replace("_", "-") for name in names if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    ]


def _extractors(text: str) -> list[str] | None:
    """`--extractor a,b`: the names; auto: None (every installed offline extractor)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("name at least one extractor, or auto", param_hint="'--extractor'")
    if "auto" in names:
        if len(names) > 1:
            raise click.BadParameter("auto already means every installed extractor", param_hint="'--extractor'")
        return None
    return names


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        if "mean" in value and "std" in value:
            return f"{value['mean']:.6g} ± {value['std']:.2g}"
        if "value" in value:
            return f"{value['value']:.6g} {value.get('units', '')}".rstrip()
        if "floor" in value and "generated" in value:
            ratio = f" ({value['ratio']:.3g}x)" if value.get("ratio") is not None else ""
            return f"{value['generated']:.6g} vs floor {value['floor']:.6g}{ratio}"
        if "fraction_flagged" in value:
            return f"{value['flagged']}/{value['samples']} flagged ({100 * value['fraction_flagged']:.2f}%)"
        if "real" in value and "fake" in value:
            return f"real {value['real']['mean']:.4g}, fake {value['fake']['mean']:.4g}"
        return ", ".join(f"{k} {v:.4g}" for k, v in value.items() if isinstance(v, float))
    return str(value)
