"""Checks every adapter runs before calling its service, so a job a model cannot do fails with a 422, not a bill.

Each check raises InvalidJobRequest naming the request field (camelCase, as the API spells it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from models.payloads import PromptSpec
from providers.errors import InvalidJobRequest


def require_model(provider: str, model: str, allowed: Sequence[str]) -> None:
    if model not in allowed:
        raise InvalidJobRequest(
            f"{provider} has no model {model!r}; choose one of: {', '.join(allowed)}",
            field="model",
        )


def check_prompt(spec: PromptSpec, model: str, max_chars: int) -> None:
    if not spec.prompt.strip():
        raise InvalidJobRequest("prompt must not be empty", field="prompt")
    if len(spec.prompt) > max_chars:
        raise InvalidJobRequest(
            f"{model} accepts prompts of at most {max_chars} characters (this one has {len(spec.prompt)})",
            field="prompt",
        )


def check_count(spec: PromptSpec, model: str, max_outputs: int) -> None:
    if not 1 <= spec.n <= max_outputs:
        allowed = "exactly 1 image" if max_outputs == 1 else f"1 to {max_outputs} images"
        raise InvalidJobRequest(f"{model} makes {allowed} per job; n={spec.n} was asked", field="n")


def check_seeds(spec: PromptSpec, model: str, low: int, high: int) -> None:
    """The seed, and for providers called once per output the seeds `seed + i` after it, must be in range."""
    if spec.seed is None:
        return
    last = spec.seed + spec.n - 1
    if spec.seed < low or last > high:
        raise InvalidJobRequest(
            f"{model} takes seeds from {low} to {high}; seed={spec.seed} with n={spec.n} uses {spec.seed}..{last}",
            field="seed",
        )


def map_choice(value: str | None, mapping: Mapping[str, str], model: str, field: str) -> str | None:
    """A spec value translated into the provider's vocabulary (None stays None)."""
    if value is None:
        return None
    key = value.strip().lower()
    if key not in mapping:
        raise InvalidJobRequest(
            f"{model} does not know {field} {value!r}; use one of: {', '.join(mapping)}",
            field=field,
        )
    return mapping[key]


def unused_fields(spec: PromptSpec, supported: Collection[str]) -> list[str]:
    """The optional spec fields this model ignores although the job set them (reported back, not an error)."""
    given = {
        "negativePrompt": spec.negative_prompt,
        "quality": spec.quality,
        "style": spec.style,
        "seed": spec.seed,
    }
    return [name for name, value in given.items() if value is not None and name not in supported]


def check_input_image(spec: PromptSpec, model: str, *, accepted: bool, required: bool = False) -> None:
    """An input image goes only to models that use one: anywhere else it would be dropped without a word."""
    if spec.input_image_url is None:
        if required:
            raise InvalidJobRequest(f"{model} works on an input image; set inputImageUrl", field="inputImageUrl")
        return
    if not accepted:
        raise InvalidJobRequest(
            f"{model} draws from the prompt alone and cannot use an input image; remove inputImageUrl",
            field="inputImageUrl",
        )
