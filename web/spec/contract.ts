/* eslint-disable @typescript-eslint/no-explicit-any -- the specification declares these `any`, verbatim */
// The specification's output interfaces: our public contract, field for field. The JSON Schemas that
// tests/test_contract.py checks every record, event, status and node against are generated from this file
// (`npm run gen:spec-schemas`). Dates travel as ISO 8601 strings. Our own fields are additive: a schema lets
// them through, while every field declared here must have its declared type (an optional one is absent, not null).

export interface ImageJobRecord {
  jobId: string; // Provider's job ID
  nodeId: string; // React Flow node to update
  workflowId: string; // Parent workflow
  provider: string; // Image generation provider
  model: string; // Model used
  status: "pending" | "running" | "completed" | "failed";
  startedAt: Date;
  finishedAt?: Date;
  imageUrl?: string; // Final R2/S3 URL (NOT base64)
  metadata?: Record<string, any>;
  error?: string;
}

export interface ImageProgressEvent {
  jobId: string;
  timestamp: Date;
  kind: "progress" | "log" | "error";
  message: string;
  progress?: number; // 0-100
  data?: any;
}

// Generic polling response
export interface ImageJobStatus {
  job_id: string;
  status: "pending" | "running" | "completed" | "failed";
  progress?: number; // 0-100
  images?: Array<{ url: string; b64_json?: string }>;
  error?: string;
}

// What the spec's updateReactFlowNode writes into a node's data.
export interface ReactFlowNodeUpdate {
  imageUrl?: string;
  status?: "pending" | "running" | "completed" | "error";
  error?: string;
}
