"""The procedural backend's image operations: real, deterministic and fast (numpy and Pillow).

Every operation is a pure function of its inputs. Text-to-image draws a gradient sky, value
noise and a few shapes whose colours come from the prompt's colour words and whose layout
comes from a random generator seeded by (prompt, seed, aspect ratio, model), drawn in
coordinates relative to the size, so equal inputs give equal pixels, a new seed a new
picture, and twice the size the same composition (a half-size preview keeps its layout).
The others are the textbook operations: alpha blending for image-to-image, a masked blend
for inpainting, Lanczos resampling for upscaling, a border-colour matte for background
removal, Canny edges with the two thresholds and hysteresis, and colour statistics for
captions.

ControlNet preprocessors other than ``canny`` are approximations, documented in
:func:`preprocess`: depth is blurred luminance, soft edges and scribbles are gradient
magnitudes, line art and MLSD are Canny edges, normals come from luminance gradients, pose
is the subject's outline, segmentation is colour quantisation, shuffle permutes tiles and
tile blurs.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

__all__ = [
    "Pixels",
    "blend",
    "canny",
    "caption",
    "decode",
    "encode",
    "enhance_prompt",
    "guide",
    "inpaint",
    "preprocess",
    "remove_background",
    "render",
    "resize",
    "upscale",
]

Pixels = npt.NDArray[np.uint8]  # (height, width, 3) RGB or (height, width, 4) RGBA

COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (200, 32, 32),
    "orange": (236, 128, 24),
    "yellow": (240, 212, 40),
    "gold": (212, 175, 55),
    "green": (40, 160, 60),
    "teal": (0, 128, 128),
    "cyan": (40, 200, 220),
    "blue": (36, 72, 200),
    "navy": (20, 30, 110),
    "purple": (120, 40, 160),
    "violet": (150, 90, 210),
    "magenta": (210, 40, 160),
    "pink": (240, 150, 190),
    "brown": (120, 72, 36),
    "black": (16, 16, 16),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "silver": (192, 192, 196),
}
# Colours a caption may name: the palette above without its synonym.
_NAMED: Final = {k: v for k, v in COLOURS.items() if k != "grey"}

ProgressFn = Callable[[int, int, Pixels], None]  # step, steps, the image so far


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _colour_words(text: str | None) -> list[str]:
    words = (text or "").lower().replace(",", " ").replace(".", " ").split()
    return [w for w in words if w in COLOURS]


def _palette(
    prompt: str, avoid: str | None, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    banned = {COLOURS[w] for w in _colour_words(avoid)}
    named = [COLOURS[w] for w in _colour_words(prompt) if COLOURS[w] not in banned]
    random = [(int(r), int(g), int(b)) for r, g, b in rng.integers(0, 256, (4, 3))]
    return (named + random)[:4]


# -- codecs --------------------------------------------------------------------------------


def encode(pixels: Pixels, fmt: str) -> bytes:
    """Encode pixels as ``jpeg`` or ``png`` (RGBA is always PNG: JPEG has no alpha)."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "png" or pixels.shape[2] == 4:
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


#: The formats decoded: never one whose plugin calls out to another program (EPS), or
#: whose size is cheap to lie about.
DECODED_FORMATS: Final = ("PNG", "JPEG", "WEBP")


def decode(data: bytes, *, alpha: bool = False, max_pixels: int = 4096 * 4096) -> Pixels:
    """Decode PNG, JPEG or WebP bytes to RGB (or RGBA) pixels.

    The size is read from the header and checked against ``max_pixels`` before a single
    pixel is decoded (a few KiB of PNG can claim gigapixels). Raises ``ValueError`` for
    anything else, naming why."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise ValueError(
                    f"is {image.width}x{image.height}, more than the {max_pixels} pixels "
                    "this server decodes"
                )
            image.load()
            return np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable PNG, JPEG or WebP image: {exc}") from exc


def resize(pixels: Pixels, width: int, height: int) -> Pixels:
    """Resample to ``width`` x ``height`` (bilinear); unchanged if already that size."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))


def _gray(pixels: Pixels) -> npt.NDArray[np.float32]:
    return np.asarray(Image.fromarray(pixels[..., :3]).convert("L"), dtype=np.float32)


# -- generation ----------------------------------------------------------------------------


def render(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    model: str,
    *,
    steps: int = 20,
    guidance: float = 7.5,
    avoid: str | None = None,
    style: int | None = None,
    progress: ProgressFn | None = None,
) -> Pixels:
    """Draw the image for (prompt, seed, width, height, model).

    Colours named in ``avoid`` (the negative prompt) are left out of the palette; ``style``
    picks another layout. ``guidance`` (0-10) sets how strongly the prompt's shapes stand
    out. The image is assembled in ``steps`` horizontal bands over the background, and
    ``progress(step, steps, pixels_so_far)`` is called after each (it may raise to cancel).
    """
    common = math.gcd(width, height)  # the aspect ratio: one layout at every scale
    rng = _rng("render", prompt, seed, width // common, height // common, model, avoid, style)
    palette = _palette(prompt, avoid, rng)
    base = _background(rng, palette, width, height)
    shapes = Image.fromarray(base)
    _draw_shapes(ImageDraw.Draw(shapes), rng, palette, width, height)
    drawn = np.asarray(shapes)
    alpha = 0.5 + 0.05 * min(max(guidance, 0.0), 10.0)
    out = base.copy()  # what a preview shows of the bands not yet drawn
    bounds = np.linspace(0, height, max(1, steps) + 1).astype(int)
    for step, (top, bottom) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), 1):
        band = drawn[top:bottom].astype(np.float32) * alpha
        band += base[top:bottom].astype(np.float32) * (1 - alpha)
        out[top:bottom] = band.astype(np.uint8)
        if progress is not None:
            progress(step, len(bounds) - 1, out)
    return out


def _background(
    rng: np.random.Generator, palette: Sequence[tuple[int, int, int]], width: int, height: int
) -> Pixels:
    top, bottom = np.array(palette[1], np.float32), np.array(palette[2], np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = top * (1 - ramp) + bottom * ramp  # (height, 1, 3), broadcast over columns
    grid = rng.integers(0, 256, (int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3))
    noise = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    mixed = sky * 0.75 + np.asarray(noise, np.float32) * 0.25
    return mixed.clip(0, 255).astype(np.uint8)


def _draw_shapes(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    palette: Sequence[tuple[int, int, int]],
    width: int,
    height: int,
) -> None:
    # The subject first, large and in the prompt's first colour; then smaller companions.
    sizes = [0.45, *rng.uniform(0.08, 0.25, int(rng.integers(2, 6)))]
    for i, size in enumerate(sizes):
        cx, cy = rng.uniform(0.3, 0.7) if i == 0 else rng.uniform(0, 1), rng.uniform(0.25, 0.75)
        rx, ry = size * width / 2, size * height / 2 * rng.uniform(0.6, 1.4)
        box = (cx * width - rx, cy * height - ry, cx * width + rx, cy * height + ry)
        colour = palette[0] if i == 0 else palette[3 - i % 2]
        if i and rng.random() < 0.5:
            draw.rectangle(box, fill=colour)
        else:
            draw.ellipse(box, fill=colour)


def blend(init: Pixels, generated: Pixels, strength: float) -> Pixels:
    """Image-to-image: move ``strength`` (0-1) of the way from ``init`` to ``generated``."""
    init = resize(init[..., :3], generated.shape[1], generated.shape[0])
    mixed = init.astype(np.float32) * (1 - strength) + generated.astype(np.float32) * strength
    return mixed.round().astype(np.uint8)


def inpaint(init: Pixels, mask: Pixels, generated: Pixels, strength: float = 1.0) -> Pixels:
    """Repaint where ``mask`` is light (>= 128); every other pixel of ``init`` is kept exactly."""
    height, width = generated.shape[:2]
    init = resize(init[..., :3], width, height)
    inside = _gray(resize(mask, width, height)) >= 128
    out = init.copy()
    out[inside] = blend(init[inside][None], generated[inside][None], strength)[0]
    return out


def guide(generated: Pixels, control: Pixels, weight: float) -> Pixels:
    """ControlNet: pull the image towards the guide's light structure by ``weight`` (0-1)."""
    height, width = generated.shape[:2]
    lines = _gray(resize(control, width, height))[..., None] / 255.0 * weight
    ink = 255.0 - generated.astype(np.float32).mean(axis=(0, 1))  # contrast with the image
    out: npt.NDArray[np.float32] = generated.astype(np.float32) * (1 - lines) + ink * lines
    return out.clip(0, 255).astype(np.uint8)


# -- operations on images ------------------------------------------------------------------


def upscale(pixels: Pixels, factor: int) -> Pixels:
    """Resize by ``factor`` with Lanczos resampling."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels).resize(
        (width * factor, height * factor), Image.Resampling.LANCZOS
    )
    return np.asarray(image)


def remove_background(pixels: Pixels, tolerance: int = 24) -> Pixels:
    """Return RGBA where the alpha is 0 on the background, taken as the border's median colour.

    Pixels within ``tolerance`` (per channel) of that colour are transparent, pixels twice as
    far are opaque, with a linear ramp between for soft edges.
    """
    rgb = pixels[..., :3]
    border = np.concatenate(
        [
            rgb[:2].reshape(-1, 3),
            rgb[-2:].reshape(-1, 3),
            rgb[:, :2].reshape(-1, 3),
            rgb[:, -2:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    distance = np.abs(rgb.astype(np.float32) - background).max(axis=2)
    alpha = ((distance - tolerance) * (255.0 / tolerance)).clip(0, 255).astype(np.uint8)
    alpha = np.asarray(Image.fromarray(alpha).filter(ImageFilter.MedianFilter(3)))
    return np.dstack([rgb, alpha])


def canny(pixels: Pixels, low: int = 100, high: int = 200) -> Pixels:
    """Canny edges (white on black): Gaussian blur, Sobel gradients (L1 magnitude),
    non-maximum suppression, and hysteresis between ``low`` and ``high``."""
    gray = np.asarray(
        Image.fromarray(pixels[..., :3]).convert("L").filter(ImageFilter.GaussianBlur(1.4)),
        dtype=np.float32,
    )
    gx, gy = _sobel(gray)
    magnitude = np.abs(gx) + np.abs(gy)
    thin = _non_maximum(magnitude, gx, gy)
    strong, weak = thin >= high, thin >= low
    edges = _hysteresis(strong, weak)
    out = np.where(edges, 255, 0).astype(np.uint8)
    return np.dstack([out, out, out])


def _sobel(
    gray: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return gx, gy


def _non_maximum(
    magnitude: npt.NDArray[np.float32], gx: npt.NDArray[np.float32], gy: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    # Quantise the gradient direction to 0, 45, 90 or 135 degrees; keep a pixel only if it is
    # no smaller than both neighbours along that direction.
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45) % 4).astype(np.int8)
    p = np.pad(magnitude, 1)
    h, w = magnitude.shape
    neighbours = {
        0: (p[1:-1, :-2], p[1:-1, 2:]),
        1: (p[:-2, :-2], p[2:, 2:]),  # gradient down-right (rows grow downwards)
        2: (p[:-2, 1:-1], p[2:, 1:-1]),
        3: (p[2:, :-2], p[:-2, 2:]),
    }
    keep = np.zeros((h, w), dtype=bool)
    for s, (a, b) in neighbours.items():
        keep |= (sector == s) & (magnitude >= a) & (magnitude >= b)
    return np.where(keep, magnitude, 0).astype(np.float32)


def _hysteresis(
    strong: npt.NDArray[np.bool_], weak: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    # Keep every weak pixel 8-connected to a strong one: label the weak components and keep
    # the labels that contain a strong pixel.
    labels, _ = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    keep = np.unique(labels[strong])
    return np.isin(labels, keep[keep > 0])


def preprocess(
    pixels: Pixels, kind: str, *, low: int = 100, high: int = 200, seed: int = 0
) -> Pixels:
    """A ControlNet guide image of ``pixels`` (RGB out); see the module docstring."""
    rgb = pixels[..., :3]
    family = kind.split("_")[0]
    if family in ("canny", "lineart", "mlsd"):
        return canny(rgb, low, high) if family == "canny" else canny(rgb, 50, 120)
    gray = _gray(rgb)
    if family == "depth":
        out = np.asarray(Image.fromarray(gray.astype(np.uint8)).filter(ImageFilter.GaussianBlur(6)))
    elif family in ("softedge", "scribble"):
        gx, gy = _sobel(gray)
        magnitude = np.hypot(gx, gy)
        out = (magnitude * (255.0 / max(float(magnitude.max()), 1.0))).astype(np.uint8)
        if family == "scribble":
            out = np.where(out > 64, 255, 0).astype(np.uint8)
    elif family == "normal":
        gx, gy = _sobel(
            np.asarray(
                Image.fromarray(gray.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2)),
                np.float32,
            )
        )
        normal = np.dstack([-gx, -gy, np.full_like(gx, 255.0)])
        normal /= np.linalg.norm(normal, axis=2, keepdims=True)
        return ((normal + 1.0) * 127.5).astype(np.uint8)
    elif family == "openpose":
        alpha = remove_background(rgb)[..., 3]
        out = canny(np.dstack([alpha, alpha, alpha]), 50, 150)[..., 0]
    elif family == "seg":
        quantised = Image.fromarray(rgb).quantize(8, method=Image.Quantize.MEDIANCUT)
        return np.asarray(quantised.convert("RGB"))
    elif family == "shuffle":
        return _shuffle(rgb, seed)
    elif family == "tile":
        return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(4)))
    else:  # inpaint_global_harmonious: the image is its own guide
        return rgb.copy()
    return np.dstack([out, out, out])


def _shuffle(rgb: Pixels, seed: int, tiles: int = 4) -> Pixels:
    h, w = (rgb.shape[0] // tiles) * tiles, (rgb.shape[1] // tiles) * tiles
    th, tw = h // tiles, w // tiles
    blocks = [
        rgb[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
        for r in range(tiles)
        for c in range(tiles)
    ]
    order = _rng("shuffle", seed).permutation(len(blocks))
    rows = [np.hstack([blocks[order[r * tiles + c]] for c in range(tiles)]) for r in range(tiles)]
    out = rgb.copy()
    out[:h, :w] = np.vstack(rows)
    return out


# -- words ---------------------------------------------------------------------------------


def _colour_name(rgb: npt.NDArray[np.float32]) -> str:
    names = list(_NAMED)
    table = np.array([_NAMED[n] for n in names], np.float32)
    return names[int(np.argmin(((table - rgb) ** 2).sum(axis=1)))]


def caption(pixels: Pixels, prompt: str | None = None) -> str:
    """Describe an image: its main colours, brightness, composition, and its prompt if known."""
    small = np.asarray(Image.fromarray(pixels[..., :3]).resize((48, 48)), np.float32).reshape(-1, 3)
    names = [_colour_name(p) for p in small]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    main = sorted(counts, key=lambda n: -counts[n])[:3]
    luminance = float(small.mean())
    light = "dark" if luminance < 85 else "bright" if luminance > 170 else "softly lit"
    height, width = pixels.shape[:2]
    shape = "square" if width == height else "landscape" if width > height else "portrait"
    text = (
        f"a {light} {shape} image in {', '.join(main[:-1])} and {main[-1]}, {_composition(pixels)}"
    )
    return f"{prompt}: {text}" if prompt else text


def _composition(pixels: Pixels) -> str:
    alpha = remove_background(pixels)[..., 3].astype(np.float32)
    total = float(alpha.sum())
    if total < 0.02 * 255 * alpha.size:
        return "with no distinct subject"
    ys, xs = np.indices(alpha.shape)
    cx = float((xs * alpha).sum() / total) / alpha.shape[1]
    cy = float((ys * alpha).sum() / total) / alpha.shape[0]
    horizontal = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
    vertical = "upper " if cy < 0.4 else "lower " if cy > 0.6 else ""
    place = (
        "the centre" if (horizontal, vertical) == ("centre", "") else f"the {vertical}{horizontal}"
    )
    return f"with its subject in {place}"


_MODIFIERS: Final = (
    ("highly detailed", "intricate detail", "sharp focus", "fine texture", "crisp lines"),
    (
        "golden hour light",
        "soft studio lighting",
        "dramatic rim light",
        "overcast daylight",
        "moody low-key lighting",
        "neon glow",
    ),
    (
        "cinematic composition",
        "wide angle",
        "close-up portrait",
        "rule of thirds",
        "aerial view",
        "symmetrical framing",
    ),
    (
        "oil painting",
        "digital art",
        "35mm photograph",
        "watercolour",
        "concept art",
        "isometric render",
    ),
    ("trending colour palette", "rich colours", "muted tones", "high contrast", "pastel hues"),
)


def enhance_prompt(prompt: str, versions: int, max_length: int) -> list[str]:
    """``versions`` distinct richer prompts, each starting with the prompt and at most
    ``max_length`` characters.

    Raises:
        ValueError: ``max_length`` leaves no room for that many distinct versions.
    """
    subject = _cut(prompt.strip(), max_length)
    out: list[str] = []
    for version in range(versions):
        rng = _rng("enhance", prompt, version)
        picks = [group[int(rng.integers(len(group)))] for group in _MODIFIERS]
        # Each version leads with a different modifier, so the versions differ even when
        # only one modifier fits.
        lead = _MODIFIERS[version % len(_MODIFIERS)][version // len(_MODIFIERS)]
        picks = [lead, *(p for p in picks if p != lead)]
        text = subject
        for word in picks:
            if len(text) + 2 + len(word) > max_length:
                break
            text = f"{text}, {word}"
        out.append(text)
    if len(set(out)) < versions:
        raise ValueError(
            f"promptMaxLength {max_length} leaves no room for {versions} distinct versions"
        )
    return out


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut or text[:limit]
