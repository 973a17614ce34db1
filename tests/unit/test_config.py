import pytest
import yaml

from refexp.config import ConfigError, load_config, parse_config
from refexp.paths import Paths
from tests.conftest import REPO_ROOT, deep_merge


def _raw():
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repo_params_load():
    cfg = load_config(REPO_ROOT / "params.yaml")
    assert cfg.synthetic.image_width == 128
    assert cfg.dataset("referit").source == "synthetic"


def test_unknown_key_is_named():
    raw = deep_merge(_raw(), {"synthetic": {"n_imags": 3}})
    with pytest.raises(ConfigError, match=r"synthetic\.n_imags: unknown key"):
        parse_config(raw)


def test_unknown_section_is_named():
    raw = deep_merge(_raw(), {"trainig": {"steps": 3}})
    with pytest.raises(ConfigError, match=r"trainig: unknown key"):
        parse_config(raw)


def test_wrong_type_is_named():
    raw = deep_merge(_raw(), {"synthetic": {"n_images": "many"}})
    with pytest.raises(ConfigError, match=r"synthetic\.n_images: .*integer"):
        parse_config(raw)


def test_float_for_int_is_refused():
    raw = deep_merge(_raw(), {"run": {"seed": 1.5}})
    with pytest.raises(ConfigError, match=r"run\.seed"):
        parse_config(raw)


def test_cross_field_rule():
    raw = deep_merge(_raw(), {"synthetic": {"min_objects": 5, "max_objects": 3}})
    with pytest.raises(ConfigError, match="min_objects must be <= max_objects"):
        parse_config(raw)


def test_local_source_needs_root():
    raw = deep_merge(_raw(), {"datasets": {"referit": {"format": "referit", "source": "local"}}})
    with pytest.raises(ConfigError, match=r"datasets\.referit.*root"):
        parse_config(raw)


def test_unknown_dataset_reference():
    raw = deep_merge(_raw(), {"prepare_referit": {"datasets": ["nope"]}})
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        parse_config(raw)


def test_config_is_frozen():
    cfg = parse_config(_raw())
    with pytest.raises(Exception):
        cfg.run.seed = 3


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "params.yaml")


def test_bad_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "params.yaml")


def test_paths_are_derived_from_params():
    raw = deep_merge(_raw(), {"paths": {"data": "elsewhere"}})
    paths = Paths.from_config(parse_config(raw), root="/r")
    assert str(paths.raw("referit")) == "/r/elsewhere/raw/referit"
    assert str(paths.tuples("referit")) == "/r/elsewhere/prepare_referit/referit/tuples.parquet"
    assert str(paths.tuples("coco")).endswith("elsewhere/prepare_coco/coco/tuples.parquet")
    assert str(paths.metrics("fetch_data", "coco")) == "/r/reports/metrics/fetch_data/coco.json"
    with pytest.raises(KeyError):
        paths.tuples("missing")


def test_scrc_defaults_are_the_papers_and_fc8_is_checked():
    from refexp.config import SCRC_PAPER_FINETUNE, SCRC_PAPER_PRETRAIN, ScrcConfig, TrainingConfig

    paper = ScrcConfig()
    assert (paper.backbone, paper.pretrained, paper.image_feature, paper.feature_dim, paper.hidden) == \
        ("vgg16", True, "fc8", 1000, 1000)
    assert paper.finetune_split == "trainval"
    pre, ft = paper.pretrain_config(TrainingConfig()), paper.finetune_config(TrainingConfig(), "scrc_full")
    assert (pre.optimizer, pre.lr, ft.optimizer, ft.lr) == ("sgd", 0.01, "sgd", 0.001) and ft.lr < pre.lr
    assert pre.model_dump().items() >= SCRC_PAPER_PRETRAIN.items() and ft.model_dump().items() >= SCRC_PAPER_FINETUNE.items()
    with pytest.raises(ValueError, match="backbone 'tiny' has none"):
        ScrcConfig(backbone="tiny")
    with pytest.raises(ValueError, match="feature_dim is 64"):
        ScrcConfig(feature_dim=64)
    assert ScrcConfig(backbone="tiny", image_feature="pooled", feature_dim=64).feature_dim == 64


def test_regression_training_default_is_table_1():
    from refexp.config import AttentionRegressionConfig, AttentionRegressionModelConfig

    assert AttentionRegressionConfig().training == {"optimizer": "adam", "lr": 0.001, "batch_size": 20}
    m = AttentionRegressionModelConfig()
    assert (m.dropout, m.lambda_squared_error, m.lambda_penalty) == (0.6, 1e-4, 1e-5)


@pytest.mark.parametrize("override, where, key", [
    ({"scrc": {"training": {"lr": "fast"}}}, "scrc.training", "lr"),
    ({"attention_regression": {"training": {"schedule": "cosin"}}}, "attention_regression.training", "schedule"),
    ({"pretrain_backbone": {"training": {"stepz": 3}}}, "pretrain_backbone.training", "stepz"),
    ({"scrc": {"pretrain_training": {"batch_size": 0}}}, "scrc.pretrain_training", "batch_size"),
    ({"scrc": {"variants": {"scrc_full": {"training": {"optimizer": "lbfgs"}}}}},
     "scrc.variants.scrc_full.training", "optimizer"),
    ({"referit_image_free": {"regression_training": {"lr": -1}}}, "referit_image_free.regression_training", "lr"),
    ({"referit_image_free": {"regression_model": {"dropout": 2}}}, "referit_image_free.regression_model", "dropout"),
])
def test_every_training_override_is_validated_at_load(override, where, key):
    raw = deep_merge(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), override)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "params.yaml")
    assert f"invalid params in {where}" in str(err.value) and key in str(err.value)


def test_a_warmup_longer_than_its_run_is_refused_where_it_is_set():
    # text_objseg's 300 high-res steps under a 400-step warm-up would never reach their lr
    raw = deep_merge(_raw(), {"text_objseg": {"highres_training": {"warmup_steps": 400}}})
    with pytest.raises(ConfigError, match=r"(?s)text_objseg\.highres_training:.*warmup_steps 400 exceeds steps 300"):
        parse_config(raw, "params.yaml")
    # 150 fits: the high-res stage (300 steps) and the fused model's 200, which inherits it
    cfg = parse_config(deep_merge(_raw(), {"text_objseg": {"highres_training": {"warmup_steps": 150}}}))
    assert cfg.training.merged(cfg.text_objseg.highres_training).warmup_steps == 150
