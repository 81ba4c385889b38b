"""The training config: one validated tree, read once at the edge (`medgan train -c CONFIG`).

Every section has defaults, so a YAML file holds only what differs. `docs/training.md`
describes every key; the debug and GPU configs in `configs/` are worked examples.

    from medgan.config import load_config
    from medgan.tasks.config import TrainConfig
    cfg = load_config(TrainConfig, "configs/debug_cpu_unconditional.yaml", ["train.steps=20"])

The `loss` section holds the shared adversarial settings and the task's own options: validation
picks the model for the config's task (`TrainConfig.model_for`), so `cfg.loss` of a pix2pix run has
`reconstruction_weight` and that of a cyclegan run `cycle_weight`, and neither accepts the other's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, create_model, field_validator, model_validator

from medgan.config import Section
from medgan.data.degradations import DEGRADATIONS
from medgan.errors import ConfigError
from medgan.tasks.base import TASKS

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DegradeConfig",
    "LossConfig",
    "NetworkConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "architecture_of",
    "build_degradation",
    "validate_config",
]

AUGMENT_OPS = ("flip", "rot90", "translate", "scale", "cutout", "intensity")


class NetworkConfig(Section):
    """A network by registry name; `options` are its builder's keyword arguments.

    `spatial_dims` and, where the builder takes them and `options` leaves them out,
    `image_size`, `in_channels`, `out_channels`, `num_classes` and `num_labels` are filled
    in from the data, so a config names each size once.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DegradeConfig(Section):
    """A degradation (`medgan.data.degradations`) that makes each sample's input from its clean image, on the
    training device: a clean set becomes (degraded, clean) pairs with fresh parameters every step."""

    kind: str  # a registered degradation: ct-lowdose, mr-undersample, mr-noise, thick-slices, ...
    severity: float | tuple[float, float] | None = None  # 0 mild .. 1 severe, or a [low, high] range drawn per sample
    params: dict[str, Any] = Field(default_factory=dict)  # explicit physical parameters: a number or [low, high]
    # Cut each degraded pair into a patch of this size (voxels) at a random tissue voxel: the simulator sees the
    # whole sample (a CT projection must see the whole body) while the networks train on tissue. None: whole.
    patch_size: list[int] | None = None
    patches_per_sample: int = Field(default=1, ge=1)  # patches cut from each degraded sample (the batch grows so)

    @model_validator(mode="after")
    def _buildable(self) -> DegradeConfig:
        build_degradation(self)  # an unknown kind, parameter or range fails here, with its valid values
        return self


def build_degradation(config: DegradeConfig) -> Any:
    """The degradation a `DegradeConfig` names; resolution losses come back onto the input grid, as pairs need."""
    try:
        kind = DEGRADATIONS.get(config.kind)
        params = dict(config.params)
        if kind.changes_grid:
            params.setdefault("back_to_input_grid", True)
        return kind(severity=config.severity, **params)
    except ConfigError as err:
        raise ValueError(str(err)) from None


class DataConfig(Section):
    """Where the scans are and how one training sample is cut from them."""

    source: str = "sample_data"  # a folder of NIfTI/DICOM, or a CSV (columns: image, label, source, label_map)
    source_b: str | None = None  # cyclegan: the second domain (a folder or a CSV with an image column)
    spatial_dims: Literal[2, 3] = 2  # 2: slices (2D images are used whole); 3: volumes or patches
    image_size: list[int] = Field(default_factory=lambda: [64, 64])  # voxels per axis of one sample
    spacing_mm: list[float] | None = None  # resample to this voxel size (mm): in-plane for 2D; None keeps it
    slice_axis: Literal[0, 1, 2] = 2  # 2D from 3D scans: the axis slices are cut across (2: axial in RAS)
    slab_slices: int = Field(default=1, ge=1)  # 2D: neighbouring slices stacked as channels (odd; 1 = single)
    slice_range: tuple[float, float] = (0.0, 1.0)  # 2D: the part of each volume slices come from (fractions)
    min_foreground_fraction: float = Field(default=0.05, ge=0.0, le=1.0)  # skip slices with less tissue
    window: tuple[float, float] | None = None  # physical units mapped to [-1, 1] (HU for CT); None: percentiles
    window_percentiles: tuple[float, float] = (0.5, 99.5)  # used when window is None
    source_window: tuple[float, float] | None = None  # pix2pix: window of the input images; None: percentiles
    crop: Literal["random", "center", "mask"] = "random"  # how a sample is cut: mask centres it on the mask column
    cache: Literal["memory", "disk", "none"] = "memory"  # MONAI CacheDataset, PersistentDataset, or neither
    cache_dir: str | None = None  # for cache: disk; default <run folder>/cache
    num_workers: int = Field(default=0, ge=0)  # DataLoader worker processes per training process
    degrade: DegradeConfig | None = None  # pix2pix: make each source by degrading its image (no source column)
    validation: str | None = None  # held-out scans (another subject): a folder or CSV, scored during training
    validation_samples: int = Field(default=32, ge=1)  # samples of the held-out scans scored each time

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: list[int]) -> list[int]:
        if not size or min(size) < 1:
            raise ValueError("needs one positive voxel count per axis")
        return size

    @field_validator("slab_slices")
    @classmethod
    def _odd_slab(cls, slab: int) -> int:
        if slab % 2 == 0:
            raise ValueError("must be odd, so that a slab has a middle slice")
        return slab

    @model_validator(mode="after")
    def _axes_match(self) -> DataConfig:
        if len(self.image_size) != self.spatial_dims:
            raise ValueError(f"image_size {self.image_size} needs {self.spatial_dims} values for spatial_dims")
        if self.spacing_mm is not None and (len(self.spacing_mm) != self.spatial_dims or min(self.spacing_mm) <= 0):
            raise ValueError(f"spacing_mm needs {self.spatial_dims} positive values (mm), got {self.spacing_mm}")
        low, high = self.slice_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"slice_range {list(self.slice_range)} must satisfy 0 <= low < high <= 1")
        for name in ("window", "source_window"):
            value = getattr(self, name)
            if value is not None and not value[0] < value[1]:
                raise ValueError(f"{name} {list(value)} must be [low, high] with low < high")
        return self


class LossConfig(Section):
    """The objective: adversarial loss and regularization, shared by every task. Each task adds its own
    options to this section (`medgan.tasks.<task>`'s `Options`, e.g. pix2pix's `reconstruction_weight`,
    cyclegan's `cycle_weight`); a key of another task's is an error naming the valid ones."""

    gan: Literal["logistic", "hinge", "lsgan", "wgan-gp"] = "logistic"  # logistic: non-saturating
    r1_gamma: float = Field(default=0.0, ge=0.0)  # R1 penalty weight on real images; 0 is off
    r1_interval_steps: int = Field(default=16, ge=1)  # lazy R1: every this many steps, scaled up to match
    gp_weight: float = Field(default=10.0, ge=0.0)  # wgan-gp gradient penalty weight
    # L1 of a discriminator's self-supervised decoder on real inputs (resnet's reconstruction_head; else unused)
    d_reconstruction_weight: float = Field(default=1.0, ge=0.0)


class AugmentConfig(Section):
    """DiffAugment on everything the discriminator sees; ADA tunes the probability."""

    ops: list[str] = Field(default_factory=list)  # any of flip, rot90, translate, scale, cutout, intensity
    p: float = Field(default=0.0, ge=0.0, le=1.0)  # probability of each op per sample (ADA's start value)
    ada_target: float | None = Field(default=None, gt=0.0, lt=1.0)  # E[sign D(real)] to hold; None: fixed p
    ada_speed_images: int = Field(default=500_000, ge=1)  # images for p to move by 1
    ada_interval_steps: int = Field(default=4, ge=1)
    translate_fraction: float = Field(default=0.125, ge=0.0, le=0.5)  # of the smallest field of view
    scale_log2_sd: float = Field(default=0.2, ge=0.0)  # isotropic zoom, log2 standard deviation
    cutout_fraction: float = Field(default=0.5, gt=0.0, le=1.0)  # cube side / field of view
    brightness_sd: float = Field(default=0.1, ge=0.0)  # additive, in normalized units ([-1, 1] data)
    contrast_log2_sd: float = Field(default=0.5, ge=0.0)

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: list[str]) -> list[str]:
        for op in ops:
            if op not in AUGMENT_OPS:
                raise ValueError(f"unknown augmentation {op!r} (valid: {', '.join(AUGMENT_OPS)})")
        return ops


class OptimConfig(Section):
    """Adam for both players; the learning rate can decay linearly to 0 at the end."""

    optimizer: Literal["adam", "adamw"] = "adam"
    g_lr: float = Field(default=2e-4, gt=0.0)
    d_lr: float = Field(default=2e-4, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(default=0.0, ge=0.0)
    grad_clip_norm: float | None = Field(default=None, gt=0.0)  # clip each player's gradient norm; None: off
    lr_decay_start: float | None = Field(default=None, ge=0.0, lt=1.0)  # fraction of steps; then linear to 0
    fused: bool | Literal["auto"] = "auto"  # fused Adam kernels (auto: on for CUDA and CPU)


class RunConfig(Section):
    """Length, batch, device, precision, EMA and how often to log, sample and checkpoint."""

    steps: int = Field(default=10_000, ge=1)  # optimizer steps for each player
    batch_size: int = Field(default=16, ge=1)  # per process (GPU); images per step = batch_size x world size
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    channels_last: bool | Literal["auto"] = "auto"  # channels-last memory layout (auto: on with CUDA)
    compile: bool = False  # torch.compile the networks (first steps slower; GPU)
    time_limit_minutes: float | None = Field(default=None, gt=0.0)  # stop early, checkpointed; --resume goes on
    ema_halflife_images: float = Field(default=10_000, ge=0.0)  # generator EMA; 0 copies the weights
    ema_rampup_ratio: float | None = Field(default=0.05, gt=0.0)  # halflife <= ratio x images seen
    log_every_steps: int = Field(default=50, ge=1)
    sample_every_steps: int = Field(default=500, ge=1)
    checkpoint_every_steps: int = Field(default=1000, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)  # the newest this many are kept
    num_samples: int = Field(default=8, ge=1)  # images in each sample grid
    validate_every_steps: int = Field(default=500, ge=1)  # score the held-out pairs (data.validation)
    tensorboard: bool = True


class TrainConfig(Section):
    """Everything `medgan train` needs. Validate through `load_config` or `validate_config`, which pick the
    subclass whose `loss` section holds the config's task options (`model_for`)."""

    task: str = "unconditional"  # a task: unconditional, conditional, pix2pix, label2image, cyclegan, ...
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    generator: NetworkConfig = Field(default_factory=lambda: NetworkConfig(name="resgen"))
    discriminator: NetworkConfig = Field(default_factory=lambda: NetworkConfig(name="resnet"))
    loss: SerializeAsAny[LossConfig] = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: RunConfig = Field(default_factory=RunConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(TASKS.unknown_message(task))
        return task

    @model_validator(mode="after")
    def _task_takes_its_data(self) -> TrainConfig:
        task = TASKS.get(self.task)
        if self.data.degrade is not None and task.simulates is None:
            takers = [name for name in TASKS.names() if TASKS.get(name).simulates]
            raise ValueError(f"data.degrade makes a task's input from its image, which task {self.task} does not take "
                             f"(tasks that do: {', '.join(takers)})")  # fmt: skip
        patch = self.data.degrade.patch_size if self.data.degrade is not None else None
        sizes = self.data.image_size
        fits = patch is None or len(patch) == len(sizes)
        fits = fits and (patch is None or all(1 <= p <= n for p, n in zip(patch, sizes, strict=True)))
        if not fits:
            raise ValueError(f"data.degrade.patch_size {patch} needs {self.data.spatial_dims} sizes, each from 1 to "
                             f"data.image_size {self.data.image_size}")  # fmt: skip
        if self.data.validation is not None and task.target is None:
            raise ValueError(f"data.validation scores a task's output against a paired target; task {self.task} "
                             "has none")  # fmt: skip
        return self

    @classmethod
    def model_for(cls, data: Mapping[str, Any]) -> type[TrainConfig]:
        """The model that validates `data`: this one with the `loss` section of `data`'s task."""
        task = data.get("task", "unconditional") if isinstance(data, Mapping) else None
        return _task_config(task) if isinstance(task, str) and task in TASKS else cls


@functools.cache
def _task_config(task: str) -> type[TrainConfig]:
    options = TASKS.get(task).Options
    loss = create_model(f"LossConfig_{task}", __base__=(options, LossConfig), __doc__=LossConfig.__doc__)
    return create_model(f"TrainConfig_{task}", __base__=TrainConfig,
                        loss=(SerializeAsAny[loss], Field(default_factory=loss)))  # fmt: skip


def validate_config(data: Mapping[str, Any]) -> TrainConfig:
    """A stored or hand-made config dict -> a validated TrainConfig with its task's options (pydantic's
    ValidationError when it does not fit)."""
    return TrainConfig.model_for(data).model_validate(data)


def architecture_of(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a (dumped) config that fixes the networks' shapes: what a checkpoint must match."""
    data = config.get("data", {})
    return {
        "task": config.get("task"),
        "generator": config.get("generator"),
        "discriminator": config.get("discriminator"),
        "data.spatial_dims": data.get("spatial_dims"),
        "data.image_size": data.get("image_size"),
        "data.slab_slices": data.get("slab_slices"),
    }
