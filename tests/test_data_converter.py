"""Our payload converter decodes exactly what the SDK's default does, with each dataclass' hints resolved once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.converter import DataConverter

from core.data_converter import DATA_CONVERTER, dataclass_fields
from models.payloads import (
    GenerationResult,
    ImageJobInput,
    PollingPlan,
    PromptSpec,
    Provenance,
    ProviderEvent,
    StoredImage,
)
from models.vocabulary import Priority

SAMPLES: list[Any] = [
    ImageJobInput(
        job_id="job_1",
        canvas_id="tenant/board",
        node_id="n1",
        provider="replicate",
        model="black-forest-labs/flux-schnell",
        spec=PromptSpec(prompt="a quiet harbour", style_modifiers=["ink"], seed=7, strength=0.4),
        metadata={"nested": {"list": [1, 2.5, None]}},
        polling=PollingPlan(webhook_grace=3, backoff=True),
        asynchronous=True,
        priority=Priority.HIGH,
        estimated_cost_usd=0.003,
        warnings=["deprecated"],
    ),
    GenerationResult(
        images=[StoredImage(key="k", url="u", content_type="image/png", size_bytes=10, width=64, height=64)],
        provenance=Provenance(provider_job_id="p1", effective={"size": "64x64"}, cost_usd=0.01),
        storing_seconds=0.25,
    ),
    ProviderEvent(status="succeeded", progress=100.0, output_urls=["https://example.com/a.png"], delivery_id="d1"),
]


def round_trip(value: Any, converter: DataConverter) -> Any:
    payloads = DataConverter.default.payload_converter.to_payloads([value])
    return converter.payload_converter.from_payloads(payloads, [type(value)])[0]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda value: type(value).__name__)
def test_decodes_what_the_sdk_decodes(value: Any) -> None:
    ours = round_trip(value, DATA_CONVERTER)
    assert ours == round_trip(value, DataConverter.default)
    assert ours == value


def test_nested_values_keep_their_types() -> None:
    job = round_trip(SAMPLES[0], DATA_CONVERTER)
    # A StrEnum equals its string, so equality alone would not notice a plain str.
    assert type(job.priority) is Priority
    assert type(job.spec) is PromptSpec and type(job.polling) is PollingPlan


@dataclass
class WithLateField:
    name: str
    count: int = 0
    derived: str = field(default="", init=False)


def decode(cls: type, raw: dict[str, Any]) -> Any:
    payloads = DataConverter.default.payload_converter.to_payloads([raw])
    return DATA_CONVERTER.payload_converter.from_payloads(payloads, [cls])[0]


def test_keeps_the_sdks_rules() -> None:
    # Unknown keys are ignored, and a field the constructor does not take is set afterwards.
    made = decode(WithLateField, {"name": "a", "unknown": 1, "derived": "d"})
    assert (made.name, made.count, made.derived) == ("a", 0, "d")
    # A missing required field and a value of the wrong type are refused.
    with pytest.raises(TypeError):
        decode(WithLateField, {"count": 1})
    with pytest.raises(TypeError, match="Failed converting field count"):
        decode(WithLateField, {"name": "a", "count": "many"})


def test_resolves_each_dataclass_hints_once() -> None:
    dataclass_fields.cache_clear()
    for _ in range(3):
        round_trip(SAMPLES[0], DATA_CONVERTER)
    info = dataclass_fields.cache_info()
    assert info.misses == 3  # ImageJobInput, PromptSpec, PollingPlan
    assert info.hits == 6
