// The full-size image with its provenance: provider, model, seed, revised prompt, timings, job, Temporal page.
import { useEffect, useState } from "react";
import { Modal } from "../Modal";
import { api, type ClientConfig, type ImageJobRecord } from "../api";
import { currentImage, type ImageNodeData } from "./nodeData";

type Props = { data: ImageNodeData; config: ClientConfig; onClose: () => void };

export function ImageDialog({ data, config, onClose }: Props) {
  const [job, setJob] = useState<ImageJobRecord | null>(null);
  const image = currentImage(data);

  useEffect(() => {
    if (data.jobId) api.job(data.jobId).then(setJob, () => setJob(null));
  }, [data.jobId]);

  const temporalPage =
    config.temporalUiUrl && data.jobId
      ? `${config.temporalUiUrl}/namespaces/${encodeURIComponent(config.temporalNamespace)}/workflows/${encodeURIComponent(data.jobId)}`
      : null;

  return (
    <Modal label="Full-size image" onClose={onClose}>
      {image && <img className="full-size" src={image} alt={data.prompt ?? ""} />}
      <dl className="provenance">
        <dt>Provider</dt>
        <dd>{job?.provider ?? data.provider}</dd>
        <dt>Model</dt>
        <dd>{job?.model ?? data.model}</dd>
        <dt>Seed</dt>
        <dd>{job?.seed ?? "—"}</dd>
        {job?.revisedPrompt && (
          <>
            <dt>Revised prompt</dt>
            <dd>{job.revisedPrompt}</dd>
          </>
        )}
        <dt>Timings</dt>
        <dd>
          {job?.timings
            ? Object.entries(job.timings)
                .map(([stage, seconds]) => `${stage} ${seconds.toFixed(2)} s`)
                .join(" · ")
            : "—"}
        </dd>
        <dt>Job</dt>
        <dd>
          <code>{data.jobId}</code>
          {temporalPage && (
            <>
              {" "}
              <a href={temporalPage} target="_blank" rel="noreferrer">
                Open in Temporal
              </a>
            </>
          )}
        </dd>
      </dl>
      <button type="button" onClick={onClose}>
        Close
      </button>
    </Modal>
  );
}

/** A larger editor for a node's prompt. */
export function PromptEditor({
  prompt,
  onSave,
  onClose,
}: {
  prompt: string;
  onSave: (prompt: string) => void;
  onClose: () => void;
}) {
  const [text, setText] = useState(prompt);
  return (
    <Modal label="Edit prompt" onClose={onClose}>
      <label className="field">
        Prompt
        <textarea rows={12} value={text} onChange={(event) => setText(event.target.value)} />
      </label>
      <div className="actions">
        <button
          type="button"
          onClick={() => {
            onSave(text);
            onClose();
          }}
        >
          Save prompt
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </Modal>
  );
}
