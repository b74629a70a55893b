// One EventSource per open board: node updates (coalesced into one render per animation frame, so fifty jobs
// updating at once cost one update), board saves by others, and job events (failures raise a toast).
import { useEffect, useRef } from "react";
import { flushSync } from "react-dom";
import { canvasToken, type BoardNode, type CanvasRunView, type ImageProgressEvent } from "../api";

const REOPEN_MS = 2000;

type Handlers = {
  onNodes: (nodes: BoardNode[]) => void;
  onBoardSaved: (version: number) => void;
  onJobEvent: (event: ImageProgressEvent) => void;
  onRun: (run: CanvasRunView) => void;
};

export function useBoardStream(canvasId: string, needsToken: boolean, handlers: Handlers): void {
  const latest = useRef(handlers);
  useEffect(() => {
    latest.current = handlers;
  });

  useEffect(() => {
    let source: EventSource | null = null;
    let closed = false;
    let pending: BoardNode[] = [];
    let frame: number | null = null;

    // Rendered inside the frame's callback (flushSync): a state update made there would otherwise wait for a task
    // of React's own, which runs after this frame is painted, and show a frame later.
    const flush = () => {
      frame = null;
      const batch = pending;
      pending = [];
      if (batch.length) flushSync(() => latest.current.onNodes(batch));
    };

    const open = async () => {
      let url = `/v1/canvases/${encodeURIComponent(canvasId)}/events`;
      if (needsToken) {
        // EventSource cannot send headers: the board's canvas token goes in the query, where the stream takes it.
        const token = canvasToken(canvasId);
        if (!token) throw new Error("no canvas token for this board");
        url += `?token=${encodeURIComponent(token)}`;
      }
      if (closed) return;
      source = new EventSource(url);
      // EventSource reconnects by itself after a lost connection, but gives up on an error answer (an expired
      // canvas token, a restarting API): then open again.
      source.onerror = () => {
        if (source?.readyState === EventSource.CLOSED) reopen();
      };
      source.addEventListener("node", (message) => {
        pending.push(JSON.parse((message as MessageEvent<string>).data) as BoardNode);
        if (frame === null) frame = requestAnimationFrame(flush);
      });
      source.addEventListener("run", (message) => {
        latest.current.onRun(JSON.parse((message as MessageEvent<string>).data) as CanvasRunView);
      });
      source.addEventListener("board", (message) => {
        latest.current.onBoardSaved(
          (JSON.parse((message as MessageEvent<string>).data) as { version: number }).version,
        );
      });
      for (const kind of ["created", "status", "progress", "webhook", "completed", "error", "cancelled"]) {
        source.addEventListener(kind, (message) => {
          const data = (message as MessageEvent<string | undefined>).data;
          if (!data) return; // the browser's own "error" (a lost connection): EventSource reconnects by itself
          const event = JSON.parse(data) as ImageProgressEvent | { code: string };
          if ("jobId" in event) latest.current.onJobEvent(event);
        });
      }
    };
    function reopen() {
      if (!closed) window.setTimeout(() => void open().catch(reopen), REOPEN_MS);
    }
    void open().catch(reopen);
    return () => {
      closed = true;
      source?.close();
      if (frame !== null) cancelAnimationFrame(frame);
    };
  }, [canvasId, needsToken]);
}
