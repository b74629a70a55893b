import { useEffect, useState } from "react";
import { ApiError, api, type CanvasSummary } from "./api";
import { navigate } from "./App";
import { useToast } from "./Toasts";

/** The start page: every canvas, the most recently changed first, and "New canvas". */
export function CanvasList({ onUnauthorized }: { onUnauthorized: (error: ApiError) => void }) {
  const [canvases, setCanvases] = useState<CanvasSummary[] | null>(null);
  const toast = useToast();

  useEffect(() => {
    api.canvases().then(
      (list) => setCanvases(list.items),
      (error: ApiError) => (error.status === 401 ? onUnauthorized(error) : toast(error.message)),
    );
  }, [onUnauthorized, toast]);

  const create = async () => {
    try {
      const board = await api.createCanvas("Untitled canvas");
      navigate(`/canvases/${encodeURIComponent(board.id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else toast(error instanceof Error ? error.message : String(error));
    }
  };

  return (
    <main className="page">
      <header className="page-header">
        <h1>Canvases</h1>
        <div className="actions">
          <button type="button" onClick={() => navigate("/ops")}>
            Operations
          </button>
          <button type="button" onClick={create}>
            New canvas
          </button>
        </div>
      </header>
      {canvases === null ? (
        <p>Loading…</p>
      ) : canvases.length === 0 ? (
        <p>No canvases yet. Make one with “New canvas”.</p>
      ) : (
        <ul className="canvas-list" aria-label="Canvases">
          {canvases.map((canvas) => (
            <li key={canvas.id}>
              <a
                href={`/canvases/${encodeURIComponent(canvas.id)}`}
                onClick={(event) => {
                  event.preventDefault();
                  navigate(`/canvases/${encodeURIComponent(canvas.id)}`);
                }}
              >
                {canvas.name}
              </a>
              <span>
                {canvas.nodeCount} node{canvas.nodeCount === 1 ? "" : "s"} · {new Date(canvas.updatedAt).toLocaleString()}
              </span>
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}
