// What an image node carries in `data`: the person's generation settings, and beside them the fields its newest
// job writes (jobId, status, progress, error, imageUrl, imageUrls, thumbnailUrl), which a save never changes.
import type { Edge, Node } from "@xyflow/react";
import { JOB_OWNED_NODE_FIELDS } from "../vocabulary";

export type ImageNodeData = {
  prompt?: string;
  styleModifiers?: string[];
  provider?: string;
  model?: string;
  size?: string;
  aspectRatio?: string;
  quality?: string;
  seed?: number | null;
  n?: number;
  chosenImageUrl?: string | null;
  // An image node of the person's own (dropped or pasted): where its upload went, and the file's name.
  sourceUrl?: string;
  label?: string;
  jobId?: string;
  startedAt?: string; // when the job was created
  retry?: string; // a failed attempt that will be tried again, until the next attempt goes on
  status?: string;
  progress?: number | null;
  error?: string | null;
  imageUrl?: string | null;
  imageUrls?: string[] | null;
  thumbnailUrl?: string | null;
  estimatedCostUsd?: number;
  costUsd?: number;
  updatedAt?: string;
  // Written by a canvas run: its id, and this node's state and reason in it (cached, skipped, ...).
  runId?: string;
  runState?: string;
  runReason?: string | null;
};

export type ImageNode = Node<ImageNodeData, "image_generation">;
export type UploadedNode = Node<ImageNodeData, "image">;
export type AppNode = ImageNode | UploadedNode;
export type AppEdge = Edge;

export const IMAGE_NODE = "image_generation" as const;
export const UPLOADED_NODE = "image" as const;
export const UPLOAD_TYPES = ["image/png", "image/jpeg", "image/webp"] as const;

// What a node's state in a canvas run adds to its job's status, on the board.
export const RUN_ONLY_STATES = ["pending", "cached", "skipped", "cancelled"];
export const ASPECT_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"];
export const QUALITIES = ["standard", "hd", "low", "medium", "high"];
export const SIZES = ["512x512", "768x768", "1024x1024", "1024x768", "768x1024", "1536x1024", "1024x1536"];

export function isBusy(status: string | undefined): boolean {
  return status === "pending" || status === "running";
}

/** The image the node shows and passes on: the variant the person chose, else the job's first, else the upload. */
export function currentImage(data: ImageNodeData): string | null {
  return data.chosenImageUrl ?? data.imageUrl ?? data.sourceUrl ?? null;
}

/** Only the job-owned fields of `data`. */
export function jobOwned(data: Record<string, unknown>): Partial<ImageNodeData> {
  const owned: Record<string, unknown> = {};
  // The fields a job writes on its node: the API's own list (web/src/vocabulary.ts, generated).
  for (const key of JOB_OWNED_NODE_FIELDS) if (key in data) owned[key] = data[key];
  return owned as Partial<ImageNodeData>;
}

export function newNodeId(): string {
  return `node-${Math.random().toString(36).slice(2, 10)}`;
}

export function nodeType(type: string | undefined): AppNode["type"] {
  return type === UPLOADED_NODE ? UPLOADED_NODE : IMAGE_NODE;
}

/** How messages name a node: the first words of its prompt (people never see node ids). */
export function nodeName(data: ImageNodeData): string {
  const words = (data.prompt ?? "").trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "A node without a prompt";
  return `“${words.slice(0, 6).join(" ")}${words.length > 6 ? "…" : ""}”`;
}
