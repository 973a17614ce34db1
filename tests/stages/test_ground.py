"""`refexp ground` (refexp.cli, refexp.ground) against each evaluation's own prediction.

- A tiny generated world trained here (the real generator, prepare code and stages, in a tmp dir): every
  kind of variant, each grounding compared with what its evaluation stage computes for the same query;
  the PNG and the JSON; every error a user can make, each one line on stderr, exit status 1.
- The two real ReferIt photos of ../shared (480 x 360) with the tiny world's trained models: each kind's
  output against its evaluation functions on the same rows, and the PNGs.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from refexp.config import parse_config
from refexp.data.coco import decode_rle
from refexp.paths import Paths
from refexp.text.tokenize import tokenize
from refexp.text.vocab import Vocab
from tests.conftest import require_shared
from tests.stages.test_scrc_stages import prepare_world, tiny_params

SCRC_VARIANTS = {
    "lrcn_retriever": {"use_context": False, "use_spatial": False, "fine_tune": False},
    "scrc_full": {},
    "scrc_image_free": {"use_box": False, "use_context": False, "transfer": False},
    "scrc_untrained": {"use_context": False},  # defined in params, never trained here
}
REGRESSION_VARIANTS = {"attention_full": {}, "text_only": {"use_image": False, "image_attention": False,
                                                          "text_attention": False}}
SEGMENTATION_VARIANTS = {"text_objseg": {}, "paper_spatial": {"spatial": 2}}


def world_params() -> dict:
    params = tiny_params()
    params["scrc"] = {**params["scrc"], "variants": SCRC_VARIANTS}
    params["attention_regression"] = {
        "dataset": "referit", "backbone": "tiny", "pretrained": True, "freeze_backbone": True, "image_size": 64,
        "eval_batch_size": 16, "training": {"steps": 6},
        "model": {"embedding_dim": 8, "embeddings": "random", "lstm_hidden": 12, "feature_grid": 4,
                  "image_attention_hidden": 10, "image_attention_layers": 2, "text_attention_hidden": 8,
                  "region_hidden": 10, "dropout": 0.1},
        "variants": REGRESSION_VARIANTS}
    params["text_objseg"] = {
        "dataset": "referit", "backbone": "tiny", "pretrained": True, "input_size": 64, "eval_batch_size": 8,
        "model": {"embed_dim": 8, "text_hidden": 12, "classifier_hidden": 16, "feature_dim": 16},
        "lowres_training": {"optimizer": "adam", "lr": 0.01, "steps": 6},
        "highres_training": {"optimizer": "adam", "lr": 0.005, "steps": 4},
        "variants": SEGMENTATION_VARIANTS}
    return params


def write_params(root: Path, params: dict) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The tiny world with every variant but scrc_untrained trained by its stage."""
    from stages import (pretrain_scrc, train_attention_regression, train_scrc, train_text_objseg_highres,
                        train_text_objseg_lowres)

    root = tmp_path_factory.mktemp("ground_world")
    prepare_world(root)
    write_params(root, world_params())
    cfg = parse_config(world_params())
    with contextlib.chdir(root):  # stages resolve params paths against the working directory
        pretrain_scrc.run(cfg)
        for variant in SCRC_VARIANTS:
            if variant != "scrc_untrained":
                train_scrc.run(cfg, variant)
        for variant in REGRESSION_VARIANTS:
            train_attention_regression.run(cfg, variant)
        for variant in SEGMENTATION_VARIANTS:
            train_text_objseg_lowres.run(cfg, variant)
            train_text_objseg_highres.run(cfg, variant)
    return root


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from refexp.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if not isinstance(exit_.code, int) and exit_.code is not None:
            print(exit_.code, file=sys.stderr)  # what the interpreter prints for sys.exit("message")
    out, err = capsys.readouterr()
    return code, out, err


def ground_json(capsys, params: Path, model: str, image, expression: str, *extra) -> dict:
    code, out, err = run_cli(capsys, "ground", "--params", params, "--model", model, "--image", image,
                             "--expression", expression, *extra)
    assert code == 0, err
    return json.loads(out)


def one_line_error(capsys, params: Path, *args) -> str:
    code, out, err = run_cli(capsys, "ground", "--params", params, *args)
    assert code == 1 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def world_test_rows(root: Path) -> pd.DataFrame:
    tuples = pd.read_parquet(root / "data/prepare_referit/referit/tuples.parquet")
    return tuples[tuples["split"] == "test"].reset_index(drop=True)


# ---------------------------------------------------------------- the tiny world


def test_scrc_scores_every_proposal_as_its_evaluation_does(world, capsys):
    from refexp.data import referit
    from refexp.training import scrc

    cfg, paths = parse_config(world_params()), Paths.from_config(parse_config(world_params()), world)
    layout = referit.ReferItLayout.discover(world / "data/raw/referit")
    for variant in ("scrc_full", "scrc_image_free", "lrcn_retriever"):
        _, pred = scrc.evaluate(cfg, paths, variant)
        checked = 0
        for row in pred[pred["proposals_scored"]].drop_duplicates("image_id").itertuples():  # each test image
            out = ground_json(capsys, world / "params.yaml", f"scrc/{variant}", world / row.image_path,
                              row.expression, "--top", "1000")
            assert out["kind"] == "proposals" and out["proposal_method"] == "selective_search_fast"
            # The proposals are the layout's files (selective search with the image's seed), scored the same.
            files = referit.load_proposals(layout.proposals_path(row.image_id))[:cfg.scrc.n_proposals]
            by_index = {p["proposal_index"]: p for p in out["proposals"]}
            assert out["proposals_scored"] == len(files) == len(row.proposals_ll) == len(by_index)
            assert [by_index[i]["box"] for i in range(len(files))] == files.astype(int).tolist()
            np.testing.assert_allclose([by_index[i]["log_likelihood"] for i in range(len(files))], row.proposals_ll,
                                       rtol=0, atol=1e-4)
            scores = [p["log_likelihood"] for p in out["proposals"]]
            assert scores == sorted(scores, reverse=True)  # best first
            assert out["proposals"][0]["proposal_index"] == int(np.argmax(row.proposals_ll))
            checked += 1
        assert checked == pred["image_id"].nunique() >= 2


def test_scrc_top_limits_the_list(world, capsys):
    row = world_test_rows(world).iloc[0]
    full = ground_json(capsys, world / "params.yaml", "scrc/scrc_full", world / row.image_path, row.expression,
                       "--top", "1000")
    top3 = ground_json(capsys, world / "params.yaml", "scrc/scrc_full", world / row.image_path, row.expression,
                       "--top", "3")
    assert top3["proposals"] == full["proposals"][:3] and len(full["proposals"]) > 3


def test_regression_box_is_its_evaluations_box(world, capsys):
    from refexp.training import attention_regression as ar

    cfg = parse_config(world_params())
    paths = Paths.from_config(cfg, world)
    for variant in REGRESSION_VARIANTS:
        _, table = ar.evaluate_variant(cfg.attention_regression, variant, paths, seed=cfg.run.seed)
        for row in table.head(4).itertuples():
            out = ground_json(capsys, world / "params.yaml", f"attention_regression/{variant}",
                              world / row.image_path, row.expression)
            assert out["kind"] == "box" and out["tokens"] == list(row.tokens)
            np.testing.assert_allclose(out["box"], [row.pred_x1, row.pred_y1, row.pred_x2, row.pred_y2], atol=1e-3)
            if variant == "attention_full":  # the share of its attention inside its own box
                assert 0.0 <= out["attention_mass_in_box"] <= 1.0
            else:
                assert out["attention_mass_in_box"] is None


def test_segmentation_mask_is_its_evaluations_mask(world, capsys):
    from refexp.metrics.masks import per_query_iou
    from refexp.training import text_objseg

    cfg = parse_config(world_params())
    paths = Paths.from_config(cfg, world)
    s = cfg.text_objseg
    rows = world_test_rows(world).head(6)
    for resolution in ("lowres", "highres"):
        for variant in SEGMENTATION_VARIANTS:
            _, table = text_objseg.evaluate(cfg, paths, variant, resolution)
            # The evaluation's score maps for the same rows, batched as it batches them.
            model = text_objseg.load_trained(cfg, paths, variant, resolution, Vocab.load(paths.vocab("referit")))
            examples = text_objseg.build_examples(rows, Vocab.load(paths.vocab("referit")), world, s.input_size,
                                                  s.variant_model(variant).max_tokens, None)
            scores = text_objseg.predict_scores(model, examples, s.eval_batch_size)
            for i, row in enumerate(rows.itertuples()):
                out = ground_json(capsys, world / "params.yaml", f"text_objseg_{resolution}/{variant}",
                                  world / row.image_path, row.expression)
                assert out["kind"] == "mask" and out["mask"]["size"] == [row.image_height, row.image_width]
                mask = decode_rle(out["mask"]["counts"], row.image_height, row.image_width)
                restored = examples.letterboxes[examples.image_index[i]].restore(scores[i])
                settled = np.abs(restored) > 1e-4  # pixels no float rounding of another batch size can flip
                assert np.array_equal(mask[settled], (restored > 0)[settled])
                assert out["mask_pixels"] == int(mask.sum())
                truth = decode_rle(row.mask_rle, row.image_height, row.image_width)
                evaluated = table[(table["region_id"] == row.region_id) & (table["expression"] == row.expression)]
                assert per_query_iou([mask], [truth])[0] == pytest.approx(float(evaluated["iou"].iloc[0]), abs=1e-3)
                assert abs(int(mask.sum()) - int(evaluated["predicted_pixels"].iloc[0])) <= int((~settled).sum())


def test_png_shows_the_prediction_and_carries_the_json(world, capsys, tmp_path):
    row = world_test_rows(world).iloc[0]
    image = world / row.image_path
    width, height = Image.open(image).size
    for model in ("scrc/scrc_full", "attention_regression/attention_full", "text_objseg_highres/text_objseg"):
        png = tmp_path / f"{model.replace('/', '_')}.png"
        out = ground_json(capsys, world / "params.yaml", model, image, row.expression, "--out", png)
        with Image.open(png) as im:
            assert im.format == "PNG"
            pixels = np.asarray(im.convert("RGB"))
            # The figure keeps the image's aspect ratio (plus the title band) and draws in pure cyan.
            assert im.info["Title"] == row.expression
            assert json.loads(im.info["Description"]) == out
        assert pixels.shape[1] > 200 and abs(pixels.shape[1] / (pixels.shape[0] - 80) - width / height) < 0.2
        cyan = np.all(pixels == (0, 255, 255), axis=-1).sum()
        drawn = out.get("mask_pixels", 1)
        assert (cyan > 50) == (drawn > 0), model
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_the_console_script_runs(world, tmp_path):
    """The installed entry point (pyproject [project.scripts]) from another directory."""
    row = world_test_rows(world).iloc[0]
    script = Path(sys.executable).with_name("refexp")
    assert script.exists(), "pip install -e . installs the refexp console script"
    done = subprocess.run([str(script), "ground", "--params", str(world / "params.yaml"), "--model",
                           "text_objseg_highres/text_objseg", "--image", str(world / row.image_path),
                           "--expression", row.expression, "--out", str(tmp_path / "out.png")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "text_objseg_highres/text_objseg" and (tmp_path / "out.png").exists()
    bad = subprocess.run([str(script), "ground", "--params", str(world / "params.yaml"), "--model", "nope",
                          "--image", str(world / row.image_path), "--expression", "x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("error: unknown model 'nope'")


def test_models_lists_every_variant_and_whether_it_is_trained(world, capsys):
    code, out, _ = run_cli(capsys, "models", "--params", world / "params.yaml")
    listed = {m["model"]: m for m in json.loads(out)}
    assert code == 0 and len(listed) == len(SCRC_VARIANTS) + len(REGRESSION_VARIANTS) + 2 * len(SEGMENTATION_VARIANTS)
    assert listed["scrc/scrc_untrained"]["trained"] is False and listed["scrc/scrc_full"]["trained"] is True
    assert listed["text_objseg_lowres/paper_spatial"] == {"model": "text_objseg_lowres/paper_spatial", "kind": "mask",
                                                          "trained": True, "stage": "train_text_objseg_lowres@paper_spatial"}
    assert listed["attention_regression/text_only"]["kind"] == "box"


def test_unknown_and_untrained_models(world, capsys):
    image = world / world_test_rows(world).iloc[0].image_path
    params = world / "params.yaml"
    err = one_line_error(capsys, params, "--model", "text_objseg", "--image", image, "--expression", "red")
    assert err.startswith("error: unknown model 'text_objseg'; trained models: scrc/lrcn_retriever, scrc/scrc_full")
    for name in ("scrc/scrc_image_free", "attention_regression/attention_full", "text_objseg_lowres/text_objseg",
                 "text_objseg_highres/paper_spatial"):
        assert name in err
    assert "scrc/scrc_untrained" not in err
    err = one_line_error(capsys, params, "--model", "scrc/scrc_untrained", "--image", image, "--expression", "red")
    assert "scrc/scrc_untrained is not trained" in err and "dvc repro train_scrc@scrc_untrained" in err


def test_unreadable_images(world, capsys, tmp_path):
    params = world / "params.yaml"
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((world / world_test_rows(world).iloc[0].image_path).read_bytes()[:300])
    for image, says in ((tmp_path / "absent.png", "no such image file"), (tmp_path, "no such image file"),
                        (text, "cannot read image"), (truncated, "cannot read image")):
        for model in ("scrc/scrc_full", "attention_regression/attention_full", "text_objseg_highres/text_objseg"):
            err = one_line_error(capsys, params, "--model", model, "--image", image, "--expression", "red")
            assert err.startswith(f"error: {image}") and says in err


def test_empty_expressions(world, capsys):
    image = world / world_test_rows(world).iloc[0].image_path
    for expression in ("", "   ", "?!, ..."):
        for model in ("scrc/scrc_full", "attention_regression/attention_full", "text_objseg_lowres/text_objseg"):
            err = one_line_error(capsys, world / "params.yaml", "--model", model, "--image", image,
                                 "--expression", expression)
            assert "has no words" in err


def test_unknown_words_are_reported_not_refused(world, capsys):
    row = world_test_rows(world).iloc[0]
    out = ground_json(capsys, world / "params.yaml", "text_objseg_highres/text_objseg", world / row.image_path,
                      f"{row.expression} zzyzx")
    assert out["unknown_words"] == ["zzyzx"] and out["tokens"][-1] == "zzyzx"


@pytest.fixture
def stale_world(world, tmp_path) -> Path:
    """A copy of the trained world whose params the tests then change."""
    copy = tmp_path / "world"
    shutil.copytree(world, copy, symlinks=True)
    return copy


def test_models_trained_with_other_params_are_refused(stale_world, capsys):
    image = stale_world / world_test_rows(stale_world).iloc[0].image_path
    changes = {  # model -> a params change that leaves its weights' shapes as they are
        "scrc/scrc_full": ("scrc", "training", {"lr": 0.5}, "train_scrc@scrc_full"),
        "scrc/lrcn_retriever": ("scrc", "pretrain_training", {"steps": 4}, "pretrain_scrc"),
        "attention_regression/attention_full": ("attention_regression", "training", {"steps": 7},
                                                "train_attention_regression@attention_full"),
        "text_objseg_highres/text_objseg": ("text_objseg", "highres_training", {"lr": 0.5, "steps": 4},
                                            "train_text_objseg_highres@text_objseg"),
    }
    for model, (section, key, value, stage) in changes.items():
        params = world_params()
        params[section] = {**params[section], key: {**params[section][key], **value}}
        path = write_params(stale_world, params)
        err = one_line_error(capsys, path, "--model", model, "--image", image, "--expression", "red")
        assert err.startswith(f"error: {model} was trained with other params, data or code") and f"dvc repro {stage}" in err
    # Other shapes: the same refusal, whichever file gives it away.
    params = world_params()
    params["text_objseg"]["model"] = {**params["text_objseg"]["model"], "embed_dim": 9}
    err = one_line_error(capsys, write_params(stale_world, params), "--model", "text_objseg_lowres/text_objseg",
                         "--image", image, "--expression", "red")
    assert "text_objseg_lowres/text_objseg was trained with other params" in err
    # Without the checkpoint to compare with, the weights' shapes still refuse it.
    (stale_world / "models/text_objseg_lowres/text_objseg/checkpoint.pt").unlink()
    err = one_line_error(capsys, write_params(stale_world, params), "--model", "text_objseg_lowres/text_objseg",
                         "--image", image, "--expression", "red")
    assert "text_objseg_lowres/text_objseg: its weights do not fit the current params (size mismatch" in err
    # And the unchanged params still ground (the check is not a false alarm).
    write_params(stale_world, world_params())
    assert ground_json(capsys, stale_world / "params.yaml", "scrc/scrc_full", image, "red")["proposals"]


def test_a_frozen_backbone_scrc_computes_the_cache_features_for_a_new_image(world, tmp_path, capsys):
    """scrc.frozen_backbone reads descriptors from extract_features' cache, which holds only the dataset's
    images; for any other image the command computes them the way the cache did."""
    from refexp.data.proposals import proposals_for_images
    from refexp.ground import _single_image_features
    from refexp.training import scrc
    from refexp.training.features import extract_dataset
    from stages import train_scrc

    root = tmp_path / "frozen"
    shutil.copytree(world, root, symlinks=True)
    params = world_params()
    params["extract_features"] = {"datasets": ["referit"], "backbone": "tiny", "pretrained": True,
                                  "image_feature": "pooled", "image_size": 64, "crop_size": 16, "n_proposals": 12}
    params["scrc"] = {**params["scrc"], "frozen_backbone": True, "variants": {"scrc_frozen": {"transfer": False}}}
    write_params(root, params)
    cfg = parse_config(params)
    paths = Paths.from_config(cfg, root)
    extract_dataset(cfg.extract_features, paths, "referit", seed=cfg.run.seed,
                    out_dir=paths.stage_dir("extract_features", "referit"))
    cache = scrc.feature_cache(cfg, paths, "referit")
    row = world_test_rows(root).iloc[0]
    boxes, _ = proposals_for_images(paths.raw("referit"), world_test_rows(root).iloc[:1], 12, cfg.run.seed, root)
    mine = _single_image_features(cfg, paths, root / row.image_path, int(row.image_width), int(row.image_height),
                                  boxes[row.image_id])
    np.testing.assert_array_equal(mine.lookup(str(root / row.image_path), boxes[row.image_id]),
                                  cache.lookup(row.image_path, boxes[row.image_id]))
    np.testing.assert_array_equal(mine.whole_image(str(root / row.image_path), int(row.image_width), int(row.image_height)),
                                  cache.whole_image(row.image_path, int(row.image_width), int(row.image_height)))
    with contextlib.chdir(root):
        train_scrc.run(cfg, "scrc_frozen")
    _, pred = scrc.evaluate(cfg, paths, "scrc_frozen")
    first = pred[pred["image_id"] == row.image_id].iloc[0]
    out = ground_json(capsys, root / "params.yaml", "scrc/scrc_frozen", root / first.image_path, first.expression,
                      "--top", "1000")
    scores = {p["proposal_index"]: p["log_likelihood"] for p in out["proposals"]}
    np.testing.assert_allclose([scores[i] for i in range(len(first.proposals_ll))], first.proposals_ll, atol=1e-4)


# ---------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def world_checkout(world):
    """The tiny world's params file, config and paths, as a checkout after `dvc repro` has them."""
    cfg = parse_config(world_params())
    return world / "params.yaml", cfg, Paths.from_config(cfg, world)


def test_real_referit_images_with_trained_models(world_checkout, capsys, tmp_path):
    """Two real ReferIt photos (480 x 360, not 128 px squares) and their real expressions, each model's
    output against its evaluation functions on the same rows; the acceptance run writes PNG and JSON."""
    from refexp.data.proposals import proposals_for_images
    from refexp.training import attention_regression as ar
    from refexp.training import scrc, text_objseg

    params, cfg, paths = world_checkout
    images = require_shared("referit", "images")
    rows = pd.DataFrame({"image_id": ["38100", "40429"], "image_path": [str(images / "38100.jpg"), str(images / "40429.jpg")],
                         "image_width": [480, 480], "image_height": [360, 360],
                         "expression": ["sky above the bridge", "pillar building in the middle"]})
    rows["tokens"] = [tokenize(e) for e in rows["expression"]]
    rows[["x1", "y1", "x2", "y2"]] = [0.0, 0.0, 479.0, 359.0]  # only from_tuples' targets need them

    # SCRC: the pipeline's proposals for an image without a proposal file, and its top-box scoring.
    proposals, method = proposals_for_images(tmp_path / "no_layout", rows, cfg.scrc.n_proposals, cfg.run.seed)
    assert method == "selective_search_fast"
    best = scrc.top_boxes(cfg, paths, "scrc_full", rows, proposals)
    # The regression and the segmentation, batched as their evaluations batch.
    vocab = Vocab.load(paths.vocab("referit"))
    model, _, _, _ = ar.load_trained(cfg.attention_regression, "attention_full", paths, cfg.run.seed, "test")
    settings = cfg.attention_regression.variant_model("attention_full")
    examples = ar.RegressionExamples.from_tuples(rows, vocab, cfg.attention_regression.image_size,
                                                 settings.feature_grid, paths.root, settings.use_image)
    examples.cache_features(model)
    boxes = ar.predict(model, examples, rows, cfg.attention_regression.eval_batch_size).boxes
    seg = text_objseg.load_trained(cfg, paths, "text_objseg", "highres", vocab)
    seg_examples = text_objseg.build_examples(rows, vocab, paths.root, cfg.text_objseg.input_size, 20, None)
    maps = text_objseg.predict_scores(seg, seg_examples, cfg.text_objseg.eval_batch_size)

    for i, row in enumerate(rows.itertuples()):
        image = Path(row.image_path)
        out = ground_json(capsys, params, "scrc/scrc_full", image, row.expression, "--out", tmp_path / f"{i}_scrc.png")
        assert out["proposals"][0]["box"] == [int(v) for v in best[i]] and out["image_size"] == {"width": 480, "height": 360}
        out = ground_json(capsys, params, "attention_regression/attention_full", image, row.expression,
                          "--out", tmp_path / f"{i}_box.png")
        np.testing.assert_allclose(out["box"], boxes[i], atol=1e-3)
        out = ground_json(capsys, params, "text_objseg_highres/text_objseg", image, row.expression,
                          "--out", tmp_path / f"{i}_mask.png")
        mask = decode_rle(out["mask"]["counts"], *out["mask"]["size"])
        restored = seg_examples.letterboxes[i].restore(maps[i])
        assert mask.shape == (360, 480) and out["mask"]["size"] == [360, 480]
        settled = np.abs(restored) > 1e-4
        assert np.array_equal(mask[settled], (restored > 0)[settled])
        for kind in ("scrc", "box", "mask"):
            with Image.open(tmp_path / f"{i}_{kind}.png") as im:
                assert im.format == "PNG" and im.info["Title"] == row.expression
