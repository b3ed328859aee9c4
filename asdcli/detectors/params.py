"""Hyper-parameters of the detectors and of the training loop, as pydantic models.

This module must stay free of torch and scikit-learn imports: the settings model embeds these
sections, and ``asd --help`` must answer instantly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A settings section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # The hyper-parameter search space of `asd tune`, as plain data: field name ->
    # {"low", "high"[, "log", "step"]} or {"choices": [...]} (checked by asdcli.tune.space).
    space: ClassVar[dict[str, dict[str, Any]]] = {}


class TrainParams(Section):
    """Shared by every neural detector: the loop, not the model."""

    epochs: int = Field(
        30, ge=0, description="Maximum training epochs (early stopping may end sooner)."
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="Mini-batch size in training windows (crops, patches, sequences); "
        "dcase-ae uses its own batch_size in vectors.",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    val_split: float = Field(0.1, ge=0, lt=1, description="Fraction of training clips held out.")
    patience: int = Field(
        5, ge=1, description="Epochs without val-loss improvement before stopping."
    )
    seed: int = Field(0, ge=0, description="Seeds Python, NumPy and torch.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA if present."
    )
    threshold_percentile: float = Field(
        0.9, gt=0, lt=1, description="Gamma-fit percentile of training scores used as threshold."
    )
    # Augmentation (training only). null = the detector's own default: off for the
    # autoencoders, on for emb-knn (its recipe uses mixup and SpecAugment).
    mixup: float | None = Field(
        None,
        ge=0,
        description="Mixup Beta(alpha, alpha) parameter; 0 = off, null = the detector's default.",
    )
    time_mask: int | None = Field(
        None,
        ge=0,
        description="SpecAugment: mask up to this many consecutive frames of each training "
        "window; 0 = off, null = the detector's default.",
    )
    freq_mask: int | None = Field(
        None,
        ge=0,
        description="SpecAugment: mask up to this many consecutive mel bands of each training "
        "window; 0 = off, null = the detector's default.",
    )

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "epochs": {"low": 5, "high": 50},
        "batch_size": {"choices": [32, 64, 128, 256]},
    }


class FCAEParams(Section):
    """Fully connected autoencoder on a flattened, fixed-length crop of the log-mel clip."""

    frames: int = Field(64, ge=1, description="Frames per crop; clips are scored over all crops.")
    hop: int | None = Field(None, ge=1, description="Frames between crops; null = frames // 2.")
    hidden: list[int] = Field(default_factory=lambda: [2048, 1024], description="Encoder widths.")
    bottleneck: int = Field(512, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "frames": {"choices": [32, 64, 128]},
        "hidden": {"choices": [[256, 128], [512, 256], [1024, 512], [2048, 1024]]},
        "bottleneck": {"choices": [64, 128, 256, 512]},
        "dropout": {"low": 0.0, "high": 0.5},
    }


class ConvAEParams(Section):
    """Convolutional autoencoder on 1 x n_mels x T patches."""

    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128])
    bottleneck: int = Field(512, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    frames: int = Field(64, ge=16, description="Patch length in frames; clips are windowed.")
    hop: int | None = Field(None, ge=1, description="Frames between patches; null = frames // 2.")

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "channels": {"choices": [[8, 16, 32, 64], [16, 32, 64, 128], [32, 64, 128, 256]]},
        "bottleneck": {"choices": [128, 256, 512]},
        "frames": {"choices": [32, 64, 128]},
    }


class LSTMAEParams(Section):
    """LSTM autoencoder over T steps x n_mels."""

    hidden: int = Field(256, ge=1)
    layers: int = Field(2, ge=1)
    bottleneck: int = Field(128, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    frames: int = Field(64, ge=2, description="Sequence length in frames; clips are windowed.")
    hop: int | None = Field(None, ge=1, description="Frames between windows; null = frames // 2.")

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "hidden": {"choices": [64, 128, 256]},
        "bottleneck": {"choices": [32, 64, 128]},
        "frames": {"choices": [32, 64, 128]},
    }


class LOFParams(Section):
    """scikit-learn LocalOutlierFactor(novelty=True) on pooled clip statistics."""

    n_neighbors: int = Field(20, ge=1)
    metric: str = "minkowski"

    space: ClassVar[dict[str, dict[str, Any]]] = {"n_neighbors": {"low": 2, "high": 50}}


class IForestParams(Section):
    """scikit-learn IsolationForest on pooled clip statistics."""

    n_estimators: int = Field(200, ge=1)
    max_samples: int | Literal["auto"] = "auto"
    contamination: float | Literal["auto"] = "auto"

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "n_estimators": {"low": 50, "high": 400, "step": 50}
    }


class DCASEAEParams(Section):
    """The DCASE 2023 Task 2 baseline autoencoder."""

    context: int = Field(5, ge=1, description="Frames concatenated into one input vector.")
    hidden: int = Field(128, ge=1)
    bottleneck: int = Field(8, ge=1)
    score: Literal["mse", "mahalanobis"] = "mse"
    batch_size: int = Field(256, ge=1, description="Vectors per batch (the baseline's 256).")
    ridge: float = Field(
        0.0,
        ge=0,
        description="Mahalanobis only: added to the covariance diagonal, relative to its mean "
        "variance, before the pseudo-inverse; 0 is the baseline.",
    )

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "context": {"low": 1, "high": 9, "step": 2},
        "hidden": {"choices": [64, 128, 256]},
        "bottleneck": {"choices": [4, 8, 16]},
        "batch_size": {"choices": [128, 256, 512]},
    }


class EmbKNNParams(Section):
    """Auxiliary-classification embedding network + k nearest neighbours (all machines at once)."""

    frames: int = Field(64, ge=8, description="Window length in frames; a clip is windowed.")
    hop: int | None = Field(None, ge=1, description="Frames between windows; null = frames // 2.")
    channels: list[int] = Field(
        default_factory=lambda: [8, 16, 32, 64], description="Channels of the CNN blocks."
    )
    embedding: int = Field(128, ge=2, description="Embedding size.")
    pooling: Literal["mean", "mean_max"] = Field(
        "mean_max", description="Pooling over time of the last feature map (mean_max adds the max)."
    )
    loss: Literal["arcface", "adacos"] = Field(
        "adacos", description="Angular-margin loss (adacos = sub-cluster AdaCos)."
    )
    margin: float = Field(0.2, ge=0, lt=1, description="ArcFace additive angular margin.")
    scale: float = Field(16.0, gt=0, description="ArcFace logit scale.")
    sub_clusters: int = Field(4, ge=1, description="AdaCos centres per class.")
    classes: Literal["attributes", "section"] = Field(
        "attributes",
        description="What the network classifies: machine x section x attribute values, or "
        "machine x section only. Clips without attributes always use machine x section.",
    )
    self_supervised: Literal["auto", "none", "exposure", "shift", "stretch", "shift_stretch"] = (
        Field(
            "auto",
            description="Self-supervised task crossed with the classes from the names: classify "
            "pitch-like frequency shifts of each window (shift, 5 classes), time stretches "
            "(stretch, 3), both (shift_stretch, 15), or only statistics exposure's exposed "
            "twins (exposure). auto: none when the names give two or more classes (one machine "
            "type without attributes or sections gives one), else shift. none: names only.",
        )
    )
    k: int = Field(1, ge=1, description="Neighbours averaged for the cosine distance.")
    exposure: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Statistics exposure: this share of each batch gets another window's "
        "per-band means over time and is labelled as an extra 'exposed' class of its own, so "
        "the embedding must notice spectral-level changes (0 = off).",
    )
    density_norm: bool = Field(
        False,
        description="Divide each bank's distances by the mean distance between its own "
        "training clips (leave-one-out), so a sparse target bank and a dense source bank "
        "give comparable scores (LOF-like).",
    )
    source_means: int = Field(
        16,
        ge=0,
        description="Replace each section's source bank by this many k-means centres, so the "
        "dense source bank and the sparse target bank give distances on one scale (0 = off).",
    )
    oversample_target: int = Field(
        0,
        ge=0,
        description="SMOTE-style: extra target embeddings interpolated between pairs of target "
        "training clips of a section (0 = off).",
    )

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "embedding": {"choices": [64, 128, 256]},
        "k": {"low": 1, "high": 5},
        "loss": {"choices": ["arcface", "adacos"]},
        "frames": {"choices": [32, 64, 128]},
    }


class KNNParams(Section):
    """k nearest neighbours on pooled log-mel statistics, per section, source and target banks."""

    k: int = Field(1, ge=1, description="Neighbours averaged for the distance.")
    metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="Distance between standardised vectors."
    )
    pooling: list[Literal["mean", "std", "max"]] = Field(
        default_factory=lambda: ["mean", "max"],  # type: ignore[arg-type]
        min_length=1,
        description="Statistics over time of each mel band, concatenated (mean, std, max).",
    )

    @field_validator("pooling")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"pooling lists a statistic twice: {value}")
        return value

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"low": 1, "high": 10},
        "metric": {"choices": ["euclidean", "cosine"]},
    }


class GMMParams(Section):
    """scikit-learn GaussianMixture on time-pooled log-mel statistics per machine type."""

    n_components: int = Field(2, ge=1, description="Mixture components (clipped to n_train).")
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "diag"
    reg_covar: float = Field(1e-3, gt=0, description="Added to the covariance diagonal.")
    pooling: Literal["mean_std", "mean_std_max"] = Field(
        "mean_std", description="Statistics pooled over time per mel band."
    )

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "n_components": {"low": 1, "high": 16},
        "covariance_type": {"choices": ["full", "tied", "diag", "spherical"]},
    }


class VAEParams(Section):
    """Variational autoencoder on vectors of ``context`` consecutive frames."""

    context: int = Field(5, ge=1, description="Frames concatenated into one input vector.")
    hop: int = Field(1, ge=1, description="Frames between input vectors.")
    hidden: list[int] = Field(default_factory=lambda: [256, 128], description="Encoder widths.")
    latent: int = Field(16, ge=1, description="Latent dimension.")
    beta: float = Field(1.0, ge=0, description="Weight of the KL term in the ELBO.")
    score: Literal["elbo", "recon"] = Field(
        "elbo", description="Negative ELBO (deterministic, at the posterior mean) or MSE."
    )
    batch_size: int = Field(256, ge=1, description="Vectors per batch.")

    space: ClassVar[dict[str, dict[str, Any]]] = {
        "context": {"low": 1, "high": 9, "step": 2},
        "hidden": {"choices": [[128, 64], [256, 128], [512, 256]]},
        "latent": {"choices": [4, 8, 16, 32]},
        "beta": {"low": 0.1, "high": 4.0, "log": True},
    }


class EnsembleParams(Section):
    """Average of member runs' scores, each standardised by its own training scores."""

    members: list[str] = Field(
        default_factory=list,
        description="Run folders, run names under paths.runs, or detector names (trained "
        "inline); a comma-separated string is split.",
    )
    weights: list[float] | None = Field(
        None, description="One weight per member; null = equal weights."
    )

    @field_validator("members", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # `-p members=A,B` and `--members A,B` arrive as one string.
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value


class DetectorParams(Section):
    """One section per detector; keys use underscores (``conv_ae``) where names use dashes."""

    fc_ae: FCAEParams = Field(default_factory=FCAEParams)
    conv_ae: ConvAEParams = Field(default_factory=ConvAEParams)
    lstm_ae: LSTMAEParams = Field(default_factory=LSTMAEParams)
    lof: LOFParams = Field(default_factory=LOFParams)
    iforest: IForestParams = Field(default_factory=IForestParams)
    dcase_ae: DCASEAEParams = Field(default_factory=DCASEAEParams)
    emb_knn: EmbKNNParams = Field(default_factory=EmbKNNParams)
    gmm: GMMParams = Field(default_factory=GMMParams)
    knn: KNNParams = Field(default_factory=KNNParams)
    vae: VAEParams = Field(default_factory=VAEParams)
    ensemble: EnsembleParams = Field(default_factory=EnsembleParams)
