"""Prometheus expositions read with prometheus_client's own parser: used by the metrics tests
of the integration tier (tests/integration/test_metrics.py) and the e2e tier."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """sample name -> [(labels, value)], from the text exposition."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels`` (None: absent)."""
    found = [v for found_labels, v in samples.get(name, [])
             if labels.items() <= found_labels.items()]
    assert len(found) <= 1, (name, labels, samples.get(name))
    return found[0] if found else None


def labels_of(samples: Samples, name: str) -> dict[str, str]:
    """The labels of the one sample ``name`` (an info metric's)."""
    found = samples.get(name, [])
    assert len(found) == 1, (name, found)
    return found[0][0]
