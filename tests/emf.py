"""A checker for CloudWatch embedded metric format documents, after the specification
(docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
"""

from __future__ import annotations

import json
import numbers
from typing import Any

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The JSON lines of `text` that are EMF documents (they have `_aws`), each checked."""
    documents = []
    for line in text.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if "_aws" in document:
                documents.append(check_emf(document))
    return documents


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_emf(document: dict[str, Any]) -> dict[str, Any]:
    """Assert that `document` is a valid EMF document; return it."""
    meta = document["_aws"]
    assert set(meta) <= {"Timestamp", "CloudWatchMetrics"}, meta.keys()
    # Milliseconds since the epoch: after 2001-09-09 (10^12 ms), as an integer.
    assert isinstance(meta["Timestamp"], int)
    assert meta["Timestamp"] > 10**12
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list)
    assert directives
    for directive in directives:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}, directive.keys()
        assert isinstance(directive["Namespace"], str)
        assert 1 <= len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                value = document[key]  # a dimension names a member of the root...
                assert isinstance(value, str), (key, value)  # ...whose value is a string
                assert 1 <= len(value) <= 1024
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}, metric
            assert metric.get("Unit", "None") in UNITS, metric
            assert metric.get("StorageResolution", 60) in (1, 60), metric
            value = document[metric["Name"]]  # a number, or 1 to 100 numbers
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100, (metric["Name"], value)
            assert all(_is_number(v) for v in values), (metric["Name"], value)
    return document


def metrics_of(document: dict[str, Any]) -> dict[str, tuple[str, list[float]]]:
    """Each metric of a (checked) document: name -> (unit, its values as a list)."""
    result = {}
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]
            result[metric["Name"]] = (metric["Unit"], value if isinstance(value, list) else [value])
    return result
