"""params.yaml validation: unknown keys, wrong types and unknown names name the key."""

from pathlib import Path

import pytest
import yaml

from dml.checks import check_params
from dml.config import load_params, parse_params, resolve_run
from dml.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid():
    params = check_params(load_params(REPO / "params.yaml"))
    assert set(params.experiments) >= {"contrastive", "multi_similarity", "proxy_anchor"}


def test_unknown_top_level_key_is_named():
    raw = base() | {"trian": {}}
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        parse_params(raw)


def test_unknown_nested_key_is_named():
    raw = base()
    raw["train"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        parse_params(raw)


def test_wrong_type_is_named():
    raw = base()
    raw["train"]["epochs"] = "many"
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_params(raw)


def test_bad_choice_lists_valid_values():
    raw = base()
    raw["tune"]["mode"] = "cluster"
    with pytest.raises(ConfigError, match=r"tune\.mode.*'local' or 'trainer'"):
        parse_params(raw)


def test_unknown_loss_lists_valid_names():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["name"] = "contrastiv"
    with pytest.raises(ConfigError, match=r"unknown loss 'contrastiv'; valid choices: .*contrastive"):
        check_params(parse_params(raw))


def test_unknown_loss_knob_is_named_with_valid_keys():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["neg_marign"] = 0.5
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.loss\.neg_marign.*valid keys: neg_margin, pos_margin"):
        check_params(parse_params(raw))


def test_unknown_backbone_is_an_error_at_build_time():
    from dml.models import build_model

    params = parse_params(base())
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg'; valid choices: .*resnet18"):
        build_model(params.model.model_copy(update={"backbone": "vgg"}))


def test_search_key_must_name_a_knob():
    raw = base()
    raw["experiments"]["contrastive"]["search"] = {"loss.nope": {"type": "uniform", "low": 0, "high": 1}}
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.search\.loss\.nope"):
        check_params(parse_params(raw))


def test_search_dimension_needs_bounds():
    raw = base()
    raw["experiments"]["contrastive"]["search"] = {"loss.neg_margin": {"type": "uniform", "low": 1, "high": 0}}
    with pytest.raises(ConfigError, match=r"low < high"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_resolve_run_merges_overrides():
    params = parse_params(base())
    spec = resolve_run(params, "contrastive", {"loss.neg_margin": 0.42, "train.lr": 0.01})
    assert spec.loss["neg_margin"] == 0.42
    assert spec.train.lr == 0.01
    assert spec.train.epochs == params.train.epochs
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        resolve_run(params, "nope")
    with pytest.raises(ConfigError, match="train.lr"):
        resolve_run(params, "contrastive", {"train.lr": -1.0})


def test_bad_loss_value_is_caught_at_validation():
    raw = base()
    raw["experiments"]["contrastive"]["loss"]["neg_margin"] = -1.0
    with pytest.raises(ConfigError, match=r"neg_margin"):
        check_params(parse_params(raw))


def test_experiment_names_a_known_dataset():
    raw = base()
    raw["experiments"]["contrastive"]["dataset"] = "cub"
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.dataset: unknown dataset 'cub'; valid choices: scenes, shapes"):
        parse_params(raw)


def test_nested_search_key_into_a_wrapped_loss_is_checked():
    raw = base()
    raw["experiments"]["wrapped"] = {
        "dataset": "shapes",
        "loss": {"name": "embedding_norm", "weight": 0.01, "base": {"name": "contrastive", "neg_margin": 0.5}},
        "search": {"loss.base.neg_margin": {"type": "uniform", "low": 0.3, "high": 0.9}},
    }
    params = check_params(parse_params(raw))
    spec = resolve_run(params, "wrapped", {"loss.base.neg_margin": 0.8})
    assert spec.loss["base"] == {"name": "contrastive", "neg_margin": 0.8}
    raw["experiments"]["wrapped"]["search"] = {"loss.base.neg_margn": {"type": "uniform", "low": 0.3, "high": 0.9}}
    with pytest.raises(ConfigError, match=r"search key experiments\.wrapped\.search\.loss\.base\.neg_margn .*"
                                          r"experiments\.wrapped\.loss\.base\.neg_margn"):
        check_params(parse_params(raw))


@pytest.mark.parametrize(("section", "value", "match"), [
    ("train", {"sampler": {"name": "m_per_clas"}}, r"unknown sampler 'm_per_clas'; valid choices: cross_domain, hierarchical, m_per_class, multilabel, random"),
    ("train", {"sampler": {"name": "m_per_class", "k": 4}}, r"experiments\.contrastive\.train\.sampler\.k"),
    ("train", {"sampler": {"name": "random", "rank": 1}}, r"train\.sampler\.rank: set by the training loop"),
    ("model", {"heads": {"colour": {}}}, r"unknown head 'colour'; valid choices: attributes"),
    ("model", {"backbone_options": {"widht": 16}}, r"model\.backbone_options\.widht"),
])
def test_samplers_heads_and_backbone_options_are_checked_by_name(section, value, match):
    raw = base()
    raw["experiments"]["contrastive"][section] = value
    with pytest.raises(ConfigError, match=match):
        check_params(parse_params(raw))


def test_protocol_comes_from_the_dataset_unless_the_experiment_names_one():
    raw = base()
    raw["datasets"]["shapes"]["protocol"] = {"name": "per_scale"}
    raw["experiments"]["contrastive"]["protocol"] = {"name": "self_retrieval"}
    params = check_params(parse_params(raw))
    assert resolve_run(params, "multi_similarity").protocol == {"name": "per_scale"}
    assert resolve_run(params, "contrastive").protocol == {"name": "self_retrieval"}
    raw["experiments"]["contrastive"]["protocol"] = {"name": "cross_domain", "query_domain": "drawing"}
    with pytest.raises(ConfigError, match=r"experiments\.contrastive\.protocol\.query_domain: 'drawing'"):
        check_params(parse_params(raw))


def test_an_experiment_overrides_the_quantize_section():
    raw = base()
    raw["experiments"]["contrastive"]["quantize"] = {"bits": [32, 64, 128]}
    params = parse_params(raw)
    assert resolve_run(params, "contrastive").quantize.bits == [32, 64, 128]
    assert resolve_run(params, "contrastive").quantize.kinds == params.quantize.kinds
    assert resolve_run(params, "multi_similarity").quantize == params.quantize
    raw["experiments"]["contrastive"]["quantize"] = {"bits": [12]}
    with pytest.raises(ConfigError, match=r"experiments\.contrastive.*quantize\.bits"):
        resolve_run(parse_params(raw), "contrastive")


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw.update(epochz=3), "params.yaml: epochz: unknown key"),
    (lambda raw: raw["datasets"]["shapes"]["split"].update(query_fraction=1.5),
     "params.yaml: datasets.shapes.split.query_fraction: Input should be less than 1"),
    (lambda raw: raw["quantize"].update(bits=[12]),
     "params.yaml: quantize.bits: bit budgets must be positive multiples of 8, got [12]"),
    (lambda raw: (raw.update(epochz=3), raw["train"].update(lrr=1)),
     "params.yaml: train.lrr: unknown key; epochz: unknown key"),
    (lambda raw: raw["experiments"]["proxy_anchor"]["loss"].update(margin=-0.1),
     "experiments.proxy_anchor.loss.margin must be >= 0, got -0.1"),
    (lambda raw: raw["experiments"]["proxy_anchor"]["loss"].update(name="proxy_anchorz"),
     "experiments.proxy_anchor.loss.name: unknown loss 'proxy_anchorz'; valid choices: {losses}"),
    (lambda raw: raw["experiments"]["proxy_anchor"].update(train={"sampler": {"name": "m_per_clas"}}),
     "experiments.proxy_anchor.train.sampler.name: unknown sampler 'm_per_clas'; valid choices: cross_domain, hierarchical, m_per_class, multilabel, random"),
    (lambda raw: raw["experiments"]["proxy_anchor"].update(model={"backbone": "vgg"}),
     "experiments.proxy_anchor.model.backbone: unknown backbone 'vgg'; valid choices: {backbones} or a timm model name"),
], ids=["top-level key", "split bound", "pydantic value error", "two keys", "loss knob", "loss name", "sampler name", "backbone"])
def test_config_errors_are_one_line_naming_the_dotted_key(change, message):
    """The exact text a user reads: the dotted key (with its experiment), the problem, the
    valid choices; one line, no pydantic prefix."""
    from dml.losses import LOSSES
    from dml.models import BACKBONES

    raw = base()
    change(raw)
    with pytest.raises(ConfigError) as err:
        check_params(parse_params(raw))
    # (the choices are the registries' names: other tests register components of their own)
    assert str(err.value) == message.format(losses=", ".join(LOSSES.names()),
                                            backbones=", ".join(BACKBONES.names()))


def test_a_method_may_name_several_baselines():
    raw = base()
    raw["experiments"] = {name: {"dataset": "shapes", "loss": {"name": "contrastive"}}
                          for name in ("a", "b", "c")}
    raw["experiments"]["a"]["baseline"] = ["b", "c"]
    raw["experiments"]["b"]["baseline"] = "c"
    params = parse_params(raw)
    assert params.experiments["a"].baselines == ["b", "c"]
    assert params.experiments["b"].baselines == ["c"] and params.experiments["c"].baselines == []
    raw["experiments"]["a"]["baseline"] = ["b", "nope"]
    with pytest.raises(ConfigError, match=r"experiments\.a\.baseline: 'nope' is not another experiment"):
        parse_params(raw)


def test_held_out_queries_split_and_hash_codes_are_settings():
    raw = base()
    raw["datasets"]["shapes"]["split"] = {"method": "held_out_queries", "queries_per_class": 5}
    raw["quantize"] = {"kinds": ["hash"], "bits": [32, 128], "hash_steps": 10}
    params = parse_params(raw)
    assert params.datasets["shapes"].split.queries_per_class == 5
    assert params.datasets["shapes"].split.query_domain == "sketch"
    assert params.quantize.kinds == ["hash"]
    raw["quantize"]["kinds"] = ["lsh"]
    with pytest.raises(ConfigError, match=r"quantize\.kinds"):
        parse_params(raw)


def test_csl_margins_may_name_a_dataset_s_own_scales():
    # the check builds every loss on stand-in data: it must carry the scales the margins name
    raw = base()
    exp = raw["experiments"]["csl"]
    exp["loss"]["margins"] = {"fine": 0.25, "line": 0.35, "race": 0.45}
    exp["search"] = {"loss.margins.race": {"type": "uniform", "low": 0.3, "high": 0.6}}
    check_params(parse_params(raw))
    raw["experiments"]["ecaml"]["loss"]["base"] = {"name": "csl", "margins": {"fine": 0.2, "suit": 0.3}}
    raw["experiments"]["ecaml"]["search"] = {}
    check_params(parse_params(raw))
