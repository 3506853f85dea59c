"""Template sets in the IoMT FHIR connector's format, and vendor payloads, for the tests.

`VENDOR` is written for these tests in the connector's documented format (its
docs/Configuration.md): a blood pressure cuff, a pulse and a scale of one made-up vendor,
with a JmesPath CalculatedContent template beside JSONPath ones. `CONNECTOR_SAMPLE_BP` is
the blood pressure mapping of the connector's own sample (microsoft/iomt-fhir,
sample/templates/basic/fhirmapping.json), whose diastolic component is coded 8867-4,
the LOINC code of heart rate.
"""

from __future__ import annotations

import copy
from typing import Any

CONTENT: dict[str, Any] = {
    "templateType": "CollectionContent",
    "template": [
        {
            "templateType": "CalculatedContent",
            "template": {
                "typeName": "bloodpressure",
                "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
                "deviceIdExpression": "$.Body.serial",
                "timestampExpression": "$.matchedToken.takenAt",
                "values": [
                    {"required": "true", "valueExpression": "$.matchedToken.systolic",
                     "valueName": "sys"},
                    {"required": "true", "valueExpression": {
                        "value": "matchedToken.diastolic", "language": "JmesPath"},
                     "valueName": "dia"},
                ],
            },
        },
        {
            "templateType": "JsonPathContent",
            "template": {
                "typeName": "heartrate",
                "typeMatchExpression": "$..[?(@pulse)]",
                "timestampExpression": "$.takenAt",
                "values": [{"required": True, "valueExpression": "$.pulse", "valueName": "hr"}],
            },
        },
        {
            "templateType": "JsonPathContent",
            "template": {
                "typeName": "weight",
                "typeMatchExpression": "$..[?(@weightLb)]",
                "timestampExpression": "$.takenAt",
                "values": [
                    {"required": True, "valueExpression": "$.weightLb", "valueName": "w"}
                ],
            },
        },
        {
            "templateType": "JsonPathContent",
            "template": {
                "typeName": "steps",
                "typeMatchExpression": "$..[?(@steps)]",
                "timestampExpression": "$.takenAt",
                "values": [{"required": True, "valueExpression": "$.steps", "valueName": "s"}],
            },
        },
    ],
}  # fmt: skip

FHIR: dict[str, Any] = {
    "templateType": "CollectionFhir",
    "template": [
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "bloodpressure",
                "periodInterval": 0,
                "codes": [{"code": "85354-9", "system": "http://loinc.org"}],
                "components": [
                    {"codes": [{"code": "8480-6", "system": "http://loinc.org"}],
                     "value": {"valueName": "sys", "valueType": "Quantity", "unit": "mmHg",
                               "code": "mm[Hg]", "system": "http://unitsofmeasure.org"}},
                    {"codes": [{"code": "8462-4", "system": "http://loinc.org"},
                               {"code": "271650006", "system": "http://snomed.info/sct"}],
                     "value": {"valueName": "dia", "valueType": "Quantity", "unit": "mmHg",
                               "code": "mm[Hg]", "system": "http://unitsofmeasure.org"}},
                ],
            },
        },
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "heartrate",
                "periodInterval": 60,
                "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
                "value": {"valueName": "hr", "valueType": "SampledData", "defaultPeriod": 5000,
                          "unit": "count/min"},
            },
        },
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "weight",
                "codes": [{"code": "188736", "system": "urn:iso:std:iso:11073:10101"}],
                "value": {"valueName": "w", "valueType": "Quantity", "unit": "lb",
                          "code": "[lb_av]", "system": "http://unitsofmeasure.org"},
            },
        },
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "steps",
                "codes": [{"code": "55423-8", "system": "http://loinc.org"}],
                "value": {"valueName": "s", "valueType": "SampledData", "unit": "count"},
            },
        },
    ],
}  # fmt: skip

VENDOR = {"devicecontent": CONTENT, "fhirmapping": FHIR}

PAYLOAD: dict[str, Any] = {
    "serial": "AX-2291",
    "measurements": [
        {"takenAt": "2026-11-24T07:31:00+01:00", "systolic": 142, "diastolic": "91"},
        {"takenAt": "2026-11-24T07:31:00+01:00", "pulse": 72},
        {"takenAt": "2026-11-24T07:40:00+01:00", "weightLb": 179.5},
        {"takenAt": "2026-11-24T07:40:00+01:00", "steps": 1200},
    ],
}

CONNECTOR_SAMPLE_BP: dict[str, Any] = {
    "templateType": "CodeValueFhir",
    "template": {
        "codes": [
            {"code": "85354-9", "display": "Blood pressure panel", "system": "http://loinc.org"}
        ],
        "periodInterval": 60,
        "typeName": "bloodpressure",
        "components": [
            {"codes": [{"code": "8867-4", "display": "Diastolic blood pressure",
                        "system": "http://loinc.org"}],
             "value": {"defaultPeriod": 1000, "unit": "mmHg", "valueName": "dia",
                       "valueType": "SampledData"}},
            {"codes": [{"code": "8480-6", "display": "Systolic blood pressure",
                        "system": "http://loinc.org"},
                       {"code": "271649006", "display": "Systolic blood pressure",
                        "system": "http://snomed.info/sct"}],
             "value": {"defaultPeriod": 1000, "unit": "mmHg", "valueName": "sys",
                       "valueType": "SampledData"}},
        ],
    },
}  # fmt: skip


def with_connector_bp() -> dict[str, Any]:
    """The vendor set with the connector sample's blood pressure mapping in its place."""
    fhir = copy.deepcopy(FHIR)
    fhir["template"][0] = copy.deepcopy(CONNECTOR_SAMPLE_BP)
    return {"devicecontent": copy.deepcopy(CONTENT), "fhirmapping": fhir}
