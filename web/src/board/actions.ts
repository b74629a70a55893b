import { createContext, useContext } from "react";
import type { ProviderDescription } from "../api";
import type { ImageNodeData } from "./nodeData";

/** What an image node can ask its board to do. */
export type BoardActions = {
  providers: ProviderDescription[];
  update: (nodeId: string, change: Partial<ImageNodeData>) => void;
  generate: (nodeId: string) => void;
  cancel: (nodeId: string) => void;
  runFrom: (nodeId: string) => void;
  open: (nodeId: string) => void;
  editPrompt: (nodeId: string) => void;
  // How long this provider and model usually take (median seconds of today's jobs), when known.
  typicalSeconds: (provider: string, model: string) => number | undefined;
};

export const BoardActionsContext = createContext<BoardActions | null>(null);

export function useBoardActions(): BoardActions {
  const actions = useContext(BoardActionsContext);
  if (!actions) throw new Error("an image node must be inside a board");
  return actions;
}
