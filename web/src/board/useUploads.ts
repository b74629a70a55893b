// Pictures of the person's own on the board: dropped or pasted files are uploaded once (a signed PUT) and become
// uploaded-image nodes in the free spot nearest to where they were wanted.
import { useReactFlow } from "@xyflow/react";
import { useCallback, useEffect, type DragEvent } from "react";
import { ApiError, api } from "../api";
import { useToast } from "../Toasts";
import { freeSpot } from "./layout";
import { UPLOADED_NODE, UPLOAD_TYPES, newNodeId, type AppEdge, type AppNode } from "./nodeData";

type Board = {
  /** Add a node the person made (undoable, saved). */
  addNode: (node: AppNode) => void;
  fail: (error: unknown) => void;
};

export function useUploads({ addNode, fail }: Board): { onDrop: (event: DragEvent<HTMLDivElement>) => void } {
  const flow = useReactFlow<AppNode, AppEdge>();
  const toast = useToast();

  const addUploadedImage = useCallback(
    async (file: File, at?: { x: number; y: number }) => {
      const contentType = UPLOAD_TYPES.find((type) => type === file.type);
      if (!contentType) {
        toast(`${file.name || "That file"} is not a PNG, JPEG or WebP image.`);
        return;
      }
      try {
        const ticket = await api.createUpload({ contentType, bytes: file.size });
        const put = await fetch(ticket.uploadUrl, {
          method: "PUT",
          headers: { "Content-Type": contentType },
          body: file,
        });
        if (!put.ok)
          throw new ApiError(put.status, "upload_failed", `Uploading ${file.name} failed (HTTP ${put.status}).`);
        const wanted = at ?? flow.screenToFlowPosition({ x: window.innerWidth / 3, y: window.innerHeight / 3 });
        addNode({
          id: newNodeId(),
          type: UPLOADED_NODE,
          position: freeSpot(flow.getNodes(), wanted),
          data: { label: file.name || "pasted image", sourceUrl: ticket.fileUrl },
        });
      } catch (error) {
        fail(error);
      }
    },
    [flow, addNode, toast, fail],
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

  return { onDrop };
}
