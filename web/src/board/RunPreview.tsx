// Before a run starts: what it would generate, what it reuses and what it would cost (a dry run), with a way to
// regenerate everything instead. Nothing is paid for until the person says Run.
import { useEffect, useRef } from "react";
import type { CanvasRunPreview } from "../api";
import { Modal } from "../Modal";
import { usd } from "../format";

export type PendingRun = {
  fromNodeId?: string;
  preview: CanvasRunPreview;
  forced: CanvasRunPreview;
};

type Props = {
  pending: PendingRun;
  onRun: (force: boolean) => void;
  onClose: () => void;
};

export function RunPreview({ pending, onRun, onClose }: Props) {
  const { preview, forced, fromNodeId } = pending;
  const first = useRef<HTMLButtonElement>(null);
  useEffect(() => first.current?.focus(), []);
  const nothingChanged = preview.toGenerate === 0;
  return (
    <Modal label={fromNodeId ? "Run from this node" : "Run all"} className="run-preview" onClose={onClose}>
      <h2>{fromNodeId ? "Run from this node" : "Run all"}</h2>
      <p className="run-summary" role="status">
        {summary(preview)}
      </p>
      {nothingChanged && (
        <p>Every node already shows an image made from its current settings: running again would change nothing.</p>
      )}
      <div className="actions">
        {!nothingChanged && (
          <button ref={first} type="button" className="primary" onClick={() => onRun(false)}>
            Run {preview.toGenerate} {preview.toGenerate === 1 ? "node" : "nodes"}
          </button>
        )}
        {preview.cached > 0 && (
          <button ref={nothingChanged ? first : undefined} type="button" onClick={() => onRun(true)}>
            Regenerate all {forced.toGenerate}
            {forced.estimatedCostUsd ? ` (~${usd(forced.estimatedCostUsd)})` : ""}
          </button>
        )}
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </Modal>
  );
}

function summary(preview: CanvasRunPreview): string {
  const parts = [`${preview.toGenerate} to generate`, `${preview.cached} cached`];
  if (preview.estimatedCostUsd === undefined || preview.estimatedCostUsd === null) parts.push("cost unknown");
  else if (preview.toGenerate > 0)
    parts.push(preview.estimatedCostUsd === 0 ? "free" : `~${usd(preview.estimatedCostUsd)}`);
  return parts.join(" · ");
}
