// Jobs and canvas runs started from the board: Generate (and Cmd/Ctrl+Enter), Cancel, a run previewed before it
// starts, and what people hear of failures and retries: toasts that name the node and offer to show it or retry.
import { useReactFlow } from "@xyflow/react";
import { useCallback, useEffect, useState } from "react";
import { api, type CanvasRunView, type ImageProgressEvent, type StartImageJobRequest } from "../api";
import { useToast } from "../Toasts";
import { IMAGE_NODE, currentImage, nodeName, type AppEdge, type AppNode } from "./nodeData";
import type { PendingRun } from "./RunPreview";

type Board = {
  canvasId: string;
  /** Save what is waiting before a job or a run reads the board. */
  flushSave: () => Promise<void>;
  /** Select one node only (Show node). */
  selectOnly: (nodeId: string) => void;
  fail: (error: unknown) => void;
};

export function useJobsAndRuns({ canvasId, flushSave, selectOnly, fail }: Board) {
  const flow = useReactFlow<AppNode, AppEdge>();
  const toast = useToast();
  const [run, setRun] = useState<CanvasRunView | null>(null);
  const [pendingRun, setPendingRun] = useState<PendingRun | null>(null);
  // Moves on with every job event on the board, so the history panel and its stats follow along.
  const [jobRevision, setJobRevision] = useState(0);

  const generate = useCallback(
    async (nodeId: string) => {
      await flushSave();
      const node = flow.getNode(nodeId);
      if (!node) return;
      // An edge into this node means refinement: start from the upstream node's current image.
      const upstream = flow.getEdges().find((edge) => edge.target === nodeId);
      const source = upstream ? flow.getNode(upstream.source) : undefined;
      const previousImage = source ? currentImage(source.data) : null;
      if (source && !previousImage) {
        toast(`Generate the node this one refines first: it has no image yet.`);
        return;
      }
      const data = node.data;
      try {
        const job = await api.startJob({
          workflowId: canvasId,
          nodeId,
          provider: data.provider ?? "local",
          model: data.model ?? null,
          // A person waiting on this node goes before batch work such as canvas runs.
          priority: "high",
          promptSpec: {
            basePrompt: data.prompt ?? "",
            styleModifiers: data.styleModifiers ?? [],
            // An aspect ratio, when chosen, shapes the image instead of the size.
            size: data.aspectRatio ? null : (data.size ?? null),
            aspectRatio: data.aspectRatio ?? null,
            quality: (data.quality ?? null) as StartImageJobRequest["promptSpec"]["quality"],
            seed: data.seed ?? null,
            n: data.n ?? 1,
            previousImage,
          },
        });
        flow.updateNodeData(nodeId, {
          jobId: job.jobId,
          status: job.status,
          progress: 0,
          error: null,
          chosenImageUrl: null,
        });
      } catch (error) {
        fail(error);
      }
    },
    [canvasId, flow, flushSave, toast, fail],
  );

  const cancel = useCallback(
    async (nodeId: string) => {
      const jobId = flow.getNode(nodeId)?.data.jobId;
      if (jobId) await api.cancelJob(jobId).catch(fail);
    },
    [flow, fail],
  );

  // Cmd/Ctrl+Enter generates the node being edited, else the selected image nodes.
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key !== "Enter" || !(event.metaKey || event.ctrlKey)) return;
      const editing = event.target instanceof Element ? event.target.closest("[data-node-id]") : null;
      const chosen = editing
        ? [editing.getAttribute("data-node-id") ?? ""]
        : flow
            .getNodes()
            .filter((node) => node.selected && node.type === IMAGE_NODE)
            .map((node) => node.id);
      if (chosen.length === 0) return;
      event.preventDefault();
      for (const nodeId of chosen) void generate(nodeId);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [flow, generate]);

  // A run is previewed first (a dry run: what it generates, reuses and costs); it starts once confirmed.
  const previewRun = useCallback(
    async (fromNodeId?: string) => {
      await flushSave();
      const request = fromNodeId ? { fromNodeId } : {};
      try {
        const [preview, forced] = await Promise.all([
          api.previewRun(canvasId, request),
          api.previewRun(canvasId, { ...request, force: true }),
        ]);
        setPendingRun({ fromNodeId, preview, forced });
      } catch (error) {
        fail(error);
      }
    },
    [canvasId, flushSave, fail],
  );

  const startRun = useCallback(
    async (force: boolean) => {
      const fromNodeId = pendingRun?.fromNodeId;
      setPendingRun(null);
      try {
        setRun(await api.startRun(canvasId, { ...(fromNodeId ? { fromNodeId } : {}), force }));
      } catch (error) {
        fail(error);
      }
    },
    [canvasId, pendingRun, fail],
  );

  const cancelRun = useCallback(async () => {
    if (run) await api.cancelRun(canvasId, run.runId).catch(fail);
  }, [canvasId, run, fail]);

  const nodeOfJob = useCallback((jobId: string) => flow.getNodes().find((item) => item.data.jobId === jobId), [flow]);

  const showNode = useCallback(
    (nodeId: string) => {
      selectOnly(nodeId);
      void flow.fitView({ nodes: [{ id: nodeId }], duration: 300, maxZoom: 1.2 });
    },
    [flow, selectOnly],
  );

  /** What the board's stream says of its jobs and runs. */
  const onJobEvent = useCallback(
    (event: ImageProgressEvent) => {
      const node = nodeOfJob(event.jobId);
      // A cancellation is an `error` event too, but someone asked for it: no toast.
      if (event.kind === "error" && event.data?.moment !== "cancelled") {
        if (!node) toast(event.message);
        else
          toast(`${nodeName(node.data)} failed: ${event.message}`, [
            { label: "Show node", run: () => showNode(node.id), keep: true },
            { label: "Retry", run: () => void generate(node.id) },
          ]);
      }
      // A provider's failed attempt that will be tried again: said once, naming the node (the node shows it too).
      if (event.kind === "log" && event.data?.moment === "retry")
        toast(node ? `${nodeName(node.data)}: ${event.message}` : event.message);
      if (event.kind !== "progress") setJobRevision((revision) => revision + 1);
    },
    [nodeOfJob, toast, showNode, generate],
  );

  const onRun = useCallback(
    (view: CanvasRunView) => setRun((current) => (!current || view.createdAt >= current.createdAt ? view : current)),
    [],
  );

  return {
    run,
    pendingRun,
    jobRevision,
    generate,
    cancel,
    previewRun,
    startRun,
    cancelRun,
    closePreview: () => setPendingRun(null),
    onJobEvent,
    onRun,
  };
}
