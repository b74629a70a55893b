// The operator's figures on `/ops`, from GET /v1/stats: jobs by status now, and how many of the pending wait for
// one of the tenant's running slots (maxConcurrentJobs); per provider and model since midnight UTC (the budget's
// day) what completed, failed, met a 429 or a polling timeout, how long it took and what it cost. Read again every
// few seconds while the page is open.
import { useEffect, useState } from "react";
import { jobStatusValues } from "./schema";
import { api, type JobStats, type ProviderStatsRow } from "./api";
import { usd } from "./format";

const REFRESH_MS = 5000;

export function OpsFigures({ onError }: { onError: (error: unknown) => void }) {
  const stats = useTodaysStats(onError);
  if (stats === null) return <p>Loading…</p>;
  return (
    <>
      <section aria-labelledby="jobs-now">
        <h2 id="jobs-now">Jobs</h2>
        <ul className="figures" aria-label="Jobs by status">
          {jobStatusValues.map((status) => (
            <li key={status} className={`figure figure-${status}`}>
              <span className="figure-value">{stats.byStatus[status] ?? 0}</span>
              <span className="figure-label">{status}</span>
            </li>
          ))}
          <li
            className="figure figure-pending figure-line"
            title="Pending jobs waiting for one of their tenant's running slots (maxConcurrentJobs)"
          >
            <span className="figure-value">{stats.waitingForSlot}</span>
            <span className="figure-label">Pending, waiting for a slot</span>
          </li>
        </ul>
      </section>
      <section aria-labelledby="providers-today">
        <h2 id="providers-today">Providers today</h2>
        <ProvidersTable rows={stats.providers} />
      </section>
    </>
  );
}

function useTodaysStats(onError: (error: unknown) => void): JobStats | null {
  const [stats, setStats] = useState<JobStats | null>(null);
  useEffect(() => {
    let stopped = false;
    const load = () =>
      api.stats({ since: startOfUtcDay() }).then((next) => {
        if (!stopped) setStats(next);
      }, onError);
    void load();
    const timer = window.setInterval(() => void load(), REFRESH_MS);
    return () => {
      stopped = true;
      window.clearInterval(timer);
    };
  }, [onError]);
  return stats;
}

function ProvidersTable({ rows }: { rows: ProviderStatsRow[] }) {
  if (rows.length === 0) return <p>No jobs since midnight UTC.</p>;
  const totalCost = rows.reduce((sum, row) => sum + (row.costUsd ?? 0), 0);
  return (
    <table className="deliveries provider-figures">
      <caption>Since midnight UTC; jobs by when they were created</caption>
      <thead>
        <tr>
          <th scope="col">Provider</th>
          <th scope="col">Completed</th>
          <th scope="col">Failed</th>
          <th scope="col">Cancelled</th>
          <th scope="col">429s</th>
          <th scope="col">Poll timeouts</th>
          <th scope="col">p50 / p95</th>
          <th scope="col">Cost</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr key={`${row.provider}:${row.model}`} aria-label={`${row.provider}:${row.model}`}>
            <th scope="row">
              {row.provider} <span className="endpoint-meta">{row.model}</span>
            </th>
            <td>{row.completed}</td>
            <td className={row.failed ? "figure-bad" : undefined}>{row.failed}</td>
            <td>{row.cancelled}</td>
            <td className={row.rateLimited ? "figure-bad" : undefined}>{row.rateLimited}</td>
            <td className={row.pollTimeouts ? "figure-bad" : undefined}>{row.pollTimeouts}</td>
            <td>
              {seconds(row.p50Seconds)} / {seconds(row.p95Seconds)}
            </td>
            <td>{row.costUsd == null ? "unknown" : usd(row.costUsd)}</td>
          </tr>
        ))}
      </tbody>
      <tfoot>
        <tr>
          <th scope="row" colSpan={7}>
            Total cost
          </th>
          <td>{usd(totalCost)}</td>
        </tr>
      </tfoot>
    </table>
  );
}

function startOfUtcDay(): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate())).toISOString();
}

function seconds(value: number | null | undefined): string {
  return value == null ? "–" : `${value.toFixed(1)} s`;
}
