"""The one number formatter and markdown table."""

import pandas as pd

from bench.core.text import fmt, markdown_table


def test_table_numbers_keep_their_digits():
    assert fmt(1330.4, 1) == "1330.4"
    assert fmt(0.91234) == "0.912"
    assert fmt(0.00001234) == "1.23e-05"
    assert fmt(float("nan")) == "—"


def test_formatter_specs_and_missing_values():
    assert fmt(3) == "3" and fmt(2.0, spec=".2f", suffix="x") == "2.00x"
    assert fmt(None, missing="") == "" and fmt(float("inf")) == "—"
    assert fmt(0.123456, spec=".4g") == "0.1235"


def test_markdown_table_escapes_cells():
    text = markdown_table(pd.DataFrame({"a": ["x|y"], "b": ["1\n2"]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 2 |"]
