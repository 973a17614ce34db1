"""Writers of the four real layouts, fed one synthetic image at a time.

- ReferIt (Hu et al.'s text_objseg / SCRC release, laid out like ../shared/data/referit):
  images/<id>.jpg, mask/<id>_<k>.mat, proposals/<id>.txt, splits/referit_<split>_imlist.txt,
  annotations/referit_{query_<split>,bbox,imcrop,imsize}.json, plus the sidecars
  annotations/referit_expression_kinds.json ({"<id>_<k>": [kind per expression]}) and
  annotations/referit_proposals.json (the proposals' method: selective search, not EdgeBox).
- COCO 2014: annotations/{instances,captions}_{train,val}2014.json, train2014/ and val2014/
  images named COCO_<split>2014_%012d.jpg. Our val AND test images both go to val2014 (as
  in the Karpathy captioning splits); annotations/synthetic_image_splits.json maps every
  image id to train/val/test. Instances are the objects (stuff is not a COCO 2014 thing).
- Visual Genome v1.2: region_descriptions.json, image_data.json, region_graphs.json,
  VG_100K/<id>.jpg. Region width/height count pixels (x2 - x1 + 1). coco_id is the same
  image in coco/, null for the VG-only scenes beyond the shared world (generate.py).
  region_graphs.json covers the multi-object regions (2-3 objects, or an object and a
  stuff region): the objects the phrase mentions (object_id = image_id *
  1000 + scene region index, name = category, the object's box) and the relationships
  it states (synsets empty: no WordNet here). Single-object and stuff-only regions have
  no graph, so miners judge them by their phrase.

- refer API (lichengunc/refer), as the official refcoco/refcocog downloads extract
  (manifest.yaml): refcoco/{refs(unc).p, instances.json} (UNC-Ref style),
  refcocog/{refs(google).p, instances.json} (G-Ref style) and
  images/mscoco/images/train2014/COCO_train2014_%012d.jpg, every world image once (the refer
  datasets all use COCO train2014 images). instances.json is COCO format over every image and
  object, the annotations exactly as coco/ has them (same ids, boxes, segmentations); refs
  (refer_language.py) cover objects only, ref and sentence ids count from 0 per dataset, and a
  ref's file_name is COCO_train2014_<image id %012d>_<ann id>.jpg.

Image ids are the same integers in all four (1..n_images); VG-only scenes follow (n_images + 1...).

Each writer has two halves so that images can be built in worker processes:
`write_image(item)` writes that image's own files and returns a small picklable
record (it touches no writer state), and `collect(record)`, called in image order in
one process, aggregates the annotation files that `finish()` writes. Ids that count
across images (COCO annotation ids, VG region ids, refer ref and sentence ids) are assigned in
`collect`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refexp.data import proposals
from refexp.data.synthetic import encoding
from refexp.data.synthetic.grammar import KINDS, Expression
from refexp.data.synthetic.language import RegionDescription
from refexp.data.synthetic.refer_language import DATASETS, SPLIT_BY, STYLES, StyleRefs
from refexp.data.synthetic.refer_language import SPLITS as REFER_SPLITS
from refexp.data.synthetic.scene import Scene
from refexp.data.synthetic.vocabulary import SHAPES

SPLITS = ("train", "val", "test")


@dataclass
class SyntheticImage:
    image_id: int
    split: str
    scene: Scene
    expressions: list[list[Expression]]  # per region, in region order
    captions: list[str]
    region_descriptions: list[RegionDescription]
    # Selective search on the decoded JPEG (refexp.data.proposals), set before the ReferIt writer runs.
    proposals: np.ndarray | None = field(repr=False, default=None)
    jpeg: bytes = field(repr=False, default=b"")
    # False for a VG-only scene (beyond the shared world): Visual Genome's coco_id is then null.
    in_coco: bool = True
    # The refer layout's refs per style (refer_language.image_refs), set before the refer writer runs.
    refer: dict[str, StyleRefs] | None = field(repr=False, default=None)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def referit_region_name(image_id: int, region_index: int) -> str:
    """ReferIt's imcrop name: <image id>_<1-based region number>."""
    return f"{image_id}_{region_index + 1}"


class ReferitWriter:
    def __init__(self, root: Path):
        self.root = root
        self.query = {s: {} for s in SPLITS}
        self.bbox: dict[str, list[int]] = {}
        self.imcrop: dict[str, list[str]] = {}
        self.imsize: dict[str, list[int]] = {}
        self.kinds: dict[str, list[str]] = {}
        self.imlist = {s: [] for s in SPLITS}
        self.counts = {"referit_regions": 0, "referit_expressions": 0, "referit_regions_without_expression": 0}

    def write_image(self, item: SyntheticImage) -> dict:
        sid = str(item.image_id)
        _write(self.root / "images" / f"{sid}.jpg", item.jpeg)
        if item.proposals is None:
            raise ValueError(f"image {sid}: proposals were not computed before writing the ReferIt layout")
        _write(self.root / "proposals" / f"{sid}.txt", encoding.proposals_text(item.proposals))
        regions = []
        for region, exprs in zip(item.scene.regions, item.expressions):
            name = referit_region_name(item.image_id, region.index)
            _write(self.root / "mask" / f"{name}.mat", encoding.referit_mask_mat(region.mask))
            regions.append((name, list(region.box), [e.text for e in exprs], [e.kind for e in exprs]))
        return {"id": sid, "split": item.split, "size": [item.scene.width, item.scene.height], "regions": regions}

    def collect(self, record: dict) -> None:
        sid, split = record["id"], record["split"]
        self.imlist[split].append(sid)
        self.imsize[f"{sid}.jpg"] = record["size"]
        self.imcrop[f"{sid}.jpg"] = [name for name, _, _, _ in record["regions"]]
        for name, box, texts, kinds in record["regions"]:
            self.bbox[name] = box
            self.counts["referit_regions"] += 1
            if not texts:
                self.counts["referit_regions_without_expression"] += 1
                continue
            self.query[split][name] = texts
            self.kinds[name] = kinds
            self.counts["referit_expressions"] += len(texts)

    def finish(self) -> dict:
        ann = self.root / "annotations"
        queries = dict(self.query)
        queries["trainval"] = {**self.query["train"], **self.query["val"]}
        queries["all"] = {**queries["trainval"], **self.query["test"]}
        for split, q in queries.items():
            _write(ann / f"referit_query_{split}.json", encoding.referit_json(q))
        _write(ann / "referit_bbox.json", encoding.referit_json(self.bbox))
        _write(ann / "referit_imcrop.json", encoding.referit_json(self.imcrop))
        _write(ann / "referit_imsize.json", encoding.referit_json(self.imsize))
        _write(ann / "referit_expression_kinds.json", encoding.referit_json(self.kinds))
        # Which method made proposals/<id>.txt (read by refexp.data.proposals.layout_method).
        _write(ann / proposals.METHOD_FILE, encoding.compact_json(proposals.method_record(proposals.DEFAULT_COUNT)))
        lists = dict(self.imlist)
        lists["trainval"] = self.imlist["train"] + self.imlist["val"]
        lists["all"] = lists["trainval"] + self.imlist["test"]
        for split, ids in lists.items():
            _write(self.root / "splits" / f"referit_{split}_imlist.txt", "".join(i + "\n" for i in ids).encode())
        return self.counts


COCO_INFO = {"description": "refexp synthetic world in COCO 2014 format", "url": "", "version": "1.0",
             "year": 2014, "contributor": "refexp", "date_created": "2014/01/01"}
COCO_LICENSES = [{"url": "", "id": 1, "name": "Synthetic, generated by refexp (no rights reserved)"}]
COCO_CATEGORIES = [{"supercategory": "shape", "id": i + 1, "name": name} for i, name in enumerate(SHAPES)]


def coco_file_name(split_dir: str, image_id: int) -> str:
    return f"COCO_{split_dir}_{image_id:012d}.jpg"


def coco_image(item: SyntheticImage, split_dir: str) -> dict:
    """The image's entry of a COCO instances file (its JPEG in split_dir)."""
    name = coco_file_name(split_dir, item.image_id)
    return {
        "license": 1, "file_name": name, "coco_url": f"synthetic/{split_dir}/{name}",
        "height": item.scene.height, "width": item.scene.width,
        "date_captured": "2014-01-01 00:00:00", "flickr_url": "", "id": item.image_id,
    }


def coco_instances(item: SyntheticImage) -> list[dict]:
    """The image's objects as COCO annotations, without their ids (the writers number them in
    `collect`): box [x, y, w, h] of the visible pixels, polygons, or uncompressed RLE for a mask
    with holes."""
    instances = []
    for obj in item.scene.objects:
        x1, y1, x2, y2 = obj.box
        rle = encoding.has_holes(obj.mask)  # polygons cannot express holes
        instances.append({
            "segmentation": encoding.uncompressed_rle(obj.mask) if rle else encoding.mask_polygons(obj.mask),
            "area": float(obj.area), "iscrowd": 0, "image_id": item.image_id,
            "bbox": [float(x1), float(y1), float(x2 - x1 + 1), float(y2 - y1 + 1)],
            "category_id": SHAPES.index(obj.category) + 1,
        })
    return instances


class CocoWriter:
    def __init__(self, root: Path):
        self.root = root
        self.images = {"train2014": [], "val2014": []}
        self.instances = {"train2014": [], "val2014": []}
        self.captions = {"train2014": [], "val2014": []}
        self.image_splits: dict[str, str] = {}
        self.counts = {"coco_instances": 0, "coco_instances_rle": 0, "coco_captions": 0}

    def write_image(self, item: SyntheticImage) -> dict:
        split_dir = "train2014" if item.split == "train" else "val2014"
        image = coco_image(item, split_dir)
        _write(self.root / split_dir / image["file_name"], item.jpeg)
        return {"split": item.split, "split_dir": split_dir, "image": image, "instances": coco_instances(item),
                "captions": list(item.captions)}

    def collect(self, record: dict) -> None:
        split_dir, image = record["split_dir"], record["image"]
        self.image_splits[str(image["id"])] = record["split"]
        self.images[split_dir].append(image)
        for ann in record["instances"]:
            self.counts["coco_instances"] += 1
            self.counts["coco_instances_rle"] += isinstance(ann["segmentation"], dict)
            # numbered in image order over both splits: the refer layout's ann ids are the same
            self.instances[split_dir].append({**ann, "id": self.counts["coco_instances"]})
        for caption in record["captions"]:
            self.counts["coco_captions"] += 1
            self.captions[split_dir].append({"image_id": image["id"], "id": self.counts["coco_captions"],
                                             "caption": caption})

    def finish(self) -> dict:
        ann = self.root / "annotations"
        for split_dir in ("train2014", "val2014"):
            _write(ann / f"instances_{split_dir}.json", encoding.compact_json({
                "info": COCO_INFO, "images": self.images[split_dir], "licenses": COCO_LICENSES,
                "annotations": self.instances[split_dir], "categories": COCO_CATEGORIES}))
            _write(ann / f"captions_{split_dir}.json", encoding.compact_json({
                "info": COCO_INFO, "images": self.images[split_dir], "licenses": COCO_LICENSES,
                "annotations": self.captions[split_dir]}))
        _write(ann / "synthetic_image_splits.json", encoding.compact_json(self.image_splits))
        return self.counts


class VisualGenomeWriter:
    def __init__(self, root: Path):
        self.root = root
        self.regions: list[dict] = []
        self.graphs: list[dict] = []
        self.image_data: list[dict] = []
        self.counts = {"vg_regions": 0, "vg_relationships": 0}

    def write_image(self, item: SyntheticImage) -> dict:
        _write(self.root / "VG_100K" / f"{item.image_id}.jpg", item.jpeg)
        image = {"width": item.scene.width, "url": f"synthetic/VG_100K/{item.image_id}.jpg",
                 "height": item.scene.height, "image_id": item.image_id,
                 "coco_id": item.image_id if item.in_coco else None, "flickr_id": None}
        regions = []
        for d in item.region_descriptions:
            objects = []
            for idx in d.graph_objects:
                region = item.scene.regions[idx]
                x1, y1, x2, y2 = region.box
                objects.append({"name": region.category, "h": y2 - y1 + 1, "object_id": item.image_id * 1000 + idx,
                                "synsets": [], "w": x2 - x1 + 1, "y": y1, "x": x1})
            relationships = [(predicate, item.image_id * 1000 + subj, item.image_id * 1000 + obj)
                             for subj, predicate, obj in d.relationships]
            regions.append((d.phrase, d.box, objects, relationships))
        return {"image": image, "regions": regions}

    def collect(self, record: dict) -> None:
        image = record["image"]
        self.image_data.append(image)
        regions, graphs = [], []
        for phrase, (x1, y1, x2, y2), objects, relationships in record["regions"]:
            self.counts["vg_regions"] += 1
            region = {"region_id": self.counts["vg_regions"], "width": x2 - x1 + 1, "height": y2 - y1 + 1,
                      "image_id": image["image_id"], "phrase": phrase, "y": y1, "x": x1}
            regions.append(region)
            rels = []
            for predicate, subject_id, object_id in relationships:
                self.counts["vg_relationships"] += 1
                rels.append({"predicate": predicate, "object_id": object_id,
                             "relationship_id": self.counts["vg_relationships"], "synsets": [],
                             "subject_id": subject_id})
            if len(objects) >= 2:
                graphs.append({"relationships": rels, "phrase": phrase, "objects": objects, "synsets": [], **region})
        self.regions.append({"regions": regions, "id": image["image_id"]})
        self.graphs.append({"regions": graphs, "image_id": image["image_id"]})

    def finish(self) -> dict:
        _write(self.root / "region_descriptions.json", encoding.compact_json(self.regions))
        _write(self.root / "image_data.json", encoding.compact_json(self.image_data))
        _write(self.root / "region_graphs.json", encoding.compact_json(self.graphs))
        return self.counts


REFER_IMAGE_DIR = "images/mscoco/images/train2014"


class ReferWriter:
    def __init__(self, root: Path):
        self.root = root
        self.images: list[dict] = []
        self.instances: list[dict] = []
        self.refs: dict[str, list[dict]] = {s: [] for s in STYLES}
        self.tokens = Counter()  # per style
        self.counts: Counter = Counter()

    def write_image(self, item: SyntheticImage) -> dict:
        if item.refer is None:
            raise ValueError(f"image {item.image_id}: refs were not computed before writing the refer layout")
        image = coco_image(item, "train2014")
        _write(self.root / REFER_IMAGE_DIR / image["file_name"], item.jpeg)
        refs = {style: (r.split, [(region, [(s.tokens, s.kind, s.heldout) for s in sentences])
                                  for region, sentences in r.objects])
                for style, r in item.refer.items()}
        return {"image": image, "instances": coco_instances(item), "refs": refs}

    def collect(self, record: dict) -> None:
        image = record["image"]
        self.images.append(image)
        ann_ids = []
        for ann in record["instances"]:  # numbered as CocoWriter numbers them
            self.counts["refer_instances"] += 1
            ann_ids.append(self.counts["refer_instances"])
            self.instances.append({**ann, "id": ann_ids[-1]})
        for style in STYLES:
            split, objects = record["refs"][style]
            for ann, ann_id, (_, sentences) in zip(record["instances"], ann_ids, objects, strict=True):
                if not sentences:
                    self.counts[f"refer_{style}_objects_without_ref"] += 1
                    continue
                first = self.counts[f"refer_{style}_sentences"]
                sents = []
                for k, (tokens, kind, heldout) in enumerate(sentences):
                    text = " ".join(tokens)
                    sents.append({"tokens": list(tokens), "raw": text, "sent": text, "sent_id": first + k})
                    self.tokens[style] += len(tokens)
                    self.counts[f"refer_{style}_sentences_{kind}"] += 1
                    self.counts[f"refer_{style}_heldout_sentences"] += heldout
                self.refs[style].append({
                    "sent_ids": [s["sent_id"] for s in sents],
                    "file_name": f"COCO_train2014_{image['id']:012d}_{ann_id}.jpg",
                    "ann_id": ann_id, "ref_id": self.counts[f"refer_{style}_refs"], "image_id": image["id"],
                    "split": split, "sentences": sents, "category_id": ann["category_id"],
                })
                self.counts[f"refer_{style}_refs"] += 1
                self.counts[f"refer_{style}_sentences"] += len(sents)
                self.counts[f"refer_{style}_sentences_{split}"] += len(sents)

    def finish(self) -> dict:
        instances = encoding.compact_json({"info": COCO_INFO, "images": self.images, "licenses": COCO_LICENSES,
                                           "annotations": self.instances, "categories": COCO_CATEGORIES})
        counts = {"refer_images": len(self.images), "refer_instances": self.counts["refer_instances"]}
        for style in STYLES:
            folder = self.root / DATASETS[style]
            _write(folder / f"refs({SPLIT_BY[style]}).p", encoding.refs_pickle(self.refs[style]))
            _write(folder / "instances.json", instances)
            n = self.counts[f"refer_{style}_sentences"]
            keys = ["refs", "sentences", *(f"sentences_{s}" for s in REFER_SPLITS[style]),
                    *(f"sentences_{k}" for k in KINDS), "heldout_sentences", "objects_without_ref"]
            counts.update({f"refer_{style}_{k}": int(self.counts[f"refer_{style}_{k}"]) for k in keys})
            # mean tokens per sentence, in hundredths (rounded half up)
            counts[f"refer_{style}_mean_tokens_x100"] = (200 * self.tokens[style] + n) // (2 * n) if n else 0
        return counts


WRITERS = {"referit": ReferitWriter, "coco": CocoWriter, "visual_genome": VisualGenomeWriter, "refer": ReferWriter}
