"""Tests of the CLEVR-lite generator: determinism, masks, answers, non-overlap."""

import numpy as np
import pytest
import torch

from lrp_teach.datasets import clevr_lite as cl


@pytest.fixture(scope="module")
def data():
    return cl.make_clevr_lite(40, seed=7)


def _scene(shapes, cells, offsets=None):
    centred = (cl.CELL - cl.OBJECT_SIZE) // 2
    offsets = offsets or [(centred, centred)] * len(shapes)
    return cl.Scene(shapes=tuple(shapes), cells=tuple(cells), offsets=tuple(offsets))


# red, green, blue, yellow, magenta; pixel centres (y, x) = 12 * cell + 5.5:
# red (5.5, 5.5), green (5.5, 17.5), blue (41.5, 41.5), yellow (29.5, 5.5), magenta (41.5, 17.5)
HAND = _scene(["square", "circle", "triangle", "square", "circle"],
              [(0, 0), (0, 1), (3, 3), (2, 0), (3, 1)])


def test_deterministic():
    a = cl.make_clevr_lite(15, seed=3)
    b = cl.make_clevr_lite(15, seed=3)
    c = cl.make_clevr_lite(15, seed=4)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.questions, b.questions)
    assert torch.equal(a.answers, b.answers)
    assert not torch.equal(a.images, c.images)


def test_split_prefix_and_splits_differ():
    small = cl.load_clevr_lite("val", n_scenes=5)
    big = cl.load_clevr_lite("val", n_scenes=10)
    assert torch.equal(small.images, big.images[:5])
    test = cl.load_clevr_lite("test", n_scenes=5)
    assert not torch.equal(small.images, test.images)


def test_masks_match_rendered_objects(data):
    """Object pixels have their colour times the object's shading; all others are floor."""
    colours = torch.tensor([cl.COLOURS[c] for c in cl.COLOUR_NAMES])
    oy, ox = torch.meshgrid(torch.arange(cl.OBJECT_SIZE), torch.arange(cl.OBJECT_SIZE),
                            indexing="ij")
    light = 1 - cl.OBJECT_SHADE * (ox + oy).float() / (2 * (cl.OBJECT_SIZE - 1))
    for s in range(len(data.scenes)):
        image, masks, scene = data.images[s], data.object_masks[s], data.scenes[s]
        floor = image[:, ~masks.any(0)]
        assert torch.equal(floor[0], floor[1]) and torch.equal(floor[0], floor[2]), "grey"
        for k in range(cl.N_OBJECTS):
            y, x = scene.corner(k)
            footprint = torch.from_numpy(cl.shape_mask(scene.shapes[k]))
            patch = image[:, y:y + cl.OBJECT_SIZE, x:x + cl.OBJECT_SIZE]
            want = colours[k][:, None, None] * light
            torch.testing.assert_close(patch[:, footprint], want[:, footprint])
            assert int(masks[k].sum()) == int(footprint.sum())
            # an object is not grey: its channels differ by far more than the floor's noise
            assert float((patch[:, footprint].amax(0) - patch[:, footprint].amin(0)).min()) > 0.3


def test_floor_is_grey_shaded_and_never_zero(data):
    x = data.images
    assert float((x == 0).float().mean()) <= 0.05 and float(x.min()) > 0 and float(x.max()) < 1
    floor = x[:, 0][~data.object_masks.any(1)]
    assert abs(float(floor.mean()) - cl.FLOOR) < 0.02
    assert 0.5 * cl.FLOOR_NOISE < float(floor.std()) < 3 * cl.FLOOR_NOISE
    # lit from the top left: the top-left quarter is brighter than the bottom-right one
    free = ~data.object_masks.any(1)
    top, bottom = x[:, 0, :24, :24][free[:, :24, :24]], x[:, 0, 24:, 24:][free[:, 24:, 24:]]
    assert float(top.mean() - bottom.mean()) > cl.FLOOR_SHADE / 4
    # the noise differs from scene to scene
    assert not torch.equal(x[0, 0][free[0] & free[1]], x[1, 0][free[0] & free[1]])


def test_objects_do_not_overlap_and_stay_in_their_cells(data):
    for s, scene in enumerate(data.scenes):
        masks = data.object_masks[s]
        assert int(masks.sum(0).max()) == 1
        assert len(set(scene.cells)) == cl.N_OBJECTS
        for k, (r, c) in enumerate(scene.cells):
            ys, xs = torch.nonzero(masks[k], as_tuple=True)
            assert int(ys.min()) >= r * cl.CELL and int(ys.max()) < (r + 1) * cl.CELL
            assert int(xs.min()) >= c * cl.CELL and int(xs.max()) < (c + 1) * cl.CELL


def test_shapes_are_distinct_footprints():
    masks = [cl.shape_mask(s) for s in cl.SHAPES]
    assert len({m.tobytes() for m in masks}) == 3
    with pytest.raises(ValueError, match="unknown shape"):
        cl.shape_mask("star")


@pytest.mark.parametrize("qtype, colour, answer, union, single", [
    ("shape", "red", "square", [0], 0),
    ("shape", "blue", "triangle", [2], 2),
    ("left", "red", "yes", [0], 0),
    ("left", "blue", "no", [2], 2),
    ("left", "magenta", "yes", [4], 4),        # column 1 of 4: centre x = 17.5 < 24
    ("closest", "red", "circle", [0, 1], 1),    # green: 12 px; yellow: 24 px
    ("closest", "blue", "circle", [2, 4], 4),   # magenta: 24 px; yellow: 37.9 px
    ("furthest", "red", "triangle", [0, 2], 2),  # blue: 50.9 px; magenta: 37.9 px
    ("count", "red", "2", [0, 3], 0),           # red and yellow are squares
    ("count", "blue", "1", [2], 2),
    ("count", "green", "2", [1, 4], 1),
])
def test_answers_on_a_hand_checked_scene(qtype, colour, answer, union, single):
    program = cl.program_for(qtype, colour)
    got, touched, obj = cl.execute(program, HAND, margin=cl.MARGIN)
    assert (got, touched, obj) == (answer, union, single)


def test_ambiguous_relations_are_dropped():
    # green and yellow are both exactly one cell away from red
    scene = _scene(["square", "circle", "triangle", "square", "circle"],
                   [(1, 1), (1, 2), (3, 3), (2, 1), (0, 3)])
    answer, _, _ = cl.execute(cl.program_for("closest", "red"), scene, margin=cl.MARGIN)
    assert answer is None


def test_dataset_answers_agree_with_programs(data):
    for i in range(0, len(data), 7):
        scene = data.scenes[int(data.scene_index[i])]
        answer, touched, single = cl.execute(data.programs[i], scene, margin=cl.MARGIN)
        assert cl.ANSWERS.index(answer) == int(data.answers[i])
        assert torch.equal(data.union[i], torch.isin(torch.arange(5), torch.tensor(touched)))
        assert single == int(data.single[i])
        words = cl.decode_question(data.questions[i], int(data.lengths[i]))
        qtype = cl.QUESTION_TYPES[int(data.qtypes[i])]
        assert words == cl.question_for(qtype, data.programs[i][0][1])


def test_gt_masks_are_nested(data):
    idx = torch.arange(0, len(data), 3)
    gt = data.gt_masks(idx)
    assert gt["single"].shape == (len(idx), cl.IMAGE_SIZE, cl.IMAGE_SIZE)
    assert bool((gt["single"] <= gt["union"]).all()) and bool((gt["union"] <= gt["all"]).all())
    assert bool(gt["single"].flatten(1).any(1).all())
    rel = data.relational[idx]
    assert bool((gt["union"].flatten(1).sum(1)[rel] >= gt["single"].flatten(1).sum(1)[rel]).all())


def test_all_types_and_answers_occur(data):
    assert set(data.qtypes.tolist()) == set(range(len(cl.QUESTION_TYPES)))
    for k, name in enumerate(cl.QUESTION_TYPES):
        answers = {cl.ANSWERS[a] for a in data.answers[data.qtypes == k].tolist()}
        expected = {"shape": set(cl.SHAPES), "left": {"yes", "no"},
                    "closest": set(cl.SHAPES), "furthest": set(cl.SHAPES)}.get(name)
        if expected is not None:
            assert answers == expected


def test_questions_roundtrip_and_bad_input():
    words = cl.question_for("closest", "green")
    assert cl.decode_question(cl.encode_question(words)) == words
    with pytest.raises(ValueError, match="vocabulary"):
        cl.encode_question(["what", "colour"])
    with pytest.raises(ValueError, match="question type"):
        cl.program_for("colour", "red")
    with pytest.raises(ValueError, match="colour"):
        cl.program_for("shape", "orange")
    with pytest.raises(ValueError, match="split"):
        cl.load_clevr_lite("dev")
    with pytest.raises(ValueError, match="positive"):
        cl.make_clevr_lite(0, seed=0)


def test_render_is_float_in_unit_box():
    image = cl.render(HAND)
    assert image.dtype == np.float32 and image.shape == (3, cl.IMAGE_SIZE, cl.IMAGE_SIZE)
    assert 0.0 < image.min() and image.max() < 1.0
    noisy = cl.render(HAND, noise_seed=1)
    assert np.array_equal(noisy, cl.render(HAND, noise_seed=1))
    assert not np.array_equal(noisy, image)
