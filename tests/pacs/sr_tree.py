"""Reading an SR content tree back the way a PACS or an integration would: by concept code."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset


def items(node: Dataset) -> Iterator[Dataset]:
    """Every content item below ``node``, depth first."""
    for item in node.get("ContentSequence", []):
        yield item
        yield from items(item)


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def find(node: Dataset, scheme: str, value: str) -> list[Dataset]:
    return [item for item in items(node) if concept(item) == (scheme, value)]


def only(node: Dataset, scheme: str, value: str) -> Dataset:
    found = find(node, scheme, value)
    assert len(found) == 1, f"{scheme} {value}: {len(found)} items"
    return found[0]


def coded_value(item: Dataset) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def numeric_value(item: Dataset) -> float:
    return float(item.MeasuredValueSequence[0].NumericValue)
