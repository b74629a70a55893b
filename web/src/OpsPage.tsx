// The operator view (`/ops`): jobs by status and each provider's day (OpsFigures), then the outbound webhook
// endpoints, whether each is healthy, and its recent failures with a way to send one again.
import { useCallback, useEffect, useState } from "react";
import { ApiError, api, type DeliveryView, type WebhookEndpointView } from "./api";
import { navigate } from "./routes";
import { OpsFigures } from "./OpsFigures";
import { useToast } from "./Toasts";

type EndpointRow = { endpoint: WebhookEndpointView; failures: DeliveryView[] };

export function OpsPage({ onUnauthorized }: { onUnauthorized: (error: ApiError) => void }) {
  const [rows, setRows] = useState<EndpointRow[] | null>(null);
  const toast = useToast();

  const fail = useCallback(
    (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else toast(error instanceof Error ? error.message : String(error));
    },
    [onUnauthorized, toast],
  );

  const load = useCallback(async () => {
    const { items } = await api.webhookEndpoints();
    const failures = await Promise.all(items.map((endpoint) => api.deliveries(endpoint.id, "failed")));
    setRows(items.map((endpoint, index) => ({ endpoint, failures: failures[index]?.items ?? [] })));
  }, []);

  useEffect(() => {
    load().catch(fail);
  }, [load, fail]);

  const replay = async (endpointId: string, deliveryId: string) => {
    try {
      await api.replayDelivery(endpointId, deliveryId);
      toast("Sent again; the log shows how it went.");
      await load();
    } catch (error) {
      fail(error);
    }
  };

  return (
    <main className="page page-wide">
      <header className="page-header">
        <h1>Operations</h1>
        <button type="button" onClick={() => navigate("/")}>
          Canvases
        </button>
      </header>
      <OpsFigures onError={fail} />
      <h2>Webhooks to your app</h2>
      {rows === null ? (
        <p>Loading…</p>
      ) : rows.length === 0 ? (
        <p>No webhook endpoints yet. Add one with POST /v1/webhook-endpoints (see the README).</p>
      ) : (
        <ul className="endpoint-list">
          {rows.map(({ endpoint, failures }) => (
            <li key={endpoint.id} aria-label={`Endpoint ${endpoint.url}`}>
              <div className="endpoint-head">
                <strong className="endpoint-url">{endpoint.url}</strong>
                <EndpointHealth endpoint={endpoint} />
              </div>
              <span className="endpoint-meta">
                {endpoint.description ? `${endpoint.description} · ` : ""}
                {endpoint.events?.join(", ") ?? "all events"}
                {endpoint.disabledReason ? ` · ${endpoint.disabledReason}` : ""}
                {endpoint.failingSince ? ` · failing since ${new Date(endpoint.failingSince).toLocaleString()}` : ""}
              </span>
              {failures.length === 0 ? (
                <p className="endpoint-meta">No failed deliveries in the last 30 days.</p>
              ) : (
                <table className="deliveries">
                  <caption>Recent failures</caption>
                  <thead>
                    <tr>
                      <th scope="col">When</th>
                      <th scope="col">Event</th>
                      <th scope="col">Attempts</th>
                      <th scope="col">Last answer</th>
                      <th scope="col">
                        <span className="visually-hidden">Actions</span>
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {failures.map((delivery) => (
                      <tr key={delivery.id}>
                        <td>{new Date(delivery.createdAt).toLocaleString()}</td>
                        <td>
                          {delivery.eventType} <code>{delivery.subjectId}</code>
                        </td>
                        <td>{delivery.attempts}</td>
                        <td>{delivery.lastError ?? delivery.lastStatusCode ?? "no answer"}</td>
                        <td>
                          <button type="button" onClick={() => void replay(endpoint.id, delivery.id)}>
                            Send again
                          </button>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}

function EndpointHealth({ endpoint }: { endpoint: WebhookEndpointView }) {
  if (endpoint.disabled) return <span className="badge badge-failed">disabled</span>;
  if (endpoint.failingSince) return <span className="badge badge-run-skipped">failing</span>;
  return <span className="badge badge-completed">healthy</span>;
}
