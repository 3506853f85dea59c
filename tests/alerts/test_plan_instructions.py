"""What to do if (egenbehandlingsplan): per measurement type instructions in the plan."""

from __future__ import annotations

import pytest

from egenmon.alerts import monitoring
from egenmon.alerts.plans import Plan, build_plan, parse_instructions

WEIGHT = "Om du gått upp mer än 2 kg på tre dagar: ring mottagningen."


def test_instructions_round_trip_and_show() -> None:
    plan = build_plan("heart_failure", instructions=[f"body_weight:{WEIGHT}"])
    assert plan.instructions == {"body_weight": WEIGHT}
    assert Plan.from_dict(plan.to_dict()).instructions == {"body_weight": WEIGHT}
    assert monitoring.document(plan)["instructions"] == {"body_weight": WEIGHT}
    # A plan stored before instructions existed has none.
    old = {k: v for k, v in plan.to_dict().items() if k != "instructions"}
    assert Plan.from_dict(old).instructions == {}


@pytest.mark.parametrize(
    ("items", "error"),
    [
        (["weight:Ring"], "unknown measurement type"),
        (["body_weight"], "not TYPE:TEXT"),
        (["body_weight:  "], "give a text"),
        (["body_weight:" + "x" * 501], "at most 500"),
        (["body_weight:a\x00b"], "printable"),
        (["spo2:a", "spo2:b"], "given twice"),
    ],
)
def test_bad_instructions_are_refused(items: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_instructions(items)
    with pytest.raises(monitoring.PlanError, match=error):
        monitoring.make_plan("general", instructions=items)


def test_the_api_form_is_checked_too() -> None:
    with pytest.raises(monitoring.PlanError, match="unknown measurement type"):
        monitoring.make_plan("general", instructions={"pulse": "Ring"})
    plan = monitoring.make_plan("general", instructions={"spo2": "Vila och mät igen"})
    assert plan.instructions == {"spo2": "Vila och mät igen"}
