// What an image node carries in `data`: the person's generation settings, and beside them the fields its newest
// job writes (jobId, status, progress, error, imageUrl, imageUrls, thumbnailUrl), which a save never changes.
import type { Edge, Node, Viewport } from "@xyflow/react";
import type { Board, BoardNode } from "../api";
import { jobOwnedNodeFieldValues, uploadRequestContentTypeValues, type components } from "../schema";

type NodeType = components["schemas"]["NodeType"];

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
  waitingForSlot?: boolean; // pending in its workspace's line: it runs its maxConcurrentJobs already
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

// The node types, checked against the API's vocabulary (NodeType in the OpenAPI schema): tsc fails if it drops one.
export const IMAGE_NODE = "image_generation" satisfies NodeType;
export const UPLOADED_NODE = "image" satisfies NodeType;
// What an upload may be, as the API takes it.
export const UPLOAD_TYPES = uploadRequestContentTypeValues;

// What a node's state in a canvas run adds to its job's status, on the board.
export const RUN_ONLY_STATES = ["pending", "cached", "skipped", "cancelled"];

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
  // The fields a job writes on its node: the API's own list, from its OpenAPI schema.
  for (const key of jobOwnedNodeFieldValues) if (key in data) owned[key] = data[key];
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

/** A node as the API sends it (a board's, or the stream's), as React Flow takes it. */
export function toAppNode(node: BoardNode): AppNode {
  return {
    id: node.id,
    type: nodeType(node.type),
    position: { x: node.position?.x ?? 0, y: node.position?.y ?? 0 },
    data: (node.data ?? {}) as ImageNodeData,
  };
}

export function toAppEdge(edge: Board["edges"][number]): AppEdge {
  return {
    id: edge.id,
    source: edge.source,
    target: edge.target,
    sourceHandle: edge.sourceHandle ?? null,
    targetHandle: edge.targetHandle ?? null,
  };
}

/** The board as a save sends it. */
export function asSave(board: { nodes: AppNode[]; edges: AppEdge[]; viewport: Viewport }, version: number) {
  return {
    version,
    nodes: board.nodes.map(({ id, type, position, data }) => ({ id, type: nodeType(type), position, data })),
    edges: board.edges.map(({ id, source, target, sourceHandle, targetHandle }) => ({
      id,
      source,
      target,
      sourceHandle: sourceHandle ?? null,
      targetHandle: targetHandle ?? null,
    })),
    viewport: board.viewport,
  };
}
