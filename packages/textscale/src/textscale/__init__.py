"""TextScale: adaptive-scale text detection (Richardson et al., WACV 2020).

A segmentation network that also predicts the scale of the text looks at a down-scaled image first; the text
regions it finds are cut from the full-resolution image, brought to one canonical text height, packed into one
canvas and detected again there.
"""

__version__ = "0.1.0"
