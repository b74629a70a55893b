// The API as the canvas uses it: typed from the OpenAPI schema (schema.d.ts is generated, never edited).
import type { components } from "./schema";

type Schemas = components["schemas"];
export type Board = Schemas["Board"];
export type BoardNode = Schemas["BoardNode"];
export type BoardEdge = Schemas["BoardEdge"];
export type CanvasSummary = Schemas["CanvasSummary"];
export type ImageJobRecord = Schemas["ImageJobRecord"];
export type ImageProgressEvent = Schemas["ImageProgressEvent"];
export type ProviderDescription = Schemas["ProviderDescription"];
export type ClientConfig = Schemas["ClientConfig"];
export type StartImageJobRequest = Schemas["StartImageJobRequest"];
export type CanvasRunView = Schemas["CanvasRunView"];
export type CanvasRunRequest = Schemas["CanvasRunRequest"];
export type CanvasRunPreview = Schemas["CanvasRunPreview"];
export type WebhookEndpointView = Schemas["WebhookEndpointView"];
export type DeliveryView = Schemas["DeliveryView"];
export type JobStats = Schemas["JobStats"];
export type ProviderStatsRow = Schemas["ProviderRow"];

const KEY_STORAGE = "imagejobs.apiKey";

/** An error answer of the API: its stable `code` and human `message`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network_error", "The API cannot be reached; is `make dev` still running?");
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  const parsed: unknown = text ? JSON.parse(text) : undefined;
  if (!response.ok) {
    const error = (parsed ?? {}) as { code?: string; message?: string };
    throw new ApiError(response.status, error.code ?? "error", error.message ?? `${method} ${path}: ${response.status}`);
  }
  return parsed as T;
}

export const api = {
  config: () => call<ClientConfig>("GET", "/v1/config"),
  canvases: () => call<Schemas["CanvasList"]>("GET", "/v1/canvases"),
  createCanvas: (name: string) => call<Board>("POST", "/v1/canvases", { name }),
  renameCanvas: (id: string, name: string) => call<Board>("PATCH", `/v1/canvases/${encodeURIComponent(id)}`, { name }),
  deleteCanvas: (id: string) => call<undefined>("DELETE", `/v1/canvases/${encodeURIComponent(id)}`),
  board: (id: string) => call<Board>("GET", `/v1/canvases/${encodeURIComponent(id)}`),
  saveBoard: (id: string, board: Schemas["BoardSave"]) =>
    call<Board>("PUT", `/v1/canvases/${encodeURIComponent(id)}`, board),
  providers: () => call<Schemas["ProviderList"]>("GET", "/v1/providers"),
  startJob: (request: StartImageJobRequest) => call<ImageJobRecord>("POST", "/v1/jobs", request),
  cancelJob: (jobId: string) => call<ImageJobRecord>("POST", `/v1/jobs/${encodeURIComponent(jobId)}/cancel`),
  job: (jobId: string) => call<ImageJobRecord>("GET", `/v1/jobs/${encodeURIComponent(jobId)}`),
  streamToken: (canvasId: string) =>
    call<Schemas["StreamToken"]>("POST", "/v1/stream-tokens", { workflowId: canvasId }),
  createUpload: (request: Schemas["UploadRequest"]) => call<Schemas["UploadTicket"]>("POST", "/v1/uploads", request),
  retryJob: (jobId: string) => call<ImageJobRecord>("POST", `/v1/jobs/${encodeURIComponent(jobId)}/retry`),
  jobs: (filters: Record<string, string | undefined>) => {
    const query = new URLSearchParams(Object.entries(filters).filter((entry): entry is [string, string] => !!entry[1]));
    return call<Schemas["JobPage"]>("GET", `/v1/jobs?${query.toString()}`);
  },
  startRun: (canvasId: string, request: Partial<CanvasRunRequest>) =>
    call<CanvasRunView>("POST", `/v1/canvases/${encodeURIComponent(canvasId)}/runs`, { ...request, dryRun: false }),
  previewRun: (canvasId: string, request: Partial<CanvasRunRequest>) =>
    call<CanvasRunPreview>("POST", `/v1/canvases/${encodeURIComponent(canvasId)}/runs`, { ...request, dryRun: true }),
  cancelRun: (canvasId: string, runId: string) =>
    call<CanvasRunView>(
      "POST",
      `/v1/canvases/${encodeURIComponent(canvasId)}/runs/${encodeURIComponent(runId)}/cancel`,
    ),
  webhookEndpoints: () => call<Schemas["WebhookEndpointList"]>("GET", "/v1/webhook-endpoints"),
  deliveries: (endpointId: string, status?: DeliveryView["status"]) =>
    call<Schemas["DeliveryList"]>(
      "GET",
      `/v1/webhook-endpoints/${encodeURIComponent(endpointId)}/deliveries?limit=20${status ? `&status=${status}` : ""}`,
    ),
  replayDelivery: (endpointId: string, deliveryId: string) =>
    call<DeliveryView>(
      "POST",
      `/v1/webhook-endpoints/${encodeURIComponent(endpointId)}/deliveries/${encodeURIComponent(deliveryId)}/replay`,
    ),
  stats: (filter: { canvasId?: string; since?: string }) => {
    const query = new URLSearchParams();
    if (filter.canvasId) query.set("workflowId", filter.canvasId);
    if (filter.since) query.set("since", filter.since);
    return call<Schemas["JobStats"]>("GET", `/v1/stats?${query.toString()}`);
  },
};
