"""`medgan train` and `medgan synthesize`."""

from __future__ import annotations

import os

import click

from medgan.cli import cli


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(path_type=str), help="YAML config (TrainConfig).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. train.steps=500.")
@click.option("--run-dir", type=click.Path(path_type=str), help="Run folder (default: runs/<config name>-NNNNN).")
@click.option(
    "--resume", is_flag=True, help="Continue the run in --run-dir (default: the newest) from its last checkpoint."
)
@click.option("--dry-run", is_flag=True, help="Print the resolved config and train nothing.")
def train(
    config_path: str | None, overrides: tuple[str, ...], run_dir: str | None, resume: bool, dry_run: bool
) -> None:
    """Train a GAN; prints the run folder (config.yaml, stats.jsonl, TensorBoard events, samples/, checkpoints/).

    Several GPUs or machines: start it under torchrun, e.g.
    `torchrun --nproc_per_node 8 -m medgan train -c configs/synth2d_256.yaml`.
    With --resume and no -c, the run folder's own config.yaml is used.
    A job slot: --set train.time_limit_minutes=230 stops in time with a checkpoint; --resume goes on.
    Every key is described in docs/training.md.
    """
    from medgan.config import dump_config, load_config
    from medgan.errors import ConfigError
    from medgan.training import TrainConfig
    from medgan.training import train as run_training

    if config_path is None and resume and run_dir:
        config_path = os.path.join(run_dir, "config.yaml")
    if config_path is None:
        raise ConfigError("pass a config with -c (see configs/), or --resume --run-dir DIR")
    cfg = load_config(TrainConfig, config_path, overrides)
    if dry_run:
        from medgan.tasks.networks import check_networks

        check_networks(cfg)  # an unknown network or a size it cannot take fails here too
        click.echo(dump_config(cfg), nl=False)
        return
    name = os.path.splitext(os.path.basename(config_path))[0]
    folder = run_training(cfg, run_dir=run_dir, resume=resume, name=name)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(folder)


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=str), help="A checkpoint (.pt) of medgan train.")
@click.option("-n", "count", type=click.IntRange(min=1), default=8, show_default=True, help="Scans to draw.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str), help="Output folder.")
@click.option("--format", "fmt", type=click.Choice(["nifti", "dicom", "png"]), default="nifti", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same scans.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--class", "class_index", type=int, help="Class to draw (class-conditional checkpoints).")
@click.option(
    "--input", "inputs", type=click.Path(path_type=str), help="Scans to translate (image-to-image checkpoints)."
)
@click.option(
    "--modality",
    type=click.Choice(["CT", "MR"]),
    help="For DICOM, when the training data (or the class drawn) recorded none, or mixes CT and MR.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option(
    "--whole-slab",
    is_flag=True,
    help="2.5D checkpoints: write every slice of each drawn slab as a thin volume (default: its middle).",
)
@click.option(
    "--truncation",
    "truncation_psi",
    type=click.FloatRange(0.0, 1.0),
    help="StyleGAN checkpoints: keep this fraction of each sample's distance from the mean style (its class's "
    "mean); below 1 gives more typical, plainer scans and less variety (1: none, 0: every scan the mean). "
    "Default: the checkpoint's generator option truncation_psi (configs/synth2d_64.yaml: 0.9), else 1.",
)
def synthesize(checkpoint: str, count: int, out_dir: str, fmt: str, seed: int, batch_size: int,
               class_index: int | None, inputs: str | None, modality: str | None, device: str,
               overwrite: bool, whole_slab: bool, truncation_psi: float | None) -> None:  # fmt: skip
    """Write synthetic scans with the training data's spacing and HU; DICOM is marked SyntheticData YES."""
    from medgan.inference import synthesize as run_synthesis

    paths = run_synthesis(checkpoint, count=count, out_dir=out_dir, format=fmt, seed=seed, batch_size=batch_size,
                          class_index=class_index, inputs=inputs, modality=modality, device=device,
                          overwrite=overwrite, whole_slab=whole_slab, truncation_psi=truncation_psi)  # fmt: skip
    for path in paths:
        click.echo(path)
