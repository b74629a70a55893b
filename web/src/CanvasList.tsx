import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, api, type CanvasSummary } from "./api";
import { boardPath, navigate } from "./routes";
import { useToast } from "./Toasts";

const HIDE_IMPLICIT = "imagejobs.hideImplicitCanvases";

/** The start page: every canvas as a card with its latest pictures, the most recently changed first, with
 * rename and delete; canvases that API jobs made on their own are marked and can be hidden. */
export function CanvasList({ onUnauthorized }: { onUnauthorized: (error: ApiError) => void }) {
  const [canvases, setCanvases] = useState<CanvasSummary[] | null>(null);
  const [hideImplicit, setHideImplicit] = useState(() => localStorage.getItem(HIDE_IMPLICIT) === "true");
  const toast = useToast();

  const fail = useCallback(
    (error: unknown) => {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else toast(error instanceof Error ? error.message : String(error));
    },
    [onUnauthorized, toast],
  );

  const load = useCallback(() => api.canvases().then((list) => setCanvases(list.items), fail), [fail]);

  useEffect(() => {
    void load();
  }, [load]);

  const create = async () => {
    try {
      const board = await api.createCanvas("Untitled canvas");
      navigate(boardPath(board.id));
    } catch (error) {
      fail(error);
    }
  };

  const toggleImplicit = (hide: boolean) => {
    localStorage.setItem(HIDE_IMPLICIT, String(hide));
    setHideImplicit(hide);
  };

  const implicitCount = canvases?.filter((canvas) => canvas.implicit).length ?? 0;
  const shown = canvases?.filter((canvas) => !(hideImplicit && canvas.implicit)) ?? null;

  return (
    <main className="page page-wide">
      <header className="page-header">
        <h1>Canvases</h1>
        <div className="actions">
          <button type="button" onClick={() => navigate("/ops")}>
            Operations
          </button>
          <button type="button" className="primary" onClick={create}>
            New canvas
          </button>
        </div>
      </header>
      {implicitCount > 0 && (
        <label className="filter-toggle">
          <input type="checkbox" checked={hideImplicit} onChange={(event) => toggleImplicit(event.target.checked)} />
          Hide the {implicitCount} canvas{implicitCount === 1 ? "" : "es"} made only by API jobs
        </label>
      )}
      {shown === null ? (
        <p>Loading…</p>
      ) : shown.length === 0 ? (
        <div className="empty-state">
          <p>No canvases yet.</p>
          <p>
            A canvas is a board of image nodes: write a prompt in a node, press Generate, and connect nodes to refine
            one image into the next.
          </p>
          <button type="button" className="primary" onClick={create}>
            Make your first canvas
          </button>
        </div>
      ) : (
        <ul className="canvas-list" aria-label="Canvases">
          {shown.map((canvas) => (
            <CanvasCard key={canvas.id} canvas={canvas} onChanged={load} onError={fail} />
          ))}
        </ul>
      )}
    </main>
  );
}

type CardProps = { canvas: CanvasSummary; onChanged: () => Promise<void>; onError: (error: unknown) => void };

function CanvasCard({ canvas, onChanged, onError }: CardProps) {
  const [renaming, setRenaming] = useState(false);
  const [confirmingDelete, setConfirmingDelete] = useState(false);
  const href = boardPath(canvas.id);
  const pictures = canvas.thumbnails ?? [];

  const rename = async (name: string) => {
    setRenaming(false);
    if (!name.trim() || name === canvas.name) return;
    try {
      await api.renameCanvas(canvas.id, name.trim());
      await onChanged();
    } catch (error) {
      onError(error);
    }
  };

  const remove = async () => {
    setConfirmingDelete(false);
    try {
      await api.deleteCanvas(canvas.id);
      await onChanged();
    } catch (error) {
      onError(error);
    }
  };

  return (
    <li className="canvas-card" aria-label={canvas.name}>
      <a
        className="canvas-pictures"
        href={href}
        tabIndex={-1}
        aria-hidden="true"
        onClick={(event) => {
          event.preventDefault();
          navigate(href);
        }}
      >
        {pictures.length === 0 ? (
          <span className="canvas-no-picture">No images yet</span>
        ) : (
          pictures.map((url) => <img key={url} src={url} alt="" loading="lazy" />)
        )}
      </a>
      <div className="canvas-card-body">
        <div className="canvas-title">
          {renaming ? (
            <RenameField name={canvas.name} onDone={(name) => void rename(name)} />
          ) : (
            <a
              className="canvas-name"
              href={href}
              onClick={(event) => {
                event.preventDefault();
                navigate(href);
              }}
            >
              {canvas.name}
            </a>
          )}
          {canvas.implicit && <span className="badge">from API jobs</span>}
        </div>
        <span className="canvas-meta">
          {canvas.nodeCount} node{canvas.nodeCount === 1 ? "" : "s"} · {new Date(canvas.updatedAt).toLocaleString()}
        </span>
        {confirmingDelete ? (
          <div className="actions" role="group" aria-label="Confirm delete">
            <span>Delete this canvas? Its running jobs stop; its images stay in storage.</span>
            <button type="button" className="danger" onClick={() => void remove()}>
              Delete
            </button>
            <button type="button" onClick={() => setConfirmingDelete(false)}>
              Keep
            </button>
          </div>
        ) : (
          <div className="actions">
            <button type="button" onClick={() => setRenaming(true)} aria-label={`Rename ${canvas.name}`}>
              Rename
            </button>
            <button type="button" onClick={() => setConfirmingDelete(true)} aria-label={`Delete ${canvas.name}`}>
              Delete
            </button>
          </div>
        )}
      </div>
    </li>
  );
}

function RenameField({ name, onDone }: { name: string; onDone: (name: string) => void }) {
  const [value, setValue] = useState(name);
  const field = useRef<HTMLInputElement>(null);
  useEffect(() => field.current?.select(), []); // the person just asked to rename: the name is ready to type over
  return (
    <form
      className="rename"
      onSubmit={(event) => {
        event.preventDefault();
        onDone(value);
      }}
    >
      <input
        aria-label="Canvas name"
        value={value}
        maxLength={200}
        ref={field}
        onChange={(event) => setValue(event.target.value)}
        onKeyDown={(event) => event.key === "Escape" && onDone(name)}
        onBlur={() => onDone(value)}
      />
    </form>
  );
}
