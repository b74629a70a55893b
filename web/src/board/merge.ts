// Two people (or tabs) saving one board: a save made from an old version gets 409, and the app merges the board
// as saved since with its own before saving again, so neither person's change is lost.
import type { Board, BoardNode } from "../api";
import { jobOwned, toAppNode, type AppNode, type ImageNodeData } from "./nodeData";

/** The node and edge ids of the board as last loaded or saved by this tab. */
export type SyncedIds = { nodes: Set<string>; edges: Set<string> };

type Identified = { id: string };
type Edge = Identified & { source: string; target: string };

export function idsOf(board: { nodes: Identified[]; edges: Identified[] }): SyncedIds {
  return { nodes: new Set(board.nodes.map((node) => node.id)), edges: new Set(board.edges.map((edge) => edge.id)) };
}

/** Three-way: what this tab has, what the server has now, and what both had when this tab last synced.
 *
 * This tab's own nodes and edges win. What someone else added since is taken in; what someone else deleted since
 * (it was there at the last sync and is gone from the server) goes, even if this tab still shows it. */
export function mergeBoards<N extends Identified, E extends Edge>(
  local: { nodes: N[]; edges: E[] },
  server: Board,
  synced: SyncedIds,
  asNode: (node: Board["nodes"][number]) => N,
  asEdge: (edge: Board["edges"][number]) => E,
): { nodes: N[]; edges: E[] } {
  const onServer = idsOf(server);
  const deletedElsewhere = (id: string, kind: keyof SyncedIds) => synced[kind].has(id) && !onServer[kind].has(id);
  const localIds = idsOf(local);
  const nodes = [
    ...local.nodes.filter((node) => !deletedElsewhere(node.id, "nodes")),
    ...server.nodes.filter((node) => !localIds.nodes.has(node.id) && !synced.nodes.has(node.id)).map(asNode),
  ];
  const kept = new Set(nodes.map((node) => node.id));
  const edges = [
    ...local.edges.filter((edge) => !deletedElsewhere(edge.id, "edges")),
    ...server.edges.filter((edge) => !localIds.edges.has(edge.id) && !synced.edges.has(edge.id)).map(asEdge),
  ].filter((edge) => kept.has(edge.source) && kept.has(edge.target));
  return { nodes, edges };
}

/** Nodes from the board's stream merged into the board. While this tab has unsaved edits only the job's fields
 * (and no moves) come from the stream, so the person's edits are not undone; otherwise all of it. A node being
 * dragged keeps its place. Nodes the board does not have yet are added. */
export function mergeStreamNodes(all: AppNode[], updates: BoardNode[], unsaved: boolean): AppNode[] {
  const byId = new Map(updates.map((update) => [update.id, update]));
  const merged = all.map((node) => {
    const update = byId.get(node.id);
    if (!update) return node;
    byId.delete(node.id);
    const streamed = update.data ?? {};
    const data = unsaved ? { ...node.data, ...jobOwned(streamed) } : (streamed as ImageNodeData);
    const position = unsaved || node.dragging ? node.position : toAppNode(update).position;
    return { ...node, position, data };
  });
  return [...merged, ...[...byId.values()].map(toAppNode)];
}
