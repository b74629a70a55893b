"""Checks every adapter runs before calling its service, so a job a model cannot do fails with a 422, not a bill.

Each check raises InvalidJobRequest naming the request field (camelCase, as the API spells it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from models.errors import InvalidJobRequest
from models.payloads import PromptSpec


def require_model(provider: str, model: str, listed: Sequence[str], *, accepted: bool) -> None:
    """Refuse a model the provider does not accept, naming the ones it lists."""
    if not accepted:
        raise InvalidJobRequest(
            f"{provider} has no model {model!r}; choose one of: {', '.join(listed)}",
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


def check_input_image(
    spec: PromptSpec, model: str, *, accepted: bool, required: bool = False, able: Sequence[str] = ()
) -> None:
    """An input image goes only to models that use one: anywhere else it would be dropped without a word.

    `able` names the provider's models that do take one, so the refusal says where to go instead.
    """
    if spec.previous_image is None:
        if required:
            raise InvalidJobRequest(f"{model} works on an input image; set previousImage", field="previousImage")
        return
    if not accepted:
        instead = f"; models that can: {', '.join(able)}" if able else ""
        raise InvalidJobRequest(
            f"{model} draws from the prompt alone and cannot use previousImage{instead}",
            field="previousImage",
        )


def apply_style_modifiers(spec: PromptSpec, native_styles: Collection[str]) -> tuple[PromptSpec, dict[str, Any]]:
    """Fold the spec's styleModifiers into what the provider takes, and say how.

    The first modifier that names one of the model's own styles (OpenAI's `vivid`, a Stability preset) becomes its
    `style` when none was set; the others are appended to the prompt, comma-separated, which every model reads.
    Returns the spec to send (without modifiers) and the `effective` entry that reports what was done.
    """
    if not spec.style_modifiers:
        return spec, {}
    style = spec.style
    appended: list[str] = []
    for modifier in spec.style_modifiers:
        if style is None and modifier.strip().lower() in native_styles:
            style = modifier.strip().lower()
        else:
            appended.append(modifier)
    prompt = ", ".join([spec.prompt, *appended]) if appended else spec.prompt
    applied: dict[str, Any] = {"appendedToPrompt": appended}
    if style is not None and style != spec.style:
        applied["asStyle"] = style
    return replace(spec, prompt=prompt, style=style, style_modifiers=[]), {"styleModifiers": applied}
