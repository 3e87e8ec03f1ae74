"""The wording of sizes, counts and times, and the recipe values built from the panels."""

from __future__ import annotations

import pytest

from core.errors import RecipeError
from merger_app._format import (
    error_text,
    format_value,
    human_bytes,
    human_count,
    human_duration,
    reason_and_remedy,
    remaining_seconds,
    remedy_first,
    shorten_paths,
    summary_line,
    user_text,
)
from merger_app._recipe_build import PerTensor, param_value, parse_gradient, split_value


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1500, "1.5 KB"),
        (35_880, "35.9 KB"),
        (5 * 1000**3, "5.0 GB"),
        (150 * 1000**2, "150 MB"),
    ],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(999, "999"), (8970, "8.97K"), (124_000_000, "124M"), (7_241_732_096, "7.24B")],
)
def test_human_count(n, text):
    assert human_count(n) == text


def test_durations_and_estimate():
    assert human_duration(75.4) == "1:15"
    assert human_duration(3725) == "1:02:05"
    assert human_duration(None) == "–"
    # a quarter done after 10 s: 30 s left, linear
    assert remaining_seconds(10.0, 0.25) == pytest.approx(30.0)
    assert remaining_seconds(10.0, 0.0) is None


def test_format_value():
    assert format_value(0.5) == "0.5"
    assert format_value(True) == "true"
    assert format_value([0, 0.5, 1.0]) == "[0, 0.5, 1]"


def test_gradient_parsing():
    assert parse_gradient("0, 0.5, 1") == (0.0, 0.5, 1.0)
    assert parse_gradient("  ") == ()
    with pytest.raises(RecipeError, match="numbers separated by commas"):
        parse_gradient("0, a")
    with pytest.raises(RecipeError, match="at least two"):
        parse_gradient("0.5")
    assert parse_gradient("[0.2, 0.9]") == (0.2, 0.9)  # as a recipe writes it
    with pytest.raises(RecipeError, match="numbers separated by commas"):
        parse_gradient("0.1,,0.3")  # a missing value, not a two-point gradient


def test_param_value_forms_are_mergekits():
    assert param_value(0.5, None) == 0.5
    assert param_value(0.5, PerTensor(gradient=(0.0, 1.0))) == [0.0, 1.0]
    assert param_value(0.5, PerTensor(filters=(("attn", 0.3),))) == [
        {"filter": "attn", "value": 0.3},
        {"value": 0.5},
    ]
    both = param_value(0.5, PerTensor(filters=(("mlp", 0.1),), gradient=(0.0, 1.0)))
    assert both == [{"filter": "mlp", "value": 0.1}, {"value": [0.0, 1.0]}]


@pytest.mark.parametrize(
    "per",
    [
        PerTensor(),
        PerTensor(gradient=(0.0, 0.5, 1.0)),
        PerTensor(filters=(("attn", 0.3),)),
        PerTensor(filters=(("a", 0.1), ("b", 0.2)), gradient=(1.0, 2.0)),
    ],
)
def test_split_value_inverts_param_value(per):
    value = param_value(0.7, per)
    scalar, back = split_value(value, default=1.0)
    assert back == per
    assert scalar == (0.7 if not per.gradient else 1.0)  # a gradient replaces the scalar


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("Ready to merge.", "Ready to merge."),
        ("first line\nsecond line", "first line …"),
        ("\n  padded  \n", "padded"),
        # core's messages put reasons and hints in parentheses: cut before them
        (
            "x.safetensors: no architecture fits (" + "mlp: no 2-D tensors; " * 9 + ")",
            "x.safetensors: no architecture fits…",
        ),
        ("word " * 30, "word " * 11 + "word…"),
    ],
)
def test_summary_line_is_the_first_line_cut_short(text, short):
    assert summary_line(text, limit=60) == short
    assert len(summary_line(text, limit=60)) <= 60 + len(" …")  # ' …': more lines follow


def test_summary_line_never_cuts_what_it_is_told_to_keep():
    text = "Give data made for this model (x shaped N×C×H×W). Why: the data is wrong"
    keep = len("Give data made for this model (x shaped N×C×H×W).")
    # without `keep`, the cut prefers the parenthesis: the remedy loses its end
    assert summary_line(text, limit=40) == "Give data made for this model…"
    assert summary_line(text, limit=40, keep=keep).startswith(text[:keep])
    assert summary_line(text, limit=keep + 10, keep=keep) == text[:keep] + " Why: the…"


def test_a_user_error_reads_as_reason_then_remedy_without_nested_parentheses():
    from core.errors import MergerError

    exc = MergerError(
        "the data's examples are shaped [32]",
        file="/d/bad.npz",
        hint="give data made for this model (x shaped N×features)",
    )
    assert str(exc).endswith("; give data made for this model (x shaped N×features)")
    assert "))" not in str(exc)  # the command line's text nests no parentheses either
    reason, remedy = reason_and_remedy(exc)
    assert reason == "/d/bad.npz: the data's examples are shaped [32]"
    assert remedy == "give data made for this model (x shaped N×features)"
    assert user_text(exc) == (
        "/d/bad.npz: the data's examples are shaped [32]. "
        "Give data made for this model (x shaped N×features)."
    )
    assert remedy_first(reason, remedy) == (
        "Give data made for this model (x shaped N×features). "
        "Why: /d/bad.npz: the data's examples are shaped [32]"
    )
    assert user_text(MergerError("no hint here", file="a")) == "a: no hint here"
    assert error_text("Out of memory.", "close other programs.") == (
        "Out of memory. Close other programs."
    )  # no doubled full stops


def test_a_re_basin_lambda_is_named_by_what_it_writes():
    from core.methods import REGISTRY
    from merger_app._format import lambda_outcome

    wm = REGISTRY.get("weight_matching")
    assert lambda_outcome(wm, 1.0) == "λ = 1: B aligned to A"
    assert lambda_outcome(wm, 0.0) == "λ = 0: A"
    assert lambda_outcome(wm, 0.25) == "λ = 0.25, between A (0) and B aligned to A (1)"
    assert lambda_outcome(REGISTRY.get("activation_matching"), 1) == "λ = 1: B aligned to A"
    assert lambda_outcome(REGISTRY.get("task_arithmetic"), 1.0) == ""  # scales, no ends


def test_main_dtype_names_the_bulk_and_says_when_mixed():
    import torch

    from merger_app._model_rows import main_dtype

    assert main_dtype([torch.float16] * 5) == "float16"
    assert main_dtype([torch.bfloat16] * 5 + [torch.float32]) == "bfloat16 (mixed)"
    # BatchNorm's integer counter beside float32 weights is no mix of precisions
    assert main_dtype([torch.float32] * 5 + [torch.int64]) == "float32"
    assert main_dtype([torch.int64] * 2 + [torch.int8]) == "int64 (mixed)"
    assert main_dtype([]) == ""


def test_long_paths_are_cut_so_the_reason_after_them_shows():
    text = "the model file /some/very/long/path/to/model_definitions.py:build does not exist"
    assert shorten_paths(text) == "the model file …/model_definitions.py:build does not exist"
    short = "the model file /tmp/a.py does not exist"
    assert shorten_paths(short) == short  # short paths stay whole
    relative = "give path/to/model.py:factory"
    assert shorten_paths(relative) == relative  # not an absolute path


def test_the_device_field_counts_threads_in_words():
    from merger_app.qt_status import describe_device

    assert describe_device("cpu", 1) == "Device: CPU · 1 thread"
    assert describe_device("cpu", 4) == "Device: CPU · 4 threads"


def test_recent_entries_read_as_the_table_names_them_and_never_the_same():
    from merger_app.qt_actions import recent_labels

    paths = [
        "/a/x/finetuned_0-4.safetensors",
        "/b/y/finetuned_0-4.safetensors",
        "/m/hf_model/model.safetensors",
        "/n/one/hf_model/model.safetensors",
        "/r/z.yaml",
    ]
    assert recent_labels(paths) == [
        "finetuned_0-4.safetensors — x",
        "finetuned_0-4.safetensors — y",
        "hf_model — m",
        "hf_model — one",
        "z.yaml",
    ]
