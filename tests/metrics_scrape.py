"""Scraping a real process's ``/metrics`` as Prometheus does, for the metrics tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: (metric sample name, its labels as sorted pairs) -> value
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(endpoint: str) -> tuple[str, Scrape]:
    """The text of ``/metrics`` and its samples, parsed by prometheus-client's parser."""
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter never incremented has no series yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
