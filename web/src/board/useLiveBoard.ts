// The board kept live: the stream's node updates merged in (merge.ts), a save by someone else read again, and job
// and run events handed to whoever reports them.
import type { Dispatch, SetStateAction } from "react";
import type { CanvasRunView, ImageProgressEvent } from "../api";
import { mergeStreamNodes } from "./merge";
import type { AppNode } from "./nodeData";
import type { BoardPersistence } from "./useBoardPersistence";
import { useBoardStream } from "./useBoardStream";

type Listeners = {
  setNodes: Dispatch<SetStateAction<AppNode[]>>;
  persistence: BoardPersistence;
  onJobEvent: (event: ImageProgressEvent) => void;
  onRun: (run: CanvasRunView) => void;
  fail: (error: unknown) => void;
};

export function useLiveBoard(canvasId: string, needsToken: boolean, listeners: Listeners): void {
  const { setNodes, persistence, onJobEvent, onRun, fail } = listeners;
  useBoardStream(canvasId, needsToken, {
    onNodes: (updates) => setNodes((all) => mergeStreamNodes(all, updates, persistence.hasUnsaved())),
    onBoardSaved: (version) => {
      if (version > persistence.savedVersion() && !persistence.hasUnsaved()) persistence.reload().catch(fail);
    },
    onRun,
    onJobEvent,
  });
}
