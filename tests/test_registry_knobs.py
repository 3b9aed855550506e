"""A component's knobs are declared once, in its factory's signature (``Annotated[float,
Knob(ge=0)]``), and that declaration is what every check reads: building from params.yaml,
``dml check``, each bound of a Tune search dimension, and a direct call of the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import yaml

from dml.checks import check_params
from dml.config import parse_params
from dml.errors import ConfigError
from dml.losses import LOSSES, build_loss
from dml.losses.contrastive import ContrastiveLoss
from dml.registry import Knob, Registry

REPO = Path(__file__).resolve().parents[1]


def test_the_declared_ranges_are_read_from_the_signature() -> None:
    ranges = LOSSES.knob_ranges("contrastive")
    assert ranges == {"pos_margin": Knob(ge=0), "neg_margin": Knob(ge=0)}
    assert LOSSES.knob_ranges("proxy_anchor")["alpha"] == Knob(gt=0)


@pytest.mark.parametrize(("knobs", "message"), [
    ({"neg_margin": -0.5}, "loss.neg_margin must be >= 0, got -0.5"),
    ({"neg_margin": "wide"}, "loss.neg_margin must be a number >= 0, got 'wide'"),
    ({"neg_margin": True}, "loss.neg_margin must be a number >= 0, got True"),
    ({"neg_margin": float("nan")}, "loss.neg_margin must be a number >= 0, got nan"),
])
def test_a_value_outside_its_declaration_is_named(knobs, message) -> None:
    with pytest.raises(ConfigError) as built:
        build_loss("contrastive", **knobs)
    assert str(built.value) == message
    with pytest.raises(ConfigError) as called:  # the factory itself enforces it too
        ContrastiveLoss(**knobs)
    assert str(called.value) == message
    with pytest.raises(ConfigError) as nested:  # under its dotted key in params.yaml
        build_loss({"name": "embedding_norm", "base": {"name": "contrastive", **knobs}}, where="experiments.x.loss")
    assert str(nested.value) == message.replace("loss.", "experiments.x.loss.base.", 1)


def test_a_registered_function_enforces_its_declaration() -> None:
    registry: Registry[float] = Registry("thing")

    @registry.register("scaled")
    def scaled(x: float, factor: Annotated[int, Knob(ge=1, le=8, integer=True)] = 2) -> float:
        return x * factor

    assert scaled(1.5, factor=3) == 4.5 and registry.build("scaled", 1.0) == 2.0
    with pytest.raises(ConfigError, match=r"^thing\.factor must be >= 1 and <= 8, got 9$"):
        scaled(1.0, factor=9)
    with pytest.raises(ConfigError, match=r"^a\.b\.factor must be an integer >= 1 and <= 8, got 2\.5$"):
        registry.check_kwargs("scaled", {"factor": 2.5}, where="a.b")


def test_every_bound_of_a_search_dimension_is_checked_against_the_declaration() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["experiments"]["contrastive"]["search"] = {"loss.neg_margin": {"type": "uniform", "low": -0.2, "high": 1.0}}
    with pytest.raises(ConfigError) as err:
        check_params(parse_params(raw))
    assert str(err.value) == ("experiments.contrastive.search.loss.neg_margin: -0.2 is outside what the knob "
                              "accepts (experiments.contrastive.loss.neg_margin must be >= 0, got -0.2)")
    raw["experiments"]["contrastive"]["search"] = {"loss.neg_margin": {"type": "choice", "values": [0.5, -1]}}
    with pytest.raises(ConfigError, match=r"search\.loss\.neg_margin: -1 is outside"):
        check_params(parse_params(raw))
    raw["experiments"]["contrastive"]["search"] = {"loss.neg_margin": {"type": "uniform", "low": 0.0, "high": 1.0}}
    check_params(parse_params(raw))


def test_choices_are_declared_too_and_may_be_a_registry_s_names() -> None:
    from dml.evaluate.protocols import PROTOCOLS, build_protocol

    assert LOSSES.knob_ranges("triplet")["mining"] == Knob(choices=("all", "semihard", "hard"))
    with pytest.raises(ConfigError) as err:
        build_loss({"name": "triplet", "mining": "easy"}, where="experiments.t.loss")
    assert str(err.value) == "experiments.t.loss.mining: 'easy' is not one of: all, semihard, hard"
    with pytest.raises(ConfigError, match=r"^protocol\.metric: 'hamming' is not one of: cosine, euclidean$"):
        build_protocol({"name": "cross_domain", "metric": "hamming"})
    metric = PROTOCOLS.knob_ranges("cross_domain")["metric"]
    assert callable(metric.choices) and metric.problem("cosine") is None  # read when checked
