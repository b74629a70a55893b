// An image node's settings, folded away under the node: provider and model, and what the chosen model takes (its
// sizes, aspect ratios and how many images one job may ask for), as GET /v1/providers describes it.
import type { ModelDescription, ProviderDescription } from "../api";
import { imagePromptSpecQualityAnyOf0Values } from "../schema";
import type { ImageNodeData } from "./nodeData";

// A model that draws any size ("sizes" empty) is offered these; the API picks the nearest a model draws.
const COMMON_SIZES = ["512x512", "768x768", "1024x1024", "1024x768", "768x1024", "1536x1024", "1024x1536"];
const COMMON_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"];
const DEFAULT_SIZE = "512x512";
const DEFAULT_MAX_IMAGES = 4;

type Props = {
  data: ImageNodeData;
  providers: ProviderDescription[];
  update: (change: Partial<ImageNodeData>) => void;
  editPrompt: () => void;
};

/** The sizes and the aspect ratios a model offers (a capability's "sizes" holds either kind). */
export function shapesOf(model: ModelDescription | undefined): { sizes: string[]; ratios: string[] } {
  const listed = model?.sizes ?? [];
  const sizes = listed.filter((shape) => shape.includes("x"));
  const ratios = listed.filter((shape) => shape.includes(":"));
  if (listed.length === 0) return { sizes: COMMON_SIZES, ratios: COMMON_RATIOS };
  return { sizes, ratios: ratios.length > 0 ? ratios : COMMON_RATIOS };
}

/** The options, with the node's current value kept even when this model does not list it. */
function withCurrent(options: string[], current: string | undefined): string[] {
  return current && !options.includes(current) ? [current, ...options] : options;
}

export function NodeSettings({ data, providers, update, editPrompt }: Props) {
  const provider = providers.find((item) => item.name === (data.provider ?? "local"));
  const modelName = data.model ?? provider?.defaultModel ?? "";
  const model = provider?.modelCapabilities?.find((item) => item.model === modelName);
  const { sizes, ratios } = shapesOf(model);
  const maxImages = model?.maxImages ?? DEFAULT_MAX_IMAGES;
  return (
    <details className="settings nodrag">
      <summary>
        Settings{" "}
        <span className="processor">
          {data.provider ?? "local"}:{modelName}
        </span>
      </summary>
      <button type="button" className="link" onClick={editPrompt}>
        Larger prompt editor
      </button>
      <label className="field">
        Provider
        <select
          value={data.provider ?? "local"}
          onChange={(event) => {
            const chosen = providers.find((item) => item.name === event.target.value);
            update({ provider: event.target.value, model: chosen?.defaultModel });
          }}
        >
          {providers.map((item) => (
            <option key={item.name} value={item.name} disabled={!item.enabled}>
              {item.enabled ? item.name : `${item.name} (${item.disabledReason ?? "disabled"})`}
            </option>
          ))}
        </select>
      </label>
      <label className="field">
        Model
        <select value={modelName} onChange={(event) => update({ model: event.target.value })}>
          {(provider?.models ?? []).map((name) => (
            <option key={name} value={name}>
              {name}
            </option>
          ))}
        </select>
      </label>
      <label className="field">
        Size
        <select value={data.size ?? DEFAULT_SIZE} onChange={(event) => update({ size: event.target.value })}>
          {withCurrent(sizes, data.size ?? DEFAULT_SIZE).map((size) => (
            <option key={size}>{size}</option>
          ))}
        </select>
      </label>
      <label className="field">
        Aspect ratio
        <select
          value={data.aspectRatio ?? ""}
          onChange={(event) => update({ aspectRatio: event.target.value || undefined })}
        >
          <option value="">from the size</option>
          {withCurrent(ratios, data.aspectRatio).map((ratio) => (
            <option key={ratio}>{ratio}</option>
          ))}
        </select>
      </label>
      <label className="field">
        Quality
        <select value={data.quality ?? ""} onChange={(event) => update({ quality: event.target.value || undefined })}>
          <option value="">the model's default</option>
          {imagePromptSpecQualityAnyOf0Values.map((quality) => (
            <option key={quality}>{quality}</option>
          ))}
        </select>
      </label>
      <label className="field">
        Seed
        <input
          type="number"
          value={data.seed ?? ""}
          disabled={model ? !model.seed : false}
          title={model && !model.seed ? "This model does not take a seed." : undefined}
          onChange={(event) => update({ seed: event.target.value === "" ? null : Number(event.target.value) })}
        />
      </label>
      <label className="field">
        Images
        <input
          type="number"
          min={1}
          max={maxImages}
          value={data.n ?? 1}
          onChange={(event) => update({ n: Math.min(maxImages, Math.max(1, Number(event.target.value) || 1)) })}
        />
      </label>
      <label className="field">
        Style modifiers
        <input
          value={(data.styleModifiers ?? []).join(", ")}
          placeholder="watercolor, soft light"
          onChange={(event) =>
            update({
              styleModifiers: event.target.value
                .split(",")
                .map((word) => word.trim())
                .filter(Boolean),
            })
          }
        />
      </label>
    </details>
  );
}
