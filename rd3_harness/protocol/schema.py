"""The frozen evaluation protocol: pydantic models for every setting that decides an accuracy.

Every model is frozen, forbids unknown keys and uses tuples, so a loaded protocol cannot drift.
Alternatives (optimizers, schedules, losses, label providers, mixes, teacher sources) are
discriminated unions on a ``kind`` field. Metadata fields (``METADATA``) are the only ones left out
of the protocol hash.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

METADATA = frozenset({"name", "version", "description", "citation"})

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]


ADDED = "rd3_added_setting"


def added_setting(default, **kwargs):
    """A protocol field added after the hash rule was frozen (0.1). While it holds its default it
    is left out of the hash, so adding it changes no existing protocol's hash; set to anything
    else, it is hashed like every other setting. Every new field must be declared with this
    (`tests/test_protocol.py` pins the fields of 0.1)."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[ADDED] = True
    return Field(default, json_schema_extra=extra, **kwargs)


def is_added_setting(info) -> bool:
    """Whether a pydantic FieldInfo was declared with `added_setting`."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(ADDED))


class Frozen(BaseModel):
    """Base of every protocol model: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


# ---------------------------------------------------------------- dataset


class Normalization(Frozen):
    """Per-channel mean and std that map pixels in [0, 1] to model input."""

    mean: tuple[float, ...] = Field(min_length=1)
    std: tuple[PositiveFloat, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


class Dataset(Frozen):
    """Which registered dataset, at which square resolution, normalized how."""

    name: Name
    resolution: PositiveInt
    normalization: Normalization


# ---------------------------------------------------------------- optimization


class AdamW(Frozen):
    kind: Literal["adamw"] = "adamw"
    lr: PositiveFloat
    weight_decay: NonNegativeFloat = 0.01
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    no_decay_1d: bool = False
    """No weight decay on 1-d parameters (biases, norm weights), as RDED does."""


class Adam(Frozen):
    kind: Literal["adam"] = "adam"
    lr: PositiveFloat
    weight_decay: NonNegativeFloat = 0.0
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class SGD(Frozen):
    kind: Literal["sgd"] = "sgd"
    lr: PositiveFloat
    momentum: Probability = 0.9
    weight_decay: NonNegativeFloat = 0.0
    nesterov: bool = False
    no_decay_1d: bool = False


Optimizer = Annotated[Union[AdamW, Adam, SGD], Field(discriminator="kind")]


class _Schedule(Frozen):
    warmup_epochs: NonNegativeInt = 0
    """Linear warm-up from lr/(warmup+1) to lr over these epochs, then the schedule proper."""
    per: Literal["epoch", "step"] = "epoch"
    """Update the learning rate once per epoch (as the reference code does) or every step."""


class Cosine(_Schedule):
    """mu(e) = 1/2 (1 + cos(pi e / (zeta E))); zeta = 1 decays to 0, zeta = 2 ends at 0.5."""

    kind: Literal["cosine"] = "cosine"
    zeta: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0


class Step(_Schedule):
    kind: Literal["step"] = "step"
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1


class MultiStep(_Schedule):
    kind: Literal["multistep"] = "multistep"
    milestones: tuple[PositiveInt, ...] = Field(min_length=1)
    gamma: PositiveFloat = 0.1

    @model_validator(mode="after")
    def _increasing(self) -> MultiStep:
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError("milestones must be strictly increasing")
        return self


class Constant(_Schedule):
    kind: Literal["constant"] = "constant"


Schedule = Annotated[Union[Cosine, Step, MultiStep, Constant], Field(discriminator="kind")]


# ---------------------------------------------------------------- augmentation


class RandomResizedCrop(Frozen):
    scale: tuple[Probability, Probability] = (0.08, 1.0)
    ratio: tuple[PositiveFloat, PositiveFloat] = (3 / 4, 4 / 3)

    @model_validator(mode="after")
    def _ordered(self) -> RandomResizedCrop:
        if self.scale[0] <= 0 or self.scale[0] > self.scale[1]:
            raise ValueError("scale must satisfy 0 < low <= high <= 1")
        if self.ratio[0] > self.ratio[1]:
            raise ValueError("ratio must satisfy low <= high")
        return self


class RandomCrop(Frozen):
    """Random crop back to the input size after zero padding on every side."""

    padding: PositiveInt = 4


class ShufflePatches(Frozen):
    """RDED's ShufflePatches: permute `factor` strips along width, then along height."""

    factor: Annotated[int, Field(ge=2)] = 2


class NoMix(Frozen):
    kind: Literal["none"] = "none"


class CutMix(Frozen):
    kind: Literal["cutmix"] = "cutmix"
    alpha: PositiveFloat = 1.0
    prob: Probability = 1.0


class MixUp(Frozen):
    kind: Literal["mixup"] = "mixup"
    alpha: PositiveFloat = 0.8
    prob: Probability = 1.0


Mix = Annotated[Union[NoMix, CutMix, MixUp], Field(discriminator="kind")]


class Augmentation(Frozen):
    """Applied in this fixed order: shuffle_patches, random_resized_crop, random_crop, flip, mix."""

    shuffle_patches: ShufflePatches | None = None
    random_resized_crop: RandomResizedCrop | None = None
    random_crop: RandomCrop | None = None
    horizontal_flip: bool = False
    mix: Mix = NoMix()


# ---------------------------------------------------------------- teachers


class TeacherRecipe(Frozen):
    """How the core trains a teacher on the real training set."""

    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Optimizer
    schedule: Schedule = Cosine()
    augmentation: Augmentation = Augmentation()
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: Seed = 0
    images_per_class: PositiveInt | None = None
    """Train on this many images per class, drawn with `seed` (small CPU protocols); None: all."""


class TrainedTeacher(Frozen):
    kind: Literal["trained"] = "trained"
    architecture: Name
    recipe: TeacherRecipe


class FileTeacher(Frozen):
    """A state dict supplied by the user, identified by its sha256 (file found by name at run time)."""

    kind: Literal["file"] = "file"
    architecture: Name
    filename: Name
    sha256: Sha256


class TorchvisionTeacher(Frozen):
    """torchvision pretrained weights by enum name (used only when present in the local cache)."""

    kind: Literal["torchvision"] = "torchvision"
    architecture: Name
    weights: Name


Teacher = Annotated[Union[TrainedTeacher, FileTeacher, TorchvisionTeacher], Field(discriminator="kind")]


# ---------------------------------------------------------------- labels and losses


class _TeacherLabels(Frozen):
    teachers: tuple[Teacher, ...] = ()
    """Teachers that label; empty means the protocol's `teacher`. Several = hybrid labels."""
    combine: Literal["mean", "norm_mean"] = "mean"
    """How several teachers' logits combine: plain mean, or mean after rescaling each to the mean
    Frobenius norm (G-VBSM)."""


class HardLabels(Frozen):
    kind: Literal["hard"] = "hard"


class StaticSoftLabels(_TeacherLabels):
    """One soft label per synthetic image, computed once on the un-augmented image."""

    kind: Literal["static"] = "static"
    source: Literal["teacher", "method"] = "teacher"
    """`method` uses the plugin's own soft labels (an explicit protocol choice)."""


class OnlineSoftLabels(_TeacherLabels):
    """Epoch-wise soft labels: the teacher relabels every augmented, mixed batch."""

    kind: Literal["online"] = "online"


class FKDLabels(_TeacherLabels):
    """FKD replay: augmentation parameters and logits are drawn with `seed`, precomputed for every
    epoch, stored in `dtype` and replayed identically for every student and seed."""

    kind: Literal["fkd"] = "fkd"
    seed: Seed = 42
    dtype: Literal["fp16", "fp32"] = "fp16"


Labels = Annotated[Union[HardLabels, StaticSoftLabels, OnlineSoftLabels, FKDLabels], Field(discriminator="kind")]


class CELoss(Frozen):
    """Cross-entropy on the (mixed) hard labels."""

    kind: Literal["ce"] = "ce"


class KLLoss(Frozen):
    """KL(teacher || student) at temperature T, batch mean; times T^2 when `t_squared`."""

    kind: Literal["kl"] = "kl"
    temperature: PositiveFloat = 1.0
    t_squared: bool = False


class SoftCELoss(Frozen):
    """Cross-entropy against the teacher's softmax at temperature T."""

    kind: Literal["soft_ce"] = "soft_ce"
    temperature: PositiveFloat = 1.0


class MSECELoss(Frozen):
    """MSE between student and teacher logits + gamma * CE on the un-mixed hard label (G-VBSM)."""

    kind: Literal["mse_ce"] = "mse_ce"
    gamma: NonNegativeFloat = 0.025


Loss = Annotated[Union[CELoss, KLLoss, SoftCELoss, MSECELoss], Field(discriminator="kind")]


# ---------------------------------------------------------------- evaluation


class Student(Frozen):
    """One student architecture; optimizer, schedule and batch size override the evaluation's."""

    architecture: Name
    optimizer: Optimizer | None = None
    schedule: Schedule | None = None
    batch_size: PositiveInt | None = None


class Report(Frozen):
    """Which accuracy is reported. `best` selects on the test set and is flagged in every record."""

    mode: Literal["final", "best"] = "final"
    every: PositiveInt = 10
    """With `best`: evaluate every this many epochs..."""
    last_fraction: Annotated[float, Field(gt=0, le=1)] = 0.2
    """...within this last fraction of training (RDED: every 10 epochs in the last 20%)."""


class Evaluation(Frozen):
    students: tuple[Student, ...] = Field(min_length=1)
    labels: Labels
    loss: Loss
    optimizer: Optimizer
    schedule: Schedule = Cosine()
    augmentation: Augmentation = Augmentation()
    epochs: PositiveInt
    batch_size: PositiveInt
    student_ema: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Evaluate an exponential moving average of the student's weights with this decay."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    seeds: tuple[Seed, ...] = Field(min_length=1)
    report: Report = Report()
    storage_dtype: Literal["uint8", "float32"] = added_setting("uint8")
    """How a synthetic set is stored, and so what the students are trained on: `uint8` pixels
    (clamped to [0, 1] and rounded, as the original repositories save PNG/JPEG) or the method's
    float32 model-input values, for methods whose result needs them. An evaluation setting: it
    changes the evaluation input, not what the method computes."""

    @model_validator(mode="after")
    def _consistent(self) -> Evaluation:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        hard = self.labels.kind == "hard"
        if hard and self.loss.kind != "ce":
            raise ValueError(f"hard labels need loss kind 'ce', not {self.loss.kind!r}")
        if not hard and self.loss.kind == "ce":
            raise ValueError(
                f"loss 'ce' trains on hard labels; with {self.labels.kind!r} labels use kl, soft_ce or mse_ce"
            )
        names = [s.architecture for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError("each student architecture may appear once")
        for s in self.students:
            schedule = s.schedule or self.schedule
            _check_schedule(schedule, self.epochs)
        if self.labels.kind == "fkd" and any(s.batch_size not in (None, self.batch_size) for s in self.students):
            raise ValueError("FKD labels replay one batch stream; students cannot override the batch size")
        return self


def _check_schedule(schedule: Cosine | Step | MultiStep | Constant, epochs: int) -> None:
    if schedule.warmup_epochs >= epochs:
        raise ValueError(f"warmup_epochs ({schedule.warmup_epochs}) must be below epochs ({epochs})")
    if isinstance(schedule, MultiStep) and schedule.milestones[-1] > epochs:
        raise ValueError(f"milestone {schedule.milestones[-1]} is beyond epochs ({epochs})")


# ---------------------------------------------------------------- the protocol


class Protocol(Frozen):
    """A frozen evaluation protocol. Everything but the metadata is hashed."""

    name: Name
    version: str = "1"
    description: str = ""
    citation: str | None = None

    dataset: Dataset
    ipc: PositiveInt
    """Images per class the method must produce."""
    teacher: Teacher
    """The evaluation teacher: soft labels come from it unless `evaluation.labels.teachers` says
    otherwise; single-teacher methods synthesize with it."""
    synthesis_teachers: tuple[Teacher, ...] = ()
    """Teachers offered to multi-teacher methods (G-VBSM, EDC); empty means none."""
    synthesis_seed: Seed = 0
    evaluation: Evaluation

    @model_validator(mode="after")
    def _recipe_fits(self) -> Protocol:
        for t in (self.teacher, *self.synthesis_teachers):
            if isinstance(t, TrainedTeacher):
                _check_schedule(t.recipe.schedule, t.recipe.epochs)
        if self.dataset.resolution < 8:
            raise ValueError("dataset.resolution must be at least 8 pixels")
        return self
