import math
import warnings

import pytest

from decaylab.lab.experiments.base import float_grid
from decaylab.lab.grid import MAX_GRID, GridNote, parse_float_grid, parse_int_grid
from decaylab.validation import InvalidParameterError

lambd = float_grid(low=0.0)


def test_list() -> None:
    assert lambd("0,3", "--lambd", "x") == [0.0, 3.0]
    assert lambd(" 1e-3 , 2 ", "--lambd", "x") == [0.001, 2.0]


def test_linear_range_keeps_both_ends_and_count() -> None:
    values = lambd("0:10:64", "--lambd", "x")
    assert len(values) == 64
    assert values[0] == 0.0 and values[-1] == 10.0
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert max(steps) - min(steps) < 1e-12
    assert lambd("2:2:1", "--lambd", "x") == [2.0]


def test_log_range() -> None:
    values = lambd("log:1e-4:1:32", "--lambd", "x")
    assert len(values) == 32 and values[0] == 1e-4 and values[-1] == 1.0
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    assert max(ratios) / min(ratios) - 1 < 1e-9
    assert math.isclose(ratios[0], 10 ** (4 / 31))


@pytest.mark.parametrize(
    "text",
    ["", "1,,2", "a", "1:2", "1:2:3:4", "0:1:0", "0:1:x", "log:0:1:5", "log:1:2", "log:-1:1:3", "1:2:1.5", "log:1e-3:inf:3"],
)
def test_malformed_grids_name_the_option_and_the_syntax(text: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        parse_float_grid(text, "--lambd", "d2l-linear")
    message = str(err.value)
    assert message.startswith("The '--lambd' parameter of d2l-linear must be a grid")
    assert repr(text) in message


@pytest.mark.parametrize("text", ["-1", "0,-3", "nan", "inf", "-1:1:3"])
def test_values_outside_the_allowed_range(text: str) -> None:
    with pytest.raises(InvalidParameterError, match=r"must be a float in \[0, 1e\+18\]"):
        lambd(text, "--lambd", "d2l-linear")


def test_int_grid() -> None:
    assert parse_int_grid("0,2,5", "--seed", "x") == [0, 2, 5]
    assert parse_int_grid("1:4", "--seed", "x") == [1, 2, 3, 4]
    for bad in ("-1", "a", "3:1", "1.5"):
        with pytest.raises(InvalidParameterError, match="--seed"):
            parse_int_grid(bad, "--seed", "x")


# -- sizes, bounds and duplicates ---------------------------------------------------------------
@pytest.mark.parametrize("text", ["0:1:1e12", "0:1:100001", "log:1e-3:1:1e6"])
def test_a_range_beyond_max_grid_is_refused_from_its_text(text: str) -> None:
    with pytest.raises(InvalidParameterError, match=r"num must be in \[1, 100000\]"):
        parse_float_grid(text, "--lambd", "d2l-linear")


def test_num_written_as_a_float_is_a_count() -> None:
    assert len(parse_float_grid("0:1:1e3", "--lambd", "x")) == 1000


def test_a_list_beyond_max_grid_is_refused() -> None:
    text = ",".join(str(i) for i in range(MAX_GRID + 1))
    with pytest.raises(InvalidParameterError, match="at most 100000 values"):
        parse_float_grid(text, "--lambd", "x")
    with pytest.raises(InvalidParameterError, match="at most 100000 values"):
        parse_int_grid(text, "--seed", "x")


def test_an_int_range_beyond_max_grid_is_refused_without_building_it() -> None:
    with pytest.raises(InvalidParameterError, match="at most 100000 values. Got '0:99999999999999'"):
        parse_int_grid("0:99999999999999", "--seed", "x")
    assert len(parse_int_grid(f"0:{MAX_GRID - 1}", "--seed", "x")) == MAX_GRID


def test_int_grid_upper_bound() -> None:
    with pytest.raises(InvalidParameterError, match="<= 9"):
        parse_int_grid("3,10", "--seed", "x", high=9)
    assert parse_int_grid("3,9", "--seed", "x", high=9) == [3, 9]


def test_duplicates_are_merged_with_a_note() -> None:
    with pytest.warns(GridNote, match=r"--lambd '1,1,2,3,2': 2 duplicate value\(s\) \(1, 2\) merged; 3 distinct"):
        assert lambd("1,1,2,3,2", "--lambd", "x") == [1.0, 2.0, 3.0]
    with pytest.warns(GridNote, match="4 duplicate"):
        assert lambd("0:0:5", "--lambd", "x") == [0.0]
    with pytest.warns(GridNote, match="--seed"):
        assert parse_int_grid("2,0,2", "--seed", "x") == [2, 0]


def test_distinct_values_give_no_note_and_lists_of_widths_keep_duplicates() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lambd("3,1,2", "--lambd", "x") == [3.0, 1.0, 2.0]
        assert parse_int_grid("256,256", "--hidden", "x", low=1, merge=False) == [256, 256]
        assert float_grid(high=1.0, merge=False)("0.5,0.5", "--dropout", "x") == [0.5, 0.5]


def test_a_repeated_choice_is_merged_with_a_note() -> None:
    from decaylab.lab.experiments.base import choice_list

    variants = choice_list("none", "dropout", "decay")
    with pytest.warns(GridNote, match=r"--variants 'decay,none,decay': 1 duplicate value\(s\) \(decay\) merged"):
        assert variants("decay,none,decay", "--variants", "x") == ["decay", "none"]
