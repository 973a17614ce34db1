"""Every artifact path, derived from the `paths` section of params (written once).

Layout: data/raw/<dataset>, data/<stage>/<dataset>/..., models/<model>/<variant>/...,
reports/metrics/<stage>/<item>.json. dvc.yaml templates the same roots from params.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from refexp.config import Config


@dataclass(frozen=True)
class Paths:
    root: Path
    data: Path
    models: Path
    reports: Path
    # dataset name -> format, so that prepare_<format>/<dataset> is found by name.
    formats: tuple[tuple[str, str], ...] = ()
    # Where pretrained backbones live (models/backbone); kept when a study moves `models` elsewhere.
    backbones: Path | None = None

    @classmethod
    def from_config(cls, cfg: Config, root: str | Path = ".") -> "Paths":
        root = Path(root)
        return cls(
            root=root,
            data=root / cfg.paths.data,
            models=root / cfg.paths.models,
            reports=root / cfg.paths.reports,
            formats=tuple((name, d.format) for name, d in cfg.datasets.items()),
            backbones=root / cfg.paths.models / "backbone",
        )

    def raw(self, dataset: str) -> Path:
        return self.data / "raw" / dataset

    @property
    def downloads(self) -> Path:
        """Verified official archives (source `official`), kept for resume and re-extraction."""
        return self.data / "downloads"

    def stage_dir(self, stage: str, item: str) -> Path:
        return self.data / stage / item

    def model_dir(self, model: str, variant: str) -> Path:
        return self.models / model / variant

    def backbone_weights(self, backbone: str, pretrained: bool) -> Path | None:
        """The pretrain_backbone checkpoint that `pretrained: true` means for `tiny`
        (models/backbone/tiny/backbone.pt); None where the weights are ImageNet's or random."""
        if backbone == "tiny" and pretrained:
            return (self.backbones or self.models / "backbone") / backbone / "backbone.pt"
        return None

    def metrics(self, stage: str, item: str | None = None) -> Path:
        name = f"{item}.json" if item else "metrics.json"
        return self.reports / "metrics" / stage / name

    def plots(self, stage: str, item: str) -> Path:
        return self.reports / "plots" / stage / f"{item}.csv"

    def figures(self, report: str) -> Path:
        """Figures of one report: reports/figures/<report>/ (one DVC output per report)."""
        return self.reports / "figures" / report

    def report(self, name: str) -> Path:
        return self.reports / f"{name}.md"

    # Common tables written by prepare_<format>; model stages read only these.
    def prepared(self, dataset: str) -> Path:
        fmt = dict(self.formats).get(dataset)
        if fmt is None:
            raise KeyError(f"dataset '{dataset}' is not in params 'datasets'")
        return self.stage_dir(f"prepare_{fmt}", dataset)

    def tuples(self, dataset: str) -> Path:
        return self.prepared(dataset) / "tuples.parquet"

    def vocab(self, dataset: str) -> Path:
        return self.prepared(dataset) / "vocab.txt"
