// One board: React Flow with image nodes, saved as the person edits it and kept live by the board's stream.
import {
  Background,
  Controls,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  useEdgesState,
  useNodesState,
  useReactFlow,
  type Connection,
  type EdgeChange,
  type NodeChange,
  type NodeTypes,
  type Viewport,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import {
  ApiError,
  api,
  type Board,
  type CanvasRunView,
  type ClientConfig,
  type JobStats,
  type ProviderDescription,
  type StartImageJobRequest,
} from "../api";
import { navigate } from "../App";
import { useToast } from "../Toasts";
import { BoardActionsContext, type BoardActions } from "./actions";
import { ImageDialog, PromptEditor } from "./ImageDialog";
import { type PendingRun, RunPreview } from "./RunPreview";
import { HistoryPanel } from "./HistoryPanel";
import { ImageNodeView } from "./ImageNodeView";
import {
  IMAGE_NODE,
  UPLOADED_NODE,
  UPLOAD_TYPES,
  currentImage,
  jobOwned,
  newNodeId,
  nodeName,
  nodeType,
  type AppEdge,
  type AppNode,
  type ImageNodeData,
} from "./nodeData";
import { freeSpot } from "./layout";
import { idsOf, mergeBoards, type SyncedIds } from "./merge";
import { useUndo } from "./useUndo";
import { UploadedImageView } from "./UploadedImageView";
import { useBoardStream, type StreamNode } from "./useBoardStream";

const SAVE_AFTER_MS = 400;
const NODE_TYPES: NodeTypes = { [IMAGE_NODE]: ImageNodeView, [UPLOADED_NODE]: UploadedImageView };

type Props = { canvasId: string; config: ClientConfig; onUnauthorized: (error: ApiError) => void };

export function BoardPage(props: Props) {
  return (
    <ReactFlowProvider>
      <BoardCanvas {...props} />
    </ReactFlowProvider>
  );
}

/** A node as the API sends it (a board's, or the stream's) as React Flow takes it. */
function toAppNode(node: { id: string; type?: string; position?: { x: number; y: number }; data?: object }): AppNode {
  return {
    id: node.id,
    type: nodeType(node.type),
    position: node.position ?? { x: 0, y: 0 },
    data: (node.data ?? {}) as ImageNodeData,
  };
}

function toAppEdge(edge: Board["edges"][number]): AppEdge {
  return {
    id: edge.id,
    source: edge.source,
    target: edge.target,
    sourceHandle: edge.sourceHandle ?? null,
    targetHandle: edge.targetHandle ?? null,
  };
}

function asAppEdges(board: Board): AppEdge[] {
  return board.edges.map(toAppEdge);
}

/** The board as a save sends it. */
function asSave(board: { nodes: AppNode[]; edges: AppEdge[]; viewport: Viewport }, version: number) {
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

// A save that keeps meeting newer versions (someone saving as fast) gives up and says so.
const SAVE_MERGE_ATTEMPTS = 3;

function BoardCanvas({ canvasId, config, onUnauthorized }: Props) {
  const flow = useReactFlow<AppNode, AppEdge>();
  const toast = useToast();
  const [nodes, setNodes, onNodesChangeBase] = useNodesState<AppNode>([]);
  const [edges, setEdges, onEdgesChangeBase] = useEdgesState<AppEdge>([]);
  const [name, setName] = useState("");
  const [loaded, setLoaded] = useState(false);
  const [providers, setProviders] = useState<ProviderDescription[]>([]);
  const [typical, setTypical] = useState<Map<string, number>>(new Map());
  const [dialogNode, setDialogNode] = useState<string | null>(null);
  const [editingNode, setEditingNode] = useState<string | null>(null);
  const [historyOpen, setHistoryOpen] = useState(false);
  const [jobRevision, setJobRevision] = useState(0);
  const [run, setRun] = useState<CanvasRunView | null>(null);
  const [pendingRun, setPendingRun] = useState<PendingRun | null>(null);
  // Local changes not yet saved: while there are some, the stream does not overwrite what the person owns.
  const unsaved = useRef(0);
  const savedVersion = useRef(0);
  const synced = useRef<SyncedIds>({ nodes: new Set(), edges: new Set() });
  const saveTimer = useRef<number | null>(null);
  const saving = useRef<Promise<void>>(Promise.resolve());

  const fail = useCallback(
    (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else toast(error instanceof Error ? error.message : String(error));
    },
    [onUnauthorized, toast],
  );

  // A viewport that arrives before React Flow can take one is applied in onInit.
  const pendingViewport = useRef<Viewport | null>(null);

  const load = useCallback(async () => {
    const board = await api.board(canvasId);
    savedVersion.current = board.version;
    synced.current = idsOf(board);
    setName(board.name);
    setNodes(board.nodes.map(toAppNode));
    setEdges(asAppEdges(board));
    const viewport = board.viewport as Viewport;
    if (flow.viewportInitialized) await flow.setViewport(viewport);
    else pendingViewport.current = viewport;
    setLoaded(true);
  }, [canvasId, flow, setEdges, setNodes]);

  // The board loads once per canvas. `load` changes identity when React Flow finishes setting up, and loading
  // again then would drop a node added in between.
  const loadOnce = useRef(load);
  useEffect(() => {
    loadOnce.current = load;
  });
  useEffect(() => {
    loadOnce.current().catch((error: unknown) => {
      if (error instanceof ApiError && error.code === "canvas_not_found") setLoaded(true);
      else fail(error);
    });
    api.providers().then((list) => setProviders(list.items), fail);
    api.stats({}).then((stats) => setTypical(typicalDurations(stats)), fail);
  }, [canvasId, fail]);

  const onInit = useCallback(() => {
    if (pendingViewport.current) void flow.setViewport(pendingViewport.current);
    pendingViewport.current = null;
  }, [flow]);

  const save = useCallback(async () => {
    const changes = unsaved.current;
    let board: { nodes: AppNode[]; edges: AppEdge[]; viewport: Viewport } = flow.toObject();
    for (let attempt = 1; ; attempt += 1) {
      try {
        const saved = await api.saveBoard(canvasId, asSave(board, savedVersion.current));
        savedVersion.current = saved.version;
        synced.current = idsOf(board);
        break;
      } catch (error) {
        const stale = error instanceof ApiError && error.code === "board_version_conflict";
        if (!stale || attempt === SAVE_MERGE_ATTEMPTS) throw error;
        const server = await api.board(canvasId);
        board = { ...mergeBoards(board, server, synced.current, toAppNode, toAppEdge), viewport: board.viewport };
        savedVersion.current = server.version;
        synced.current = idsOf(server);
        setNodes(board.nodes);
        setEdges(board.edges);
      }
    }
    unsaved.current -= changes;
  }, [canvasId, flow, setEdges, setNodes]);

  const flushSave = useCallback((): Promise<void> => {
    if (saveTimer.current !== null) {
      window.clearTimeout(saveTimer.current);
      saveTimer.current = null;
    }
    saving.current = saving.current.then(() => (unsaved.current > 0 ? save() : undefined)).catch(fail);
    return saving.current;
  }, [save, fail]);

  const scheduleSave = useCallback(() => {
    unsaved.current += 1;
    if (saveTimer.current !== null) window.clearTimeout(saveTimer.current);
    saveTimer.current = window.setTimeout(() => void flushSave(), SAVE_AFTER_MS);
  }, [flushSave]);

  useEffect(() => () => void flushSave(), [flushSave]);

  const readBoard = useCallback(() => ({ nodes: flow.getNodes(), edges: flow.getEdges() }), [flow]);
  const { remember } = useUndo(readBoard, setNodes, setEdges, scheduleSave);
  const dragging = useRef(false);

  const onNodesChange = useCallback(
    (changes: NodeChange<AppNode>[]) => {
      // Undo goes back to before a drag began, or before a delete.
      const moves = changes.filter((change) => change.type === "position");
      const draggingNow = moves.some((change) => change.dragging);
      if ((draggingNow && !dragging.current) || changes.some((change) => change.type === "remove")) remember();
      if (moves.length > 0) dragging.current = draggingNow;
      onNodesChangeBase(changes);
      const edited = changes.some(
        (change) => change.type === "remove" || change.type === "add" || (change.type === "position" && !change.dragging),
      );
      if (edited) scheduleSave();
    },
    [onNodesChangeBase, scheduleSave, remember],
  );

  const onEdgesChange = useCallback(
    (changes: EdgeChange<AppEdge>[]) => {
      if (changes.some((change) => change.type === "remove")) remember();
      onEdgesChangeBase(changes);
      if (changes.some((change) => change.type === "remove" || change.type === "add")) scheduleSave();
    },
    [onEdgesChangeBase, scheduleSave, remember],
  );

  const onConnect = useCallback(
    (connection: Connection) => {
      remember();
      setEdges((all) => addEdge({ ...connection, id: `edge-${connection.source}-${connection.target}` }, all));
      scheduleSave();
    },
    [setEdges, scheduleSave, remember],
  );

  const update = useCallback(
    (nodeId: string, change: Partial<ImageNodeData>) => {
      setNodes((all) => all.map((node) => (node.id === nodeId ? { ...node, data: { ...node.data, ...change } } : node)));
      scheduleSave();
    },
    [setNodes, scheduleSave],
  );

  const addImageNode = useCallback(() => {
    const centre = flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
    const node: AppNode = {
      id: newNodeId(),
      type: IMAGE_NODE,
      position: freeSpot(flow.getNodes(), { x: centre.x - 120, y: centre.y - 150 }),
      data: { prompt: "", provider: "local", model: "procedural", size: "512x512", n: 1 },
    };
    remember();
    setNodes((all) => [...all, node]);
    scheduleSave();
  }, [flow, setNodes, scheduleSave, remember]);

  const addUploadedImage = useCallback(
    async (file: File, at?: { x: number; y: number }) => {
      const contentType = UPLOAD_TYPES.find((type) => type === file.type);
      if (!contentType) {
        toast(`${file.name || "That file"} is not a PNG, JPEG or WebP image.`);
        return;
      }
      try {
        const ticket = await api.createUpload({ contentType, bytes: file.size });
        const put = await fetch(ticket.uploadUrl, { method: "PUT", headers: { "Content-Type": contentType }, body: file });
        if (!put.ok) throw new ApiError(put.status, "upload_failed", `Uploading ${file.name} failed (HTTP ${put.status}).`);
        const wanted = at ?? flow.screenToFlowPosition({ x: window.innerWidth / 3, y: window.innerHeight / 3 });
        const node: AppNode = {
          id: newNodeId(),
          type: UPLOADED_NODE,
          position: freeSpot(flow.getNodes(), wanted),
          data: { label: file.name || "pasted image", sourceUrl: ticket.fileUrl },
        };
        remember();
        setNodes((all) => [...all, node]);
        scheduleSave();
      } catch (error) {
        fail(error);
      }
    },
    [flow, setNodes, scheduleSave, toast, fail, remember],
  );

  useEffect(() => {
    const onPaste = (event: ClipboardEvent) => {
      // A paste into a text field is text for that field, not an image for the board.
      if (event.target instanceof Element && event.target.closest("input, textarea")) return;
      for (const file of Array.from(event.clipboardData?.files ?? [])) void addUploadedImage(file);
    };
    document.addEventListener("paste", onPaste);
    return () => document.removeEventListener("paste", onPaste);
  }, [addUploadedImage]);

  const onDrop = useCallback(
    (event: DragEvent<HTMLDivElement>) => {
      if (!event.dataTransfer.files.length) return;
      event.preventDefault();
      const at = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
      for (const file of Array.from(event.dataTransfer.files)) void addUploadedImage(file, at);
    },
    [flow, addUploadedImage],
  );

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
        setNodes((all) =>
          all.map((item) =>
            item.id === nodeId
              ? { ...item, data: { ...item.data, jobId: job.jobId, status: job.status, progress: 0, error: null, chosenImageUrl: null } }
              : item,
          ),
        );
      } catch (error) {
        fail(error);
      }
    },
    [canvasId, flow, flushSave, setNodes, toast, fail],
  );

  // Cmd/Ctrl+Enter generates the node being edited, else the selected image nodes.
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key !== "Enter" || !(event.metaKey || event.ctrlKey)) return;
      const editing = event.target instanceof Element ? event.target.closest("[data-node-id]") : null;
      const chosen = editing
        ? [editing.getAttribute("data-node-id") ?? ""]
        : flow.getNodes().filter((node) => node.selected && node.type === IMAGE_NODE).map((node) => node.id);
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

  const showNode = useCallback(
    (nodeId: string) => {
      setNodes((all) => all.map((node) => ({ ...node, selected: node.id === nodeId })));
      void flow.fitView({ nodes: [{ id: nodeId }], duration: 300, maxZoom: 1.2 });
    },
    [flow, setNodes],
  );

  // A provider's failed attempt that will be tried again: said once, naming the node (the node shows it too).
  const reportRetry = useCallback(
    (jobId: string, message: string) => {
      const node = flow.getNodes().find((item) => item.data.jobId === jobId);
      toast(node ? `${nodeName(node.data)}: ${message}` : message);
    },
    [flow, toast],
  );

  // A job's failure names its node and offers to show it and to try again.
  const reportFailure = useCallback(
    (jobId: string, message: string) => {
      const node = flow.getNodes().find((item) => item.data.jobId === jobId);
      if (!node) {
        toast(message);
        return;
      }
      toast(`${nodeName(node.data)} failed: ${message}`, [
        { label: "Show node", run: () => showNode(node.id), keep: true },
        { label: "Retry", run: () => void generate(node.id) },
      ]);
    },
    [flow, toast, showNode, generate],
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

  const cancel = useCallback(
    async (nodeId: string) => {
      const jobId = flow.getNode(nodeId)?.data.jobId;
      if (jobId) await api.cancelJob(jobId).catch(fail);
    },
    [flow, fail],
  );

  useBoardStream(canvasId, config.apiKeysRequired, {
    onNodes: (updates: StreamNode[]) =>
      setNodes((all) => {
        const byId = new Map(updates.map((update) => [update.id, update]));
        const merged = all.map((node) => {
          const update = byId.get(node.id);
          if (!update) return node;
          byId.delete(node.id);
          // While local edits are unsaved, only the job's fields come from the stream; otherwise all of it.
          const data = unsaved.current > 0 ? { ...node.data, ...jobOwned(update.data) } : (update.data as ImageNodeData);
          const position = unsaved.current > 0 || node.dragging ? node.position : update.position;
          return { ...node, position, data };
        });
        return [...merged, ...[...byId.values()].map(toAppNode)];
      }),
    onBoardSaved: (version) => {
      if (version > savedVersion.current && unsaved.current === 0) load().catch(fail);
    },
    onRun: (view) => setRun((current) => (!current || view.createdAt >= current.createdAt ? view : current)),
    onJobEvent: (event) => {
      // A cancellation is an `error` event too, but someone asked for it: no toast.
      if (event.kind === "error" && event.data?.moment !== "cancelled") reportFailure(event.jobId, event.message);
      if (event.kind === "log" && event.data?.moment === "retry") reportRetry(event.jobId, event.message);
      if (event.kind !== "progress") setJobRevision((revision) => revision + 1);
    },
  });

  const actions = useMemo<BoardActions>(
    () => ({
      providers,
      typicalSeconds: (provider, model) => typical.get(`${provider}:${model}`),
      update,
      generate: (nodeId) => void generate(nodeId),
      cancel: (nodeId) => void cancel(nodeId),
      runFrom: (nodeId) => void previewRun(nodeId),
      open: setDialogNode,
      editPrompt: setEditingNode,
    }),
    [providers, typical, update, generate, cancel, previewRun],
  );

  const dialogData = dialogNode ? nodes.find((node) => node.id === dialogNode)?.data : undefined;
  const editingData = editingNode ? nodes.find((node) => node.id === editingNode)?.data : undefined;

  return (
    <BoardActionsContext.Provider value={actions}>
      <div className="board">
        <header className="toolbar">
          <a
            href="/"
            onClick={(event) => {
              event.preventDefault();
              void flushSave().then(() => navigate("/"));
            }}
          >
            ← Canvases
          </a>
          <h1>{name || canvasId}</h1>
          <button type="button" aria-pressed={historyOpen} onClick={() => setHistoryOpen((open) => !open)}>
            History
          </button>
          <button type="button" onClick={addImageNode} disabled={!loaded}>
            Add image node
          </button>
          <button type="button" onClick={() => void previewRun()} disabled={!loaded || run?.status === "running"}>
            Run all
          </button>
          {run && <RunStatus run={run} onCancel={() => void cancelRun()} />}
        </header>
        <div className="board-body">
          <div className="flow" aria-busy={!loaded} onDrop={onDrop} onDragOver={(event) => event.preventDefault()}>
            <ReactFlow
              nodes={nodes}
              edges={edges}
              nodeTypes={NODE_TYPES}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onInit={onInit}
            onMoveEnd={scheduleSave}
              deleteKeyCode={["Delete", "Backspace"]}
              minZoom={0.2}
            >
              <Background />
              <Controls />
            </ReactFlow>
            {loaded && nodes.length === 0 && (
              <div className="empty-board">
                <div role="note" aria-label="An empty canvas">
                  <p>
                    <strong>An empty canvas.</strong> Add an image node, write what to draw and press Generate. Connect
                    one node to another to refine its image; drop or paste a picture of your own to start from it.
                  </p>
                  <button type="button" className="primary" onClick={addImageNode}>
                    Add your first node
                  </button>
                </div>
              </div>
            )}
          </div>
          {historyOpen && <HistoryPanel canvasId={canvasId} providers={providers} revision={jobRevision} onError={fail} />}
        </div>
        {dialogData && <ImageDialog data={dialogData} config={config} onClose={() => setDialogNode(null)} />}
        {pendingRun && (
          <RunPreview pending={pendingRun} onRun={(force) => void startRun(force)} onClose={() => setPendingRun(null)} />
        )}
        {editingNode && editingData && (
          <PromptEditor
            prompt={editingData.prompt ?? ""}
            onSave={(prompt) => update(editingNode, { prompt })}
            onClose={() => setEditingNode(null)}
          />
        )}
      </div>
    </BoardActionsContext.Provider>
  );
}

/** provider:model -> median seconds of the last day's completed jobs (GET /v1/stats), for "usually ~8 s". */
function typicalDurations(stats: JobStats): Map<string, number> {
  const typical = new Map<string, number>();
  for (const row of stats.providers) {
    if (row.p50Seconds != null) typical.set(`${row.provider}:${row.model}`, row.p50Seconds);
  }
  return typical;
}

/** The board's newest run: how far it is, and a way to stop it. */
function RunStatus({ run, onCancel }: { run: CanvasRunView; onCancel: () => void }) {
  const finished = run.nodes.filter((node) => !["pending", "running"].includes(node.state)).length;
  const failed = run.nodes.filter((node) => node.state === "failed").length;
  return (
    <span className="run-status" role="status" data-run-status={run.status}>
      Run {run.status}: {finished}/{run.nodes.length} nodes done{failed ? `, ${failed} failed` : ""}
      {run.status === "running" && (
        <button type="button" onClick={onCancel}>
          Cancel run
        </button>
      )}
    </span>
  );
}
