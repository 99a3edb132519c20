import pytest
import torch

import lrp_teach as lt


def test_compare_reports_shape_type_nan_and_size_of_error():
    ref = torch.zeros(2, 3)
    with pytest.raises(lt.exercises.ExerciseError, match="expected a torch.Tensor"):
        lt.exercises.compare("R", [0.0], ref)
    with pytest.raises(lt.exercises.ExerciseError, match=r"expected shape \(2, 3\), got \(3,\)"):
        lt.exercises.compare("R", torch.zeros(3), ref)
    with pytest.raises(lt.exercises.ExerciseError, match="NaN"):
        lt.exercises.compare("R", torch.full((2, 3), float("nan")), ref)
    with pytest.raises(lt.exercises.ExerciseError, match="largest difference .* 0.5"):
        lt.exercises.compare("R", torch.full((2, 3), 0.5), ref)
    lt.exercises.compare("R", torch.zeros(2, 3), ref)


def test_linear_relevance_checker_accepts_the_solution(capsys):
    lt.exercises.check_linear_relevance(lambda w, b, x: x * w + b / w.numel())
    assert "20 random cases" in capsys.readouterr().out


def test_linear_relevance_checker_diagnoses_a_lost_bias():
    with pytest.raises(lt.exercises.ExerciseError, match="bias .* is lost"):
        lt.exercises.check_linear_relevance(lambda w, b, x: x * w)


def test_linear_relevance_checker_diagnoses_broken_conservation():
    with pytest.raises(lt.exercises.ExerciseError, match="conservation is broken"):
        lt.exercises.check_linear_relevance(lambda w, b, x: 2 * x * w + b / w.numel())


def test_every_checker_hides_its_frames_from_ipython_tracebacks():
    checkers = [getattr(lt.exercises, n) for n in lt.exercises.__all__ if n.startswith("check_")]
    assert len(checkers) >= 14
    for check in checkers:
        assert "__tracebackhide__" in check.__code__.co_varnames, check.__name__


def test_stub_traceback_shows_neither_checker_source_nor_the_answer(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell(
        "import lrp_teach as lt\n"
        "def zero_to_h_rule(layer, a, R, high):\n"
        "    raise NotImplementedError('Write `zero_to_h_rule`, then run the checker below.')\n"
        "lt.exercises.check_zero_to_h_rule(zero_to_h_rule)\n"
    )
    text = capsys.readouterr().out
    assert "not implemented yet" in text
    for fragment in ["clamp", "_zero_h_variants", "expected, variants", "min(0, w"]:
        assert fragment not in text, fragment
