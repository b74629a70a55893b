// Cmd/Ctrl+Z: the board as it was before the last move, add, connection or delete. What jobs wrote since (status,
// images) stays as it is now: undo gives back the person's own changes, never a job's.
import { useCallback, useEffect, useRef } from "react";
import { jobOwned, type AppEdge, type AppNode } from "./nodeData";

type Snapshot = { nodes: AppNode[]; edges: AppEdge[] };
type Setter<T> = (update: (current: T[]) => T[]) => void;

const DEPTH = 50;

export function useUndo(
  read: () => Snapshot,
  setNodes: Setter<AppNode>,
  setEdges: Setter<AppEdge>,
  onRestored: () => void,
): { remember: () => void } {
  const past = useRef<Snapshot[]>([]);

  const remember = useCallback(() => {
    past.current = [...past.current.slice(1 - DEPTH), read()];
  }, [read]);

  const undo = useCallback(() => {
    const last = past.current.pop();
    if (!last) return;
    setNodes((current) => {
      const now = new Map(current.map((node) => [node.id, node]));
      return last.nodes.map((node) => {
        const latest = now.get(node.id);
        return latest ? { ...node, data: { ...node.data, ...jobOwned(latest.data) } } : node;
      });
    });
    setEdges(() => last.edges);
    onRestored();
  }, [setNodes, setEdges, onRestored]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key.toLowerCase() !== "z" || !(event.metaKey || event.ctrlKey) || event.shiftKey) return;
      // In a text field, Cmd/Ctrl+Z undoes typing, as everywhere.
      if (event.target instanceof Element && event.target.closest("input, textarea, select")) return;
      event.preventDefault();
      undo();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [undo]);

  return { remember };
}
