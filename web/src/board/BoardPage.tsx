// One board: React Flow with image nodes, saved as the person edits it (useBoardPersistence) and kept live by its
// stream (useLiveBoard); jobs and runs (useJobsAndRuns) and uploads (useUploads) have their own hooks.
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
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { ApiError, api, type CanvasRunView, type ClientConfig, type JobStats, type ProviderDescription } from "../api";
import { navigate } from "../routes";
import { useToast } from "../Toasts";
import { BoardActionsContext, type BoardActions } from "./actions";
import { HistoryPanel } from "./HistoryPanel";
import { ImageDialog, PromptEditor } from "./ImageDialog";
import { ImageNodeView } from "./ImageNodeView";
import { freeSpot } from "./layout";
import { IMAGE_NODE, UPLOADED_NODE, newNodeId, type AppEdge, type AppNode, type ImageNodeData } from "./nodeData";
import { RunPreview } from "./RunPreview";
import { UploadedImageView } from "./UploadedImageView";
import { useBoardPersistence } from "./useBoardPersistence";
import { useJobsAndRuns } from "./useJobsAndRuns";
import { useLiveBoard } from "./useLiveBoard";
import { useUndo } from "./useUndo";
import { useUploads } from "./useUploads";

const NODE_TYPES: NodeTypes = { [IMAGE_NODE]: ImageNodeView, [UPLOADED_NODE]: UploadedImageView };

type Props = { canvasId: string; config: ClientConfig; onUnauthorized: (error: ApiError) => void };

export function BoardPage(props: Props) {
  return (
    <ReactFlowProvider>
      <BoardCanvas {...props} />
    </ReactFlowProvider>
  );
}

function BoardCanvas({ canvasId, config, onUnauthorized }: Props) {
  const flow = useReactFlow<AppNode, AppEdge>();
  const toast = useToast();
  const [nodes, setNodes, onNodesChangeBase] = useNodesState<AppNode>([]);
  const [edges, setEdges, onEdgesChangeBase] = useEdgesState<AppEdge>([]);
  const [providers, setProviders] = useState<ProviderDescription[]>([]);
  const [typical, setTypical] = useState<Map<string, number>>(new Map());
  const [dialogNode, setDialogNode] = useState<string | null>(null);
  const [editingNode, setEditingNode] = useState<string | null>(null);
  const [historyOpen, setHistoryOpen] = useState(false);

  const fail = useCallback(
    (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else toast(error instanceof Error ? error.message : String(error));
    },
    [onUnauthorized, toast],
  );

  const persistence = useBoardPersistence(canvasId, { setNodes, setEdges }, fail);
  const { loaded, name, scheduleSave, flushSave } = persistence;
  // The person's pans and zooms are saved with the board; a move made by the app (the view set on load, showing
  // a node) comes without an event and is not.
  const onMoveEnd = useCallback(
    (event: MouseEvent | TouchEvent | null) => {
      if (event) scheduleSave();
    },
    [scheduleSave],
  );

  useEffect(() => {
    api.providers().then((list) => setProviders(list.items), fail);
    api.stats({}).then((stats) => setTypical(typicalDurations(stats)), fail);
  }, [canvasId, fail]);

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
        (change) =>
          change.type === "remove" || change.type === "add" || (change.type === "position" && !change.dragging),
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

  // A node's own fields, edited by the person: React Flow merges them into the node's data.
  const update = useCallback(
    (nodeId: string, change: Partial<ImageNodeData>) => {
      flow.updateNodeData(nodeId, change);
      scheduleSave();
    },
    [flow, scheduleSave],
  );

  const addNode = useCallback(
    (node: AppNode) => {
      remember();
      setNodes((all) => [...all, node]);
      scheduleSave();
    },
    [setNodes, scheduleSave, remember],
  );

  const addImageNode = useCallback(() => {
    const centre = flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
    addNode({
      id: newNodeId(),
      type: IMAGE_NODE,
      position: freeSpot(flow.getNodes(), { x: centre.x - 120, y: centre.y - 150 }),
      data: { prompt: "", provider: "local", model: "procedural", size: "512x512", n: 1 },
    });
  }, [flow, addNode]);

  const { onDrop } = useUploads({ addNode, fail });

  const selectOnly = useCallback(
    (nodeId: string) => setNodes((all) => all.map((node) => ({ ...node, selected: node.id === nodeId }))),
    [setNodes],
  );
  const jobs = useJobsAndRuns({ canvasId, flushSave, selectOnly, fail });
  const { run, generate, cancel, previewRun } = jobs;

  useLiveBoard(canvasId, config.apiKeysRequired, {
    setNodes,
    persistence,
    onJobEvent: jobs.onJobEvent,
    onRun: jobs.onRun,
    fail,
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
          {run && <RunStatus run={run} onCancel={() => void jobs.cancelRun()} />}
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
              onMoveEnd={onMoveEnd}
              deleteKeyCode={["Delete", "Backspace"]}
              minZoom={0.2}
            >
              <Background />
              <Controls />
            </ReactFlow>
            {loaded && nodes.length === 0 && <EmptyBoard onAdd={addImageNode} />}
          </div>
          {historyOpen && (
            <HistoryPanel canvasId={canvasId} providers={providers} revision={jobs.jobRevision} onError={fail} />
          )}
        </div>
        {dialogData && <ImageDialog data={dialogData} config={config} onClose={() => setDialogNode(null)} />}
        {jobs.pendingRun && (
          <RunPreview
            pending={jobs.pendingRun}
            onRun={(force) => void jobs.startRun(force)}
            onClose={jobs.closePreview}
          />
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

function EmptyBoard({ onAdd }: { onAdd: () => void }) {
  return (
    <div className="empty-board">
      <div role="note" aria-label="An empty canvas">
        <p>
          <strong>An empty canvas.</strong> Add an image node, write what to draw and press Generate. Connect one node
          to another to refine its image; drop or paste a picture of your own to start from it.
        </p>
        <button type="button" className="primary" onClick={onAdd}>
          Add your first node
        </button>
      </div>
    </div>
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
