// Loading a board and saving it as the person edits it: a save waits SAVE_AFTER_MS for more edits, saves run one
// at a time, and a save made from an old version (409) merges the board as saved since (merge.ts) and tries again.
import { useNodesInitialized, useReactFlow, type Viewport } from "@xyflow/react";
import { useCallback, useEffect, useRef, useState, type Dispatch, type SetStateAction } from "react";
import { ApiError, api } from "../api";
import { idsOf, mergeBoards, type SyncedIds } from "./merge";
import { asSave, toAppEdge, toAppNode, type AppEdge, type AppNode } from "./nodeData";

const SAVE_AFTER_MS = 400;
// A save that keeps meeting newer versions (someone saving as fast) gives up and says so.
const SAVE_MERGE_ATTEMPTS = 3;
// A board opened without a view of its own shows all its nodes, with this margin, never magnified.
const FIT = { padding: 0.08, maxZoom: 1 };

/** A board made through the API and never saved from a browser has the server's default view. */
function isDefaultView(viewport: Viewport): boolean {
  return viewport.x === 0 && viewport.y === 0 && viewport.zoom === 1;
}

export type BoardPersistence = {
  loaded: boolean;
  name: string;
  /** Read the board again (someone else saved it). */
  reload: () => Promise<void>;
  /** An edit was made: save soon. */
  scheduleSave: () => void;
  /** Save now what is waiting, after any save under way. */
  flushSave: () => Promise<void>;
  /** Edits not saved yet: while there are some, the stream does not overwrite what the person owns. */
  hasUnsaved: () => boolean;
  savedVersion: () => number;
};

// The board's own setters (useNodesState's), not React Flow's: those report every node as a change to
// onNodesChange, which would count a load or a merge as the person's edit and save it again.
export type BoardSetters = {
  setNodes: Dispatch<SetStateAction<AppNode[]>>;
  setEdges: Dispatch<SetStateAction<AppEdge[]>>;
};

export function useBoardPersistence(
  canvasId: string,
  { setNodes, setEdges }: BoardSetters,
  fail: (error: unknown) => void,
): BoardPersistence {
  const flow = useReactFlow<AppNode, AppEdge>();
  const [name, setName] = useState("");
  const [loaded, setLoaded] = useState(false);
  const unsaved = useRef(0);
  const savedVersion = useRef(0);
  const synced = useRef<SyncedIds>({ nodes: new Set(), edges: new Set() });
  const saveTimer = useRef<number | null>(null);
  const saving = useRef<Promise<void>>(Promise.resolve());
  // The view to show once the first load is drawn: the board's own, or all its nodes when it has none.
  const viewToShow = useRef<Viewport | "fit" | null>(null);
  const firstLoad = useRef(true);
  const nodesInitialized = useNodesInitialized();

  const reload = useCallback(async () => {
    const board = await api.board(canvasId);
    savedVersion.current = board.version;
    synced.current = idsOf(board);
    setName(board.name);
    setNodes(board.nodes.map(toAppNode));
    setEdges(board.edges.map(toAppEdge));
    // Only the first load sets the view: a later one (someone else saved) keeps the view the person has. Nodes
    // placed through the API can lie anywhere, so a board without a view of its own shows them all.
    if (firstLoad.current && board.nodes.length > 0) {
      const viewport = board.viewport as Viewport;
      viewToShow.current = isDefaultView(viewport) ? "fit" : viewport;
    }
    firstLoad.current = false;
    setLoaded(true);
  }, [canvasId, setNodes, setEdges]);

  // The board loads once per canvas. `reload` changes identity when React Flow finishes setting up, and loading
  // again then would drop a node added in between.
  const loadOnce = useRef(reload);
  useEffect(() => {
    loadOnce.current = reload;
  });
  useEffect(() => {
    loadOnce.current().catch((error: unknown) => {
      if (error instanceof ApiError && error.code === "canvas_not_found") setLoaded(true);
      else fail(error);
    });
  }, [canvasId, fail]);

  // Set once the nodes are measured: a fit needs their sizes, and a view set before React Flow is ready is lost.
  useEffect(() => {
    const view = viewToShow.current;
    if (!nodesInitialized || view === null) return;
    viewToShow.current = null;
    void (view === "fit" ? flow.fitView(FIT) : flow.setViewport(view));
  }, [nodesInitialized, flow]);

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
  }, [canvasId, flow, setNodes, setEdges]);

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

  // Leaving the board saves what is waiting.
  useEffect(() => () => void flushSave(), [flushSave]);

  const hasUnsaved = useCallback(() => unsaved.current > 0, []);
  const currentVersion = useCallback(() => savedVersion.current, []);
  return { loaded, name, reload, scheduleSave, flushSave, hasUnsaved, savedVersion: currentVersion };
}
