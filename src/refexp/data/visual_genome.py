"""Visual Genome loaders (v1.2 and v1.0 field names), streaming.

The real region_descriptions.json is ~700 MB and region_graphs.json larger, so the
files are parsed incrementally with ijson (yajl2_c backend): one region dict at a
time goes into column lists, never the raw text and a parsed copy together.

Layouts read (what the official zips contain):
- region_descriptions.json: [{"regions": [{region_id, image_id, phrase, x, y, width, height}], "id"?}]
  v1.0 names a region's fields {id, image, phrase, x, y, width, height} (image may be an
  int or an {"id": ...} dict).
- image_data.json: [{image_id | id, url, width, height, coco_id, flickr_id}].
- region_graphs.json (optional): [{"regions": [{region_id, objects: [...], relationships: [...]}]}].

A truncated or malformed file, one nested more than MAX_DEPTH deep, or one whose
top level is not a list (e.g. a single image's object), raises DataError naming
the file and the last region read. An
image entry without a "regions" list is a DataError naming the entry. A record
lacking a field, with a box or id that is not a finite number (a string, a bool,
NaN/inf, a fractional id) or a phrase that is not a string, is counted in `skips`
under "malformed_region" / "malformed_image" (a DataError when no counter is
given); a region id or image id seen before is counted under
"duplicate_region_id" / "duplicate_image" and the first one kept (later joins are
by id, so a duplicate would silently double or replace rows). Region graphs: the
same under "malformed_region_graph" / "duplicate_region_graph". `skips.read`
counts the input records (units "regions", "images", "region_graphs").
"""
from __future__ import annotations

import logging
from array import array
from pathlib import Path
from typing import Any, Iterator

import ijson
import numpy as np
import pandas as pd

from refexp.data.skips import DataError, SkipCounter, is_number

log = logging.getLogger(__name__)

REGION_COLUMNS = ["image_id", "region_id", "phrase", "x", "y", "width", "height"]
IMAGE_COLUMNS = ["image_id", "width", "height", "url", "coco_id", "flickr_id"]


def _id(value: Any) -> int:
    if isinstance(value, dict):  # v1.0 sometimes nests the image
        value = value.get("image_id", value.get("id"))
    if not (is_number(value) and float(value).is_integer() and abs(value) < 2**63):  # no bool, None, 1.5, 1e30
        raise ValueError(f"bad id {value!r}")
    return int(value)


def _number(value: Any) -> float:
    if not is_number(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _check_top_level(path: Path, what: str) -> None:
    """A VG file is a JSON list; an object at top level would stream nothing at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
                head = head[3:]
            head = head.lstrip()
            while not head and (chunk := f.read(1 << 16)):  # leading whitespace beyond the first read
                head = chunk.lstrip()
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except IsADirectoryError as e:
        raise DataError(path, "is a directory, expected a JSON file") from e
    if not head:
        raise DataError(path, f"empty file, expected a JSON list of {what}")
    if head[:1] != b"[":
        kind = "an object" if head[:1] == b"{" else f"{head[:20]!r}"
        raise DataError(path, f"top level is {kind}, expected a JSON list of {what} (is this the right file?)")


MAX_DEPTH = 64  # VG nests at most ~8 deep; ijson's memory grows with the square of the depth


def _check_depth(path: Path, chunk_size: int = 1 << 22) -> None:
    """DataError if brackets outside strings nest deeper than MAX_DEPTH: yajl2_c would need ~23 GB for a
    200 KB file of 100,000 nested '['. Vectorised over quotes and brackets only, so it costs little."""
    depth, in_string, carried = 0, 0, 0  # state at a chunk boundary; carried: backslashes ending the last chunk
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            b = np.frombuffer(chunk, np.uint8)
            quotes = np.flatnonzero(b == 34)
            # A quote after an odd run of backslashes is escaped (backslashes occur only inside strings).
            run = np.zeros(len(quotes), np.int64)
            open_ = np.ones(len(quotes), bool)  # the run before this quote may go on
            k = 1
            while open_.any():
                at = quotes - k
                inside_chunk = at >= 0
                is_bs = np.zeros(len(quotes), bool)
                is_bs[inside_chunk] = b[at[inside_chunk]] == 92
                run += open_ & is_bs
                run += (open_ & ~inside_chunk) * carried  # the run reached the chunk start: add the last one's tail
                open_ &= is_bs
                k += 1
            quotes = quotes[run % 2 == 0]
            folded = b | 32  # '[' -> '{' and ']' -> '}'; no other byte lands on either
            pos = np.flatnonzero((folded == 123) | (folded == 125))
            step = np.where(folded[pos] == 123, 1, -1)
            outside = (np.searchsorted(quotes, pos) + in_string) % 2 == 0
            levels = depth + np.cumsum(step[outside])
            if levels.max(initial=depth) > MAX_DEPTH:
                raise DataError(path, f"malformed JSON: nested more than {MAX_DEPTH} deep")
            depth = int(levels[-1]) if len(levels) else depth
            in_string = (in_string + len(quotes)) % 2
            if b[-1] == 92:
                other = np.flatnonzero(b != 92)
                carried = len(b) - 1 - int(other[-1]) if len(other) else len(b) + carried
            else:
                carried = 0


def _stream(path: Path, prefix: str, what: str, last_of=None) -> Iterator[dict]:
    """Yield the objects at `prefix`; turn parse errors into DataError naming the last good record."""
    _check_top_level(path, what)
    _check_depth(path)
    last: Any = None
    try:
        with open(path, "rb") as f:
            for obj in ijson.items(f, prefix, use_float=True):
                yield obj
                if last_of is not None:
                    last = last_of(obj, last)
                elif isinstance(obj, dict):
                    last = obj.get("region_id", obj.get("id", obj.get("image_id")))
    except FileNotFoundError as e:
        raise DataError(path, "file not found") from e
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as e:
        where = f"after {what} {last}" if last is not None else f"before the first {what}"
        raise DataError(path, f"truncated or malformed JSON {where}: {e}", record=last) from e


def _last_region(entry: Any, last: Any) -> Any:
    regions = entry.get("regions") if isinstance(entry, dict) else None
    if isinstance(regions, list) and regions and isinstance(regions[-1], dict):
        return regions[-1].get("region_id", regions[-1].get("id", last))
    return last


def _image_entries(path: Path, what: str) -> Iterator[tuple[int, list]]:
    """(entry index, its regions list) per image entry; an entry without a list is a DataError."""
    for i, entry in enumerate(_stream(path, "item", what, _last_region)):
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if not isinstance(regions, list):
            image = entry.get("id", entry.get("image_id")) if isinstance(entry, dict) else None
            raise DataError(path, f"image entry {i} (image {image}) has no 'regions' list", record=f"[{i}]")
        yield i, regions


def iter_regions(path: str | Path, skips: SkipCounter | None = None) -> Iterator[tuple]:
    """(image_id, region_id, phrase, x, y, width, height) per region, streamed."""
    path = Path(path)
    for _, regions in _image_entries(path, "region"):
        for r in regions:
            if skips is not None:
                skips.read("regions")
            rid = r.get("region_id", r.get("id")) if isinstance(r, dict) else None
            try:
                image = r["image_id"] if "image_id" in r else r["image"]
                phrase = r.get("phrase")
                if phrase is not None and not isinstance(phrase, str):
                    raise TypeError(f"phrase {phrase!r}")
                row = (_id(image), _id(rid), "" if phrase is None else phrase,
                       _number(r["x"]), _number(r["y"]), _number(r["width"]), _number(r["height"]))
            except (KeyError, TypeError, ValueError):
                if skips is None:
                    raise DataError(path, "region lacks a field or has a non-numeric box, id or phrase",
                                    record=rid) from None
                skips.add("malformed_region", path, rid)
                continue
            yield row


def _drop_duplicates(df: pd.DataFrame, column: str, reason: str, path: Path,
                     skips: SkipCounter | None) -> pd.DataFrame:
    dup = df[column].duplicated()
    if not dup.any():
        return df
    first = df.loc[dup, column].iloc[0]
    if skips is None:
        raise DataError(path, f"{column} listed {int(dup.sum())} more time(s) than once", record=first)
    skips.add(reason, path, first, n=int(dup.sum()))
    return df.loc[~dup].reset_index(drop=True)


def load_regions(path: str | Path, skips: SkipCounter | None = None) -> pd.DataFrame:
    """All regions of region_descriptions.json as a frame (columns REGION_COLUMNS)."""
    path = Path(path)
    # Typed arrays for the numbers (8 bytes a value, not a Python object each): full VG is 5.4M rows.
    cols: list = [array("q"), array("q"), []] + [array("d") for _ in REGION_COLUMNS[3:]]
    for row in iter_regions(path, skips):
        for c, v in zip(cols, row):
            c.append(v)
    df = pd.DataFrame({
        "image_id": np.frombuffer(cols[0], np.int64).copy(), "region_id": np.frombuffer(cols[1], np.int64).copy(),
        "phrase": pd.Series(cols[2], dtype=object),
        **{name: np.frombuffer(c, np.float64).copy() for name, c in zip(REGION_COLUMNS[3:], cols[3:])},
    })
    df = _drop_duplicates(df, "region_id", "duplicate_region_id", path, skips)
    log.info("read %d regions of %d images from %s", len(df), df["image_id"].nunique(), path)
    return df


def _optional_id(value: Any) -> int | None:
    return None if value is None else _id(value)


def load_images(path: str | Path, skips: SkipCounter | None = None) -> pd.DataFrame:
    """image_data.json as a frame (columns IMAGE_COLUMNS); v1.0's `id` becomes image_id."""
    path = Path(path)
    rows = []
    for im in _stream(path, "item", "image"):
        if skips is not None:
            skips.read("images")
        iid = im.get("image_id", im.get("id")) if isinstance(im, dict) else None
        try:
            width, height = _id(im["width"]), _id(im["height"])
            if width <= 0 or height <= 0:
                raise ValueError(f"size {width}x{height}")
            rows.append((_id(iid), width, height, im.get("url"),
                         _optional_id(im.get("coco_id")), _optional_id(im.get("flickr_id"))))
        except (KeyError, TypeError, ValueError):
            if skips is None:
                raise DataError(path, "image lacks a field or has a non-numeric id or size", record=iid) from None
            skips.add("malformed_image", path, iid)
    df = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    df["image_id"] = df["image_id"].astype(np.int64)
    for c in ("coco_id", "flickr_id"):
        df[c] = pd.array(df[c], dtype="Int64")
    return _drop_duplicates(df, "image_id", "duplicate_image", path, skips)


def load_region_graph_counts(path: str | Path, skips: SkipCounter | None = None) -> pd.DataFrame:
    """Per region of region_graphs.json: how many objects and relationships its graph has."""
    path = Path(path)
    rows = []
    for _, regions in _image_entries(path, "region graph"):
        for r in regions:
            if skips is not None:
                skips.read("region_graphs")
            rid = r.get("region_id", r.get("id")) if isinstance(r, dict) else None
            try:
                objects, relationships = r.get("objects") or [], r.get("relationships") or []
                if not (isinstance(objects, list) and isinstance(relationships, list)):
                    raise TypeError("objects and relationships must be lists")
                rows.append((_id(rid), len(objects), len(relationships)))
            except (AttributeError, TypeError, ValueError):
                if skips is None:
                    raise DataError(path, "region graph lacks a region id or has non-list objects/relationships",
                                    record=rid) from None
                skips.add("malformed_region_graph", path, rid)
    df = pd.DataFrame(rows, columns=["region_id", "n_objects", "n_relationships"]).astype(np.int64)
    return _drop_duplicates(df, "region_id", "duplicate_region_graph", path, skips)


def find_file(root: str | Path, name: str) -> Path | None:
    """`name` (or its `name_samples.json` sample form) under a raw VG root."""
    root = Path(root)
    for candidate in (root / name, root / f"{name}_samples.json"):
        if candidate.exists():
            return candidate
    return None
