// The board's jobs, newest first: filtered by status and provider, searched by prompt, a page at a time; with a
// stats bar, and Cancel / Retry on each job.
import { useCallback, useEffect, useState } from "react";
import { api, type ImageJobRecord, type JobFilters, type ProviderDescription } from "../api";
import { jobStatusValues } from "../schema";

type Props = {
  canvasId: string;
  providers: ProviderDescription[];
  // Moves on with every job event on the board, so the panel and the stats follow along.
  revision: number;
  onError: (error: unknown) => void;
};

export function HistoryPanel({ canvasId, providers, revision, onError }: Props) {
  const [status, setStatus] = useState("");
  const [provider, setProvider] = useState("");
  const [search, setSearch] = useState("");
  const [jobs, setJobs] = useState<ImageJobRecord[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [counts, setCounts] = useState<Record<string, number>>({});

  const filters = useCallback(
    (after?: string): JobFilters => ({
      workflowId: canvasId,
      status: (status || undefined) as JobFilters["status"],
      provider: provider || undefined,
      q: search.trim() || undefined,
      limit: 20,
      cursor: after,
    }),
    [canvasId, status, provider, search],
  );

  useEffect(() => {
    const timer = window.setTimeout(() => {
      api.jobs(filters()).then((page) => {
        setJobs(page.items);
        setCursor(page.nextCursor ?? null);
      }, onError);
      api.stats({ canvasId }).then((stats) => setCounts(stats.byStatus), onError);
    }, 250);
    return () => window.clearTimeout(timer);
  }, [filters, canvasId, revision, onError]);

  const more = async () => {
    if (!cursor) return;
    try {
      const page = await api.jobs(filters(cursor));
      setJobs((all) => [...(all ?? []), ...page.items]);
      setCursor(page.nextCursor ?? null);
    } catch (error) {
      onError(error);
    }
  };

  return (
    <aside className="history" aria-label="History">
      <div className="stats" aria-label="Stats">
        {jobStatusValues.map((name) => (
          <span key={name} className={`badge badge-${name}`}>
            {name} {counts[name] ?? 0}
          </span>
        ))}
      </div>
      <label className="field">
        Search prompts
        <input value={search} onChange={(event) => setSearch(event.target.value)} />
      </label>
      <div className="filters">
        <label className="field">
          Status
          <select value={status} onChange={(event) => setStatus(event.target.value)}>
            <option value="">any</option>
            {jobStatusValues.map((name) => (
              <option key={name}>{name}</option>
            ))}
          </select>
        </label>
        <label className="field">
          Provider
          <select value={provider} onChange={(event) => setProvider(event.target.value)}>
            <option value="">any</option>
            {providers.map((item) => (
              <option key={item.name}>{item.name}</option>
            ))}
          </select>
        </label>
      </div>
      {jobs !== null && jobs.length === 0 && (
        <p className="hint" role="status">
          {status || provider || search.trim()
            ? "No job of this board matches; clear the search or the filters to see them all."
            : "No jobs on this board yet: Generate on a node, or Run all, and they show here."}
        </p>
      )}
      <ol className="jobs" aria-label="Jobs">
        {(jobs ?? []).map((job) => (
          <li key={job.jobId} data-job-id={job.jobId} data-status={job.status}>
            {job.thumbnailUrl && <img src={job.thumbnailUrl} alt="" />}
            <div>
              <p className="job-prompt">{String(job.promptSpec.basePrompt ?? "")}</p>
              <p className="job-meta">
                {job.errorCode === "Cancelled" ? "cancelled" : job.status} · {job.provider}:{job.model} ·{" "}
                {new Date(job.startedAt).toLocaleTimeString()}
              </p>
              {job.error && <p className="node-error">{job.error}</p>}
              {(job.status === "pending" || job.status === "running") && (
                <button type="button" onClick={() => api.cancelJob(job.jobId).catch(onError)}>
                  Cancel
                </button>
              )}
              {job.status === "failed" && (
                <button type="button" onClick={() => api.retryJob(job.jobId).catch(onError)}>
                  Retry
                </button>
              )}
            </div>
          </li>
        ))}
      </ol>
      {cursor && (
        <button type="button" onClick={more}>
          More
        </button>
      )}
    </aside>
  );
}
