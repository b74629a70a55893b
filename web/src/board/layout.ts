// Where a new node goes: the free spot nearest to where the person is looking, so that new, pasted and dropped
// nodes never land on top of existing ones.
import type { AppNode } from "./nodeData";

type Point = { x: number; y: number };

// A node's box when React Flow has not measured it yet (an image node is 240 px wide), and the gap kept around it.
const NODE_WIDTH = 260;
const NODE_HEIGHT = 340;
const GAP = 24;
const STEP = 60;
const RINGS = 40;

/** The top-left corner nearest `preferred` (the new node's wanted top-left) where a node overlaps no other. */
export function freeSpot(nodes: AppNode[], preferred: Point): Point {
  const boxes = nodes.map((node) => ({
    x: node.position.x,
    y: node.position.y,
    width: node.measured?.width ?? NODE_WIDTH,
    height: node.measured?.height ?? NODE_HEIGHT,
  }));
  const free = (at: Point) =>
    boxes.every(
      (box) =>
        at.x + NODE_WIDTH + GAP <= box.x ||
        box.x + box.width + GAP <= at.x ||
        at.y + NODE_HEIGHT + GAP <= box.y ||
        box.y + box.height + GAP <= at.y,
    );
  // Rings of candidates around the preferred spot, nearest first.
  for (let ring = 0; ring <= RINGS; ring += 1) {
    const candidates: Point[] = [];
    for (let dx = -ring; dx <= ring; dx += 1) {
      for (let dy = -ring; dy <= ring; dy += 1) {
        if (Math.max(Math.abs(dx), Math.abs(dy)) === ring) {
          candidates.push({ x: preferred.x + dx * STEP, y: preferred.y + dy * STEP });
        }
      }
    }
    candidates.sort((a, b) => distance(a, preferred) - distance(b, preferred));
    const found = candidates.find(free);
    if (found) return found;
  }
  return preferred;
}

function distance(a: Point, b: Point): number {
  return Math.hypot(a.x - b.x, a.y - b.y);
}
