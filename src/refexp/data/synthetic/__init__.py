"""The embedded synthetic world, written in the real datasets' own file formats.

Scenes of coloured shapes (>= 8 categories, 8 colours, small/large) over stuff
(sky, water, grass, sand, snow, ground, wall, floor), with occlusion-respecting
masks; referring expressions from a grammar that makes each target unique
(kinds: attribute, position, relation), scene captions, and Visual Genome-style
region descriptions. `generate(out_dir, n_images, seed, **SyntheticConfig fields,
formats=...)` writes out_dir/{referit,coco,visual_genome,refer}/ (layouts: writers.py;
the refer layout's UNC-Ref and G-Ref style expressions: refer_language.py);
`iter_images` yields the same world in memory.
"""
from refexp.data.synthetic.generate import FORMATS, generate, iter_images

__all__ = ["FORMATS", "generate", "iter_images"]
