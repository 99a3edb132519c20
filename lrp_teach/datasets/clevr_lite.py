"""CLEVR-lite: seeded Sort-of-CLEVR scenes with template questions and ground-truth masks.

A scene is a ``48 x 48`` RGB image of a grey floor, lit from the top left (a brightness ramp of
:data:`FLOOR_SHADE` across the image) with seeded pixel noise of standard deviation
:data:`FLOOR_NOISE`, and on it one object of each of five colours (red, green, blue, yellow,
magenta), each an ``8 x 8`` square, circle or triangle in a muted colour with a mild shading of
its own. No pixel is exactly 0 or 1, as in CLEVR's renderings and unlike a black void: a method
of the form :math:`R_p = x_p c_p` can put relevance on the floor. The image is a ``4 x 4``
grid of ``12``-pixel cells; every object sits near the centre of its own cell (with a random
jitter of up to one pixel), so objects never overlap and each cell of a ``4 x 4`` feature map
holds at most one object. This is the Sort-of-CLEVR set-up of Santoro et al. 2017 (``santoro2017``)
with the object-level cells the relation network assumes.

Questions are word sequences built from five templates, two non-relational and three
relational, each with its answer and its functional program (a list of ``(function,
argument)`` steps that :func:`execute` runs on the scene, as in CLEVR):

=========  ==========================================================  ===========
type       template                                                    answers
=========  ==========================================================  ===========
shape      what shape is the {c} object ?                              shapes
left       is the {c} object on the left ?                             yes / no
closest    what shape is the object closest to the {c} object ?        shapes
furthest   what shape is the object furthest from the {c} object ?     shapes
count      how many objects have the same shape as the {c} one ?       1 ... 5
=========  ==========================================================  ===========

Closest/furthest questions are kept only when the answer is unambiguous: the best distance
beats the runner-up by at least :data:`MARGIN` pixels.

Ground-truth masks follow CLEVR-XAI (Arras, Osman & Samek 2022, ``arras2022clevrxai``):
"single" is the object the answer is about (the coloured object for shape/left/count, the
found object for closest/furthest), "union" is every object the program touches, "all" is
every object in the scene. Everything is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ANSWERS",
    "CELL",
    "FLOOR",
    "FLOOR_NOISE",
    "FLOOR_SHADE",
    "COLOURS",
    "ClevrLite",
    "GRID",
    "IMAGE_SIZE",
    "JITTER",
    "MARGIN",
    "OBJECT_SHADE",
    "OBJECT_SIZE",
    "QUESTION_TYPES",
    "RELATIONAL",
    "SHAPES",
    "SPLITS",
    "Scene",
    "VOCAB",
    "decode_question",
    "encode_question",
    "execute",
    "load_clevr_lite",
    "make_clevr_lite",
    "make_scene",
    "program_for",
    "question_for",
    "render",
    "shape_mask",
]

GRID = 4
CELL = 12
IMAGE_SIZE = GRID * CELL
OBJECT_SIZE = 8
JITTER = 1
MARGIN = 4.0

#: Base colour of each object (RGB in [0, 1]; no channel at 0 or 1).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.12, 0.75, 0.15),
    "blue": (0.12, 0.22, 0.90),
    "yellow": (0.92, 0.85, 0.12),
    "magenta": (0.82, 0.12, 0.80),
}
#: Mean brightness of the grey floor.
FLOOR = 0.45
#: The floor's brightness falls by this much from the top-left to the bottom-right corner.
FLOOR_SHADE = 0.12
#: Standard deviation of the floor's per-pixel noise (clipped to [0.02, 0.98]).
FLOOR_NOISE = 0.03
#: An object's brightness falls by this factor from its top-left to its bottom-right pixel.
OBJECT_SHADE = 0.2
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("square", "circle", "triangle")
N_OBJECTS = len(COLOURS)

QUESTION_TYPES = ("shape", "left", "closest", "furthest", "count")
RELATIONAL = ("closest", "furthest", "count")
TEMPLATES = {
    "shape": "what shape is the {c} object ?",
    "left": "is the {c} object on the left ?",
    "closest": "what shape is the object closest to the {c} object ?",
    "furthest": "what shape is the object furthest from the {c} object ?",
    "count": "how many objects have the same shape as the {c} one ?",
}
ANSWERS = (*SHAPES, "yes", "no", *[str(k) for k in range(1, N_OBJECTS + 1)])

_WORDS = sorted({w for t in TEMPLATES.values() for w in t.split() if w != "{c}"}
                | set(COLOUR_NAMES))
#: Token vocabulary; index 0 is padding.
VOCAB: tuple[str, ...] = ("<pad>", *_WORDS)
_INDEX = {w: i for i, w in enumerate(VOCAB)}
MAX_LENGTH = max(len(t.split()) for t in TEMPLATES.values())

#: Seeds and default number of scenes of the three splits.
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 8000), "val": (1, 300), "test": (2, 600)}


def shape_mask(shape: str, size: int = OBJECT_SIZE) -> np.ndarray:
    """Boolean ``size x size`` footprint of ``shape`` (square, circle or upward triangle)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    c = (size - 1) / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= (size / 2) ** 2 - 2
    return np.abs(xx - c) <= (yy + 1) / 2


@dataclass(frozen=True)
class Scene:
    """One scene: object ``k`` has colour ``COLOUR_NAMES[k]``.

    Attributes
    ----------
    shapes : tuple of str
        Shape of each object.
    cells : tuple of (int, int)
        ``(row, column)`` grid cell of each object.
    offsets : tuple of (int, int)
        Pixel offset ``(dy, dx)`` of the object's corner inside its cell, each within
        :data:`JITTER` of ``(CELL - OBJECT_SIZE) / 2``.
    """

    shapes: tuple[str, ...]
    cells: tuple[tuple[int, int], ...]
    offsets: tuple[tuple[int, int], ...]

    def corner(self, k: int) -> tuple[int, int]:
        """Top-left pixel of object ``k``."""
        (r, c), (dy, dx) = self.cells[k], self.offsets[k]
        return r * CELL + dy, c * CELL + dx

    def centre(self, k: int) -> tuple[float, float]:
        """Pixel centre ``(y, x)`` of object ``k``."""
        y, x = self.corner(k)
        half = (OBJECT_SIZE - 1) / 2
        return y + half, x + half

    def distance(self, i: int, j: int) -> float:
        """Euclidean distance in pixels between the centres of objects ``i`` and ``j``."""
        (yi, xi), (yj, xj) = self.centre(i), self.centre(j)
        return float(np.hypot(yi - yj, xi - xj))

    def masks(self) -> np.ndarray:
        """Boolean masks ``(N_OBJECTS, H, W)`` of the pixels of each object."""
        out = np.zeros((N_OBJECTS, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        for k, shape in enumerate(self.shapes):
            y, x = self.corner(k)
            out[k, y:y + OBJECT_SIZE, x:x + OBJECT_SIZE] = shape_mask(shape)
        return out


def make_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene: distinct random cells, random shapes and jitters (one object per colour)."""
    cells = rng.choice(GRID * GRID, size=N_OBJECTS, replace=False)
    shapes = rng.integers(0, len(SHAPES), size=N_OBJECTS)
    offsets = (CELL - OBJECT_SIZE) // 2 + rng.integers(-JITTER, JITTER + 1, size=(N_OBJECTS, 2))
    return Scene(
        shapes=tuple(SHAPES[s] for s in shapes),
        cells=tuple((int(c) // GRID, int(c) % GRID) for c in cells),
        offsets=tuple((int(a), int(b)) for a, b in offsets),
    )


def render(scene: Scene, noise_seed: int | None = None) -> np.ndarray:
    """The ``(3, H, W)`` float32 image of ``scene``: shaded grey floor and shaded objects.

    The floor is :data:`FLOOR` minus a linear ramp of total :data:`FLOOR_SHADE` from the
    top-left to the bottom-right corner, plus Gaussian noise of standard deviation
    :data:`FLOOR_NOISE` drawn from ``noise_seed`` (none when ``None``), clipped to
    ``[0.02, 0.98]``. Each object has its colour from :data:`COLOURS`, darkened by up to
    :data:`OBJECT_SHADE` towards its bottom-right pixel. All values lie strictly in (0, 1).
    """
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / (IMAGE_SIZE - 1)
    floor = FLOOR + FLOOR_SHADE * (0.5 - (xx + yy) / 2)
    if noise_seed is not None:
        floor = floor + FLOOR_NOISE * np.random.default_rng(noise_seed).standard_normal(
            floor.shape).astype(np.float32)
    image = np.repeat(np.clip(floor, 0.02, 0.98)[None], 3, axis=0).astype(np.float32)
    oy, ox = np.mgrid[0:OBJECT_SIZE, 0:OBJECT_SIZE].astype(np.float32) / (OBJECT_SIZE - 1)
    light = 1.0 - OBJECT_SHADE * (ox + oy) / 2
    for k, shape in enumerate(scene.shapes):
        y, x = scene.corner(k)
        footprint = shape_mask(shape)
        colour = np.asarray(COLOURS[COLOUR_NAMES[k]], dtype=np.float32)
        patch = image[:, y:y + OBJECT_SIZE, x:x + OBJECT_SIZE]
        patch[:, footprint] = (colour[:, None, None] * light[None])[:, footprint]
    return image


def program_for(qtype: str, colour: str) -> list[tuple[str, str | None]]:
    """The functional program of a question of type ``qtype`` about the ``colour`` object."""
    if qtype not in TEMPLATES:
        raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {COLOUR_NAMES}")
    head = [("filter_colour", colour), ("unique", None)]
    tail = {
        "shape": [("query_shape", None)],
        "left": [("query_left", None)],
        "closest": [("relate_closest", None), ("query_shape", None)],
        "furthest": [("relate_furthest", None), ("query_shape", None)],
        "count": [("same_shape", None), ("count", None)],
    }[qtype]
    return head + tail


def question_for(qtype: str, colour: str) -> list[str]:
    """The words of the question of type ``qtype`` about the ``colour`` object."""
    program_for(qtype, colour)  # validates both arguments
    return TEMPLATES[qtype].format(c=colour).split()


def encode_question(words: list[str]) -> list[int]:
    """Token ids of ``words`` in :data:`VOCAB`."""
    unknown = [w for w in words if w not in _INDEX]
    if unknown:
        raise ValueError(f"words not in the CLEVR-lite vocabulary: {unknown}")
    return [_INDEX[w] for w in words]


def decode_question(tokens, length: int | None = None) -> list[str]:
    """Words of a token sequence (padding dropped)."""
    ids = [int(t) for t in tokens][:length]
    return [VOCAB[i] for i in ids if i != 0]


def execute(program: list[tuple[str, str | None]], scene: Scene,
            margin: float = 0.0) -> tuple[str | None, list[int], int]:
    """Run ``program`` on ``scene``.

    Returns
    -------
    answer : str or None
        The answer, or ``None`` when a closest/furthest step is ambiguous (the best and
        second-best distances differ by less than ``margin`` pixels).
    touched : list of int
        The objects the program's steps output (the "GT union" objects).
    single : int
        The object the answer is about (the "GT single object").
    """
    current: list[int] = list(range(N_OBJECTS))
    touched: list[int] = []
    single = -1
    value: str | None = None
    for function, argument in program:
        if function == "filter_colour":
            current = [COLOUR_NAMES.index(argument)]
        elif function == "unique":
            if len(current) != 1:
                raise ValueError("unique needs exactly one object")
            single = current[0]
            touched.append(single)
        elif function in ("relate_closest", "relate_furthest"):
            ref = current[0]
            others = sorted((scene.distance(ref, j), j) for j in range(N_OBJECTS) if j != ref)
            if function == "relate_furthest":
                others = others[::-1]
            if abs(others[0][0] - others[1][0]) < max(margin, 1e-9):
                return None, touched, single
            current = [others[0][1]]
            single = current[0]
            touched.append(single)
        elif function == "same_shape":
            shape = scene.shapes[current[0]]
            current = [j for j in range(N_OBJECTS) if scene.shapes[j] == shape]
            touched.extend(j for j in current if j not in touched)
        elif function == "query_shape":
            value = scene.shapes[current[0]]
        elif function == "query_left":
            value = "yes" if scene.centre(current[0])[1] < IMAGE_SIZE / 2 else "no"
        elif function == "count":
            value = str(len(current))
        else:
            raise ValueError(f"unknown program function {function!r}")
    return value, sorted(touched), single


@dataclass
class ClevrLite:
    """Scenes and questions of one split.

    Attributes
    ----------
    images : torch.Tensor
        ``(S, 3, 48, 48)`` float32 images in [0, 1].
    object_masks : torch.Tensor
        ``(S, 5, 48, 48)`` bool pixel masks of each scene's objects (object k has colour k).
    scenes : list of Scene
    scene_index : torch.Tensor
        ``(Q,)`` scene of each question.
    questions : torch.Tensor
        ``(Q, L)`` token ids, right-padded with 0.
    lengths : torch.Tensor
        ``(Q,)`` number of words of each question.
    answers : torch.Tensor
        ``(Q,)`` answer index in :data:`ANSWERS`.
    qtypes : torch.Tensor
        ``(Q,)`` question type index in :data:`QUESTION_TYPES`.
    programs : list
        The functional program of each question.
    single : torch.Tensor
        ``(Q,)`` the "GT single object" of each question.
    union : torch.Tensor
        ``(Q, 5)`` bool, the objects of the "GT union".
    """

    images: torch.Tensor
    object_masks: torch.Tensor
    scenes: list[Scene]
    scene_index: torch.Tensor
    questions: torch.Tensor
    lengths: torch.Tensor
    answers: torch.Tensor
    qtypes: torch.Tensor
    programs: list
    single: torch.Tensor
    union: torch.Tensor

    low: float = 0.0
    high: float = 1.0

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def relational(self) -> torch.Tensor:
        """``(Q,)`` bool: is the question relational (closest, furthest, count)?"""
        rel = torch.tensor([QUESTION_TYPES.index(t) for t in RELATIONAL])
        return torch.isin(self.qtypes, rel)

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, questions, lengths, answers)`` of the questions ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return (self.images[self.scene_index[index]], self.questions[index],
                self.lengths[index], self.answers[index])

    def gt_masks(self, index) -> dict[str, torch.Tensor]:
        """Ground-truth masks ``(n, 48, 48)`` bool of the questions ``index``.

        Keys ``"single"``, ``"union"`` and ``"all"`` (CLEVR-XAI's GT Single Object, GT Union
        and GT All Objects).
        """
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        obj = self.object_masks[self.scene_index[index]]  # (n, 5, H, W)
        rows = torch.arange(len(index))
        single = obj[rows, self.single[index]]
        union = (obj & self.union[index][:, :, None, None]).any(1)
        return {"single": single, "union": union, "all": obj.any(1)}

    def text(self, i: int) -> str:
        """The question ``i`` as a string, with its answer."""
        words = decode_question(self.questions[i], int(self.lengths[i]))
        return " ".join(words) + "  ->  " + ANSWERS[int(self.answers[i])]


def make_clevr_lite(n_scenes: int, seed: int, margin: float = MARGIN) -> ClevrLite:
    """Generate ``n_scenes`` scenes with every unambiguous (type, colour) question about them.

    Each scene yields up to ``5 x 5 = 25`` questions (fewer when a closest/furthest answer is
    within ``margin`` pixels of the runner-up). The same ``(n_scenes, seed, margin)`` always
    gives the same data.

    Parameters
    ----------
    n_scenes : int
        Number of scenes (positive).
    seed : int
        Seed of the ``numpy`` generator that draws everything.
    margin : float
        Minimum gap, in pixels, between the best and second-best distance of a
        closest/furthest question.
    """
    if int(n_scenes) < 1:
        raise ValueError(f"n_scenes must be a positive integer, got {n_scenes!r}")
    rng = np.random.default_rng(seed)
    scenes, images, masks = [], [], []
    rows: list[tuple] = []
    for s in range(int(n_scenes)):
        scene = make_scene(rng)
        scenes.append(scene)
        images.append(render(scene, noise_seed=int(rng.integers(2 ** 31))))
        masks.append(scene.masks())
        for qtype in QUESTION_TYPES:
            for colour in COLOUR_NAMES:
                program = program_for(qtype, colour)
                answer, touched, single = execute(program, scene, margin=margin)
                if answer is None:
                    continue
                rows.append((s, question_for(qtype, colour), ANSWERS.index(answer),
                             QUESTION_TYPES.index(qtype), program, single, touched))
    questions = torch.zeros(len(rows), MAX_LENGTH, dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    union = torch.zeros(len(rows), N_OBJECTS, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids = encode_question(row[1])
        questions[i, :len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids)
        union[i, row[6]] = True
    return ClevrLite(
        images=torch.from_numpy(np.stack(images)),
        object_masks=torch.from_numpy(np.stack(masks)),
        scenes=scenes,
        scene_index=torch.tensor([r[0] for r in rows], dtype=torch.long),
        questions=questions,
        lengths=lengths,
        answers=torch.tensor([r[2] for r in rows], dtype=torch.long),
        qtypes=torch.tensor([r[3] for r in rows], dtype=torch.long),
        programs=[r[4] for r in rows],
        single=torch.tensor([r[5] for r in rows], dtype=torch.long),
        union=union,
    )


def load_clevr_lite(split: str = "test", n_scenes: int | None = None) -> ClevrLite:
    """The ``"train"``, ``"val"`` or ``"test"`` split (seeds and sizes in :data:`SPLITS`).

    ``n_scenes`` takes the first scenes of the split only (same seed, so a prefix of the
    full split's scenes).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    seed, default = SPLITS[split]
    return make_clevr_lite(default if n_scenes is None else n_scenes, seed=1000 + seed)
