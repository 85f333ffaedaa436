"""Suites: the shapes users write, ablation expansion, overrides, and errors that point at the line."""

from __future__ import annotations

import pytest

from octbench.errors import SuiteError
from octbench.suite import reference_name, resolve_variants
from octbench.suite.file import parse_suite

ISSUE_EXAMPLE = """
name: ablation
dataset: {name: octmnist, size: 28}
cv: {folds: 5, seeds: [0], val_fraction: 0.1, test_split: true}
train: {epochs: 10, batch_size: 64, optimizer: {name: adam, lr: 0.001}, device: auto}
defaults: {model: seed-cnn}
variants:
  - name: baseline
  - name: clahe
    preprocessors: [{name: clahe, clip_limit: 2.0, tile_grid: 8}]
  - name: smote
    preprocessors: [smote]
"""

ABLATION = """
name: ab
ablation:
  mode: {mode}
  base: {{model: {{name: cnn, batchnorm: false, dropout: 0}}}}
  techniques:
    clahe: {{preprocessors: [clahe]}}
    smote: {{preprocessors: [smote]}}
    augment: {{augmenters: [{{name: batch-augment, hflip: 0.5, rotate: 15, brightness: 0.2}}]}}
    bn: {{model: {{batchnorm: true}}}}
"""


def test_the_documented_variants_form():
    suite = parse_suite(ISSUE_EXAMPLE)
    variants = resolve_variants(suite)
    assert [v.name for v in variants] == ["baseline", "clahe", "smote"]
    assert all(v.model.name == "seed-cnn" for v in variants)
    assert variants[1].preprocessors[0].name == "clahe"
    assert variants[1].preprocessors[0].params == {"clip_limit": 2.0, "tile_grid": 8}
    assert variants[2].preprocessors[0].params == {}
    assert suite.cv.folds == 5 and suite.train.optimizer.lr == 0.001
    assert reference_name(suite) == "baseline" and variants[0].role == "baseline"


def test_add_one_expands_to_base_then_each_technique_alone():
    variants = resolve_variants(parse_suite(ABLATION.format(mode="add-one")))
    assert [v.name for v in variants] == ["baseline", "+clahe", "+smote", "+augment", "+bn"]
    assert variants[0].model.params == {"batchnorm": False, "dropout": 0}
    assert [p.name for p in variants[1].preprocessors] == ["clahe"]
    # a model mapping without a name patches the base model's parameters
    assert variants[4].model.name == "cnn" and variants[4].model.params == {"batchnorm": True, "dropout": 0}


def test_leave_one_out_expands_to_all_then_all_minus_each():
    suite = parse_suite(ABLATION.format(mode="leave-one-out"))
    variants = resolve_variants(suite)
    assert [v.name for v in variants] == ["all", "all-clahe", "all-smote", "all-augment", "all-bn"]
    assert [p.name for p in variants[0].preprocessors] == ["clahe", "smote"]
    assert [p.name for p in variants[1].preprocessors] == ["smote"]
    assert variants[4].model.params["batchnorm"] is False
    assert reference_name(suite) == "all"


def test_full_expands_to_every_combination():
    variants = resolve_variants(parse_suite(ABLATION.format(mode="full")))
    assert len(variants) == 16
    assert len({v.name for v in variants}) == 16
    assert variants[0].name == "baseline" and variants[-1].name == "+clahe+smote+augment+bn"


def test_overrides_keep_types_and_reach_any_key():
    suite = parse_suite(
        ISSUE_EXAMPLE,
        overrides=["dataset.name=breastmnist", "cv.folds=3", "train.optimizer.lr=0.01", "variants.1.name=renamed"],
    )
    assert suite.dataset.name == "breastmnist" and suite.dataset.params == {"size": 28}
    assert suite.cv.folds == 3 and suite.train.optimizer.lr == 0.01
    assert suite.variants[1].name == "renamed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nvariants: [{name: a}\n", "malformed YAML"),
        ("variants: [{name: a}]\n", "name: required key is missing"),
        ("name: x\nvariants:\n  - name: a\n    preprocesors: [clahe]\n", ":4: variants[0].preprocesors: unknown key"),
        (
            "name: x\ncv: {folds: 1}\nvariants: [{name: a}]\n",
            ":2: cv.folds: Input should be greater than or equal to 2",
        ),
        ("name: x\n", "needs 'variants'"),
        ("name: x\nvariants: [{name: a}, {name: a}]\n", "repeated: a"),
        ("- just a list\n", "a suite is a YAML mapping"),
        ("name: x\ntrain: {compile: graphs}\nvariants: [{name: a}]\n", ":2: train.compile: "),
    ],
)
def test_invalid_suites_name_the_problem(text, expected):
    with pytest.raises(SuiteError) as info:
        parse_suite(text, source="s.yaml")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), ("reduce-overhead", "reduce-overhead")]
)
def test_compile_takes_a_switch_or_a_torch_compile_mode(value, expected):
    suite = parse_suite(f"name: x\ntrain: {{compile: {value}}}\nvariants: [{{name: a}}]\n")
    assert suite.train.compile == expected


def test_malformed_yaml_points_at_the_line():
    with pytest.raises(SuiteError, match=r"s\.yaml:3:\d+: malformed YAML"):
        parse_suite("name: x\nvariants:\n\t- name: a\n", source="s.yaml")


def test_bad_override_is_a_clear_error():
    with pytest.raises(SuiteError, match="--set expects KEY=VALUE"):
        parse_suite(ISSUE_EXAMPLE, overrides=["cv.folds"])


def test_variant_without_a_model_is_an_error():
    with pytest.raises(SuiteError, match="has no model"):
        resolve_variants(parse_suite("name: x\nvariants: [{name: a}]\n"))


def test_suite_hash_ignores_formatting_but_not_content():
    a = parse_suite(ISSUE_EXAMPLE)
    b = parse_suite(ISSUE_EXAMPLE.replace("variants:", "# a comment\nvariants:"))
    c = parse_suite(ISSUE_EXAMPLE, overrides=["cv.folds=3"])
    assert a.digest() == b.digest() != c.digest()
