// The image node, image first: the picture (or its placeholder) with the status and live progress over it, then the
// prompt, variants, Generate / Regenerate (Cancel while it runs) and Run from here, and the settings folded away.
import { Handle, Position, useStore, type NodeProps } from "@xyflow/react";
import { memo } from "react";
import { useBoardActions } from "./actions";
import { Elapsed } from "./Elapsed";
import { NodeSettings } from "./NodeSettings";
import { RUN_ONLY_STATES, currentImage, isBusy, type ImageNode } from "./nodeData";

// Below this zoom a node's text could not be read anyway (at 1280x720, 40 nodes fit at about 0.35).
const FAR_ZOOM = 0.6;

function ImageNodeViewInner({ id, data }: NodeProps<ImageNode>) {
  const actions = useBoardActions();
  const status = data.status ?? "idle";
  const busy = isBusy(status);
  const image = currentImage(data);
  const provider = actions.providers.find((item) => item.name === (data.provider ?? "local"));
  const variants = data.imageUrls ?? [];
  const progress = Math.round(data.progress ?? 0);
  // What the node's canvas run adds to its job's status: waiting its turn (until its job starts), cached, ...
  const runBadge =
    data.runState && RUN_ONLY_STATES.includes(data.runState) && !(data.runState === "pending" && busy)
      ? data.runState
      : null;
  // Semantic zoom: from afar a node is its picture and its status; up close, its prompt, actions and settings too.
  const far = useStore((state) => state.transform[2] < FAR_ZOOM);
  const thumbnail = !data.chosenImageUrl || data.chosenImageUrl === data.imageUrl ? data.thumbnailUrl : null;
  const inLine = status === "pending" && data.waitingForSlot === true;

  return (
    <div className="image-node" data-node-id={id} data-status={status} data-zoom={far ? "far" : "near"}>
      <Handle type="target" position={Position.Left} />
      <div className="node-picture">
        {image ? (
          <button type="button" className="image-button nodrag" onClick={() => actions.open(id)}>
            <img className="thumbnail" src={thumbnail ?? image} alt={data.prompt ?? ""} />
          </button>
        ) : (
          <p className="node-placeholder">
            {inLine ? "Waiting for a free slot…" : busy ? "Drawing…" : far ? (data.prompt ?? "") : "No image yet"}
          </p>
        )}
        <div className="node-badges">
          {inLine ? (
            <span
              className="badge badge-pending"
              title="This workspace runs as many jobs at once as it may; this one starts as soon as one of them ends."
            >
              in line
            </span>
          ) : (
            status !== "idle" && <span className={`badge badge-${status}`}>{status}</span>
          )}
          {runBadge && (
            <span className={`badge badge-run-${runBadge}`} title={data.runReason ?? undefined}>
              {runBadge === "pending" ? "waiting" : runBadge}
            </span>
          )}
        </div>
        {busy && (
          <div className="node-progress">
            {/* A provider that reports no progress gets a moving bar, not an empty one; a job in line has none. */}
            {!inLine && (
              <div
                className="progress"
                role="progressbar"
                aria-label="Progress"
                aria-valuenow={progress > 0 ? progress : undefined}
                aria-valuemin={0}
                aria-valuemax={100}
              >
                <div
                  className={progress > 0 ? "progress-bar" : "progress-bar indeterminate"}
                  style={progress > 0 ? { width: `${progress}%` } : undefined}
                />
              </div>
            )}
            {data.retry && <p className="retry-note">{data.retry}</p>}
            {/* The usual time counts from running: beside a wait in line it would promise what nobody knows. */}
            <Elapsed
              since={data.startedAt}
              typical={
                inLine
                  ? undefined
                  : actions.typicalSeconds(data.provider ?? "local", data.model ?? provider?.defaultModel ?? "")
              }
            />
          </div>
        )}
      </div>
      {!far && (
        <>
          <label className="field prompt-field">
            <span className="visually-hidden">Prompt</span>
            <textarea
              className="nodrag prompt"
              rows={2}
              value={data.prompt ?? ""}
              placeholder="What to draw…"
              onChange={(event) => actions.update(id, { prompt: event.target.value })}
            />
          </label>
          {variants.length > 1 && (
            <div className="variants nodrag" aria-label="Variants">
              {variants.map((url, index) => (
                <button
                  type="button"
                  key={url}
                  aria-pressed={url === image}
                  aria-label={`Variant ${index + 1}`}
                  onClick={() => actions.update(id, { chosenImageUrl: url })}
                >
                  <img src={url} alt="" />
                </button>
              ))}
            </div>
          )}
          {status === "error" && data.error && <p className="node-error">{data.error}</p>}
          {data.runState === "skipped" && data.runReason && <p className="node-error">Skipped: {data.runReason}</p>}
          {!busy && !(data.prompt ?? "").trim() && (
            <p className="hint" id={`why-${id}`}>
              Write a prompt to generate.
            </p>
          )}
          <div className="node-actions nodrag">
            {busy ? (
              <button type="button" onClick={() => actions.cancel(id)}>
                Cancel
              </button>
            ) : (
              <button
                type="button"
                className="primary"
                disabled={!(data.prompt ?? "").trim()}
                aria-describedby={!(data.prompt ?? "").trim() ? `why-${id}` : undefined}
                onClick={() => actions.generate(id)}
              >
                {image ? "Regenerate" : "Generate"}
              </button>
            )}
            <button type="button" disabled={busy} onClick={() => actions.runFrom(id)}>
              Run from here
            </button>
          </div>
          <NodeSettings
            data={data}
            providers={actions.providers}
            update={(change) => actions.update(id, change)}
            editPrompt={() => actions.editPrompt(id)}
          />
        </>
      )}
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

export const ImageNodeView = memo(ImageNodeViewInner);
