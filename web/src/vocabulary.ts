// Generated from models/vocabulary.py by `make api-types`: do not edit; change the Python and regenerate.

// A job's statuses as stored and filtered by (records show the spec's four).
export const JOB_STATUSES = ["pending", "running", "completed", "failed", "cancelled"] as const;

// A node's data.status, as the spec's updateReactFlowNode writes it.
export const NODE_STATUSES = ["pending", "running", "completed", "error"] as const;

// A node's state in a canvas run (data.runState).
export const NODE_RUN_STATES = ["pending", "running", "completed", "cached", "failed", "skipped", "cancelled"] as const;

// The fields of a node's data that its job writes.
export const JOB_OWNED_NODE_FIELDS = ["jobId", "startedAt", "retry", "status", "progress", "error", "imageUrl", "imageUrls", "thumbnailUrl", "estimatedCostUsd", "costUsd", "updatedAt", "runId", "runState", "runReason"] as const;
