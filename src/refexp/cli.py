"""The `refexp` console script (pyproject [project.scripts]); the work is in refexp.ground.

    refexp ground --model <model>/<variant> --image PATH --expression "..." [--out PNG] [--top K] [--params FILE]
    refexp models [--params FILE]

`ground` prints the prediction as JSON on stdout; `models` lists every variant params defines and whether
it is trained. Paths in params resolve against the params file's folder (the repository root), so the
command runs from anywhere. A user's mistake (unknown model, unreadable image, empty expression, a model
trained with other params) ends in one line on stderr and exit status 1, never a traceback
(REFEXP_LOG_LEVEL=DEBUG logs it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from refexp.numerics import pin_cpu_numerics

log = logging.getLogger("refexp.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refexp", description="Use the pipeline's trained models.")
    commands = parser.add_subparsers(dest="command", required=True)
    ground = commands.add_parser("ground", help="ground an expression in an image with a trained model",
                                 description="Ground a referring expression in an image; prints JSON.")
    ground.add_argument("--model", required=True, metavar="MODEL/VARIANT",
                        help="a trained variant as named under models/, e.g. scrc/scrc_full, "
                             "attention_regression/attention_full, text_objseg_highres/text_objseg "
                             "(`refexp models` lists them)")
    ground.add_argument("--image", required=True, type=Path, help="a JPEG or PNG of any size")
    ground.add_argument("--expression", required=True, help='e.g. "the red circle left of the square"')
    ground.add_argument("--out", type=Path, help="also write a PNG: the image, the expression and the prediction")
    ground.add_argument("--top", type=int, default=10, help="SCRC: how many proposals to print, best first (default 10)")
    ground.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file the models were trained with (default ./params.yaml)")
    models = commands.add_parser("models", help="list the variants params defines and whether each is trained")
    models.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser


def _context(params: Path):
    from refexp.config import load_config
    from refexp.paths import Paths

    cfg = load_config(params)
    return cfg, Paths.from_config(cfg, params.resolve().parent)


def _ground(args: argparse.Namespace) -> None:
    from refexp import ground

    if args.top < 1:
        raise ground.GroundingError(f"--top must be at least 1, got {args.top}")
    cfg, paths = _context(args.params)
    result = ground.ground(cfg, paths, args.model, args.image, args.expression, top=args.top)
    if args.out is not None:
        ground.render(result, ground.read_image(Path(result.image)), args.out)
    print(json.dumps(result.to_json(), indent=2))


def _models(args: argparse.Namespace) -> None:
    from refexp import ground

    cfg, paths = _context(args.params)
    print(json.dumps([{"model": v.name, "kind": v.kind, "trained": v.trained, "stage": v.stage}
                      for v in ground.all_variants(cfg, paths)], indent=2))


def main(argv: list[str] | None = None) -> None:
    pin_cpu_numerics()  # the evaluation stages' kernel path, before torch computes anything
    logging.basicConfig(level=os.environ.get("REFEXP_LOG_LEVEL", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from refexp.config import ConfigError
    from refexp.data.skips import DataError
    from refexp.errors import CheckpointError, describe_os_error
    from refexp.ground import GroundingError
    from refexp.training.features import FeatureCacheError

    try:
        {"ground": _ground, "models": _models}[args.command](args)
    except (GroundingError, ConfigError, DataError, CheckpointError, FeatureCacheError) as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error: {err}")
    except OSError as err:
        log.debug("traceback", exc_info=True)
        sys.exit(f"error: {describe_os_error(err)}")


if __name__ == "__main__":
    main()
