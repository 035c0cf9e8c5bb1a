import math

import pytest

from decaylab.experiments.base import float_grid
from decaylab.grid import parse_float_grid, parse_int_grid
from decaylab.validation import InvalidParameterError

lambd = float_grid(low=0.0)


def test_list() -> None:
    assert lambd("0,3", "--lambd", "x") == [0.0, 3.0]
    assert lambd(" 1e-3 , 2 ", "--lambd", "x") == [0.001, 2.0]


def test_linear_range_keeps_both_ends_and_count() -> None:
    values = lambd("0:10:64", "--lambd", "x")
    assert len(values) == 64
    assert values[0] == 0.0 and values[-1] == 10.0
    steps = [b - a for a, b in zip(values, values[1:])]
    assert max(steps) - min(steps) < 1e-12
    assert lambd("2:2:1", "--lambd", "x") == [2.0]


def test_log_range() -> None:
    values = lambd("log:1e-4:1:32", "--lambd", "x")
    assert len(values) == 32 and values[0] == 1e-4 and values[-1] == 1.0
    ratios = [b / a for a, b in zip(values, values[1:])]
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
    with pytest.raises(InvalidParameterError, match=r"must be a float in \[0, inf\)"):
        lambd(text, "--lambd", "d2l-linear")


def test_int_grid() -> None:
    assert parse_int_grid("0,2,5", "--seed", "x") == [0, 2, 5]
    assert parse_int_grid("1:4", "--seed", "x") == [1, 2, 3, 4]
    for bad in ("-1", "a", "3:1", "1.5"):
        with pytest.raises(InvalidParameterError, match="--seed"):
            parse_int_grid(bad, "--seed", "x")
